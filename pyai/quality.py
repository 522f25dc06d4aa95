"""How good are a generator's images? Measured by a digit classifier that pyai trains on real ones.

    classifier, accuracy = train_classifier(images, labels)       # images (n, pixels) in [-1, 1]
    report = quality_report(classifier, real_images, generated_images)

The report, for images of the 10 digits:
  confident         the share of generated images that the classifier gives one digit with
                    probability > CONFIDENCE: recognisable digits, not smudges
  classes           how many of the 10 digits appear among those confident images: a generator
                    that draws only a few digits ("mode collapse") scores low
  frechet_distance  between Gaussians fitted to the classifier's penultimate-layer features of
                    the real and the generated images, as FID does with Inception's features:
                    |mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2)); 0 for equal statistics,
                    lower is better. Comparable only between runs that use the same classifier.
"""

import numpy as np

from pyai.data import one_hot
from pyai.losses import BinaryCrossentropy
from pyai.models import MLP
from pyai.optim import Adam
from pyai.training import fit

CONFIDENCE = 0.9
DIGITS = 10
CLASSIFIER_HIDDEN = [256, 128]   # the penultimate layer's 128 features feed the Fréchet distance


def train_classifier(images, labels, *, epochs=10, held_out=0.1, seed=0, progress=False):
    """A pyai MLP digit classifier trained on images (n, pixels) in [-1, 1] with labels (n,), and
    its accuracy on the `held_out` share of them that it did not train on."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    test, train = order[:int(held_out * len(images))], order[int(held_out * len(images)):]
    classifier = MLP([images.shape[1], *CLASSIFIER_HIDDEN, DIGITS], activation="leaky_relu", seed=seed)
    # one sigmoid per digit on the logits, trained with binary cross-entropy, as `pyai train mlp`
    fit(classifier, BinaryCrossentropy(from_logits=True), Adam(lr=1e-3), images[train],
        one_hot(labels[train], DIGITS), epochs=epochs, batch_size=64, seed=seed, progress=progress)
    accuracy = float(np.mean(np.argmax(classifier.predict(images[test]), axis=1) == labels[test]))
    return classifier, accuracy


# images (n, pixels) -> the penultimate layer's output (n, CLASSIFIER_HIDDEN[-1])
def features(classifier, images):
    x = np.asarray(images, np.float32)
    for dense in classifier.layers[:-1]:
        x = dense.forward(x)
    return x


def frechet_distance(features_a, features_b):
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) for features (n, d) and (m, d).

    tr((S_a S_b)^(1/2)) is the sum of the square roots of the eigenvalues of the symmetric
    S_a^(1/2) S_b S_a^(1/2), which has the same eigenvalues as S_a S_b: two symmetric
    eigendecompositions, no general matrix square root.
    """
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_of_root = np.sum(np.sqrt(np.clip(middle, 0, None)))
    mean_gap = np.sum((a.mean(axis=0) - b.mean(axis=0)) ** 2)
    return float(mean_gap + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_of_root)


def quality_report(classifier, real_images, generated_images):
    """{confident, classes, frechet_distance} of generated images (see the module's docstring)."""
    probabilities = 1 / (1 + np.exp(-classifier.predict(generated_images).astype(np.float64)))
    confident = probabilities.max(axis=1) > CONFIDENCE
    classes = np.unique(np.argmax(probabilities[confident], axis=1))
    return {"confident": float(np.mean(confident)), "classes": len(classes),
            "frechet_distance": frechet_distance(features(classifier, real_images),
                                                 features(classifier, generated_images))}
