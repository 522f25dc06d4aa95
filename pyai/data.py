"""Data sets, checked where they come in: float32 features, integer labels, only finite values."""

import numpy as np


def check_finite(name, array):
    """`array` unchanged, or ValueError naming it when it holds NaN or infinity."""
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name}: holds {bad} NaN or infinite value(s); clean the data first")
    return array


def one_hot(labels, classes):
    """(n,) integer labels -> (n, classes) float32 rows of zeros with a one at the label."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise ValueError(f"labels: expected a 1-d integer array, got {labels.dtype} shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"labels: expected values in [0, {classes}), got [{labels.min()}, {labels.max()}]")
    return np.eye(classes, dtype=np.float32)[labels]


def load_digits(test_fraction=0.2, seed=0):
    """scikit-learn's 8x8 digits (1797 images, shipped with scikit-learn, no download).

    Returns x_train (n, 64), labels_train (n,), x_test, labels_test: features are the 16 grey
    levels scaled to [0, 1] float32, labels are int64 in 0..9. The split is stratified by class
    and the same for the same seed.
    """
    from sklearn.datasets import load_digits as sklearn_digits   # slow to import; only needed here
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    x = check_finite("digits images", digits.data).astype(np.float32) / np.float32(16.0)
    labels = digits.target.astype(np.int64)
    x_train, x_test, labels_train, labels_test = train_test_split(
        x, labels, test_size=test_fraction, random_state=seed, stratify=labels)
    return x_train, labels_train, x_test, labels_test
