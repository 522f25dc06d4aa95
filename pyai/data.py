"""Data sets, checked where they come in: float32 features, integer labels, only finite values."""

import gzip
import hashlib
import importlib.util
import math
import os
import pathlib
import struct
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib

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
    and the same for the same seed (`stratified_split`). The file is read from scikit-learn's
    folder without importing scikit-learn, which takes a second.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: expected a number between 0 and 1, got {test_fraction!r}")
    rows = np.loadtxt(digits_path(), delimiter=",", dtype=np.float32)
    x = check_finite("digits images", rows[:, :-1]) / np.float32(16.0)
    labels = rows[:, -1].astype(np.int64)
    train, test = stratified_split(labels, test_fraction, seed)
    return x[train], labels[train], x[test], labels[test]


def digits_path():
    """scikit-learn's digits.csv.gz (64 grey levels and the label a row)."""
    spec = importlib.util.find_spec("sklearn")
    path = spec and pathlib.Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if not path or not path.is_file():
        raise FileNotFoundError("the 8x8 digits ship with scikit-learn: pip install scikit-learn")
    return path


def stratified_split(labels, test_fraction, seed):
    """(train rows, test rows), both in random order: ceil(n * test_fraction) test rows, each
    class given its share of them (rounded by largest remainder) drawn at random by `seed`."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    tests = math.ceil(len(labels) * test_fraction)
    shares = counts * tests / len(labels)
    per_class = np.floor(shares).astype(np.int64)
    per_class[np.argsort(per_class - shares, kind="stable")[:tests - per_class.sum()]] += 1
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == label))[:count]
                           for label, count in zip(classes, per_class)])
    train = np.setdiff1d(np.arange(len(labels)), test)
    return rng.permutation(train), rng.permutation(test)


MNIST_PREFIXES = {"train": "train", "test": "t10k"}     # split -> the standard files' prefix
MNIST_NPZ = "mnist.npz"
# The file keras.datasets.mnist.load_data fetches, and the SHA-256 it checks it against
# (keras/src/datasets/mnist.py). PYAI_MNIST_URL and PYAI_MNIST_SHA256 name another.
MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
DOWNLOAD_TIMEOUT_S = 60
CHUNK_BYTES = 1 << 20


def load_mnist(path=None, split="all"):
    """MNIST from `path`: a folder of the standard IDX files (t10k-images-idx3-ubyte and
    t10k-labels-idx1-ubyte, the train-* pair, each gzipped or not), or Keras's mnist.npz (the file,
    or a folder holding it). Without a path, Keras's mnist.npz, downloaded once into the cache
    folder (see `fetch_mnist`).

    split: "train", "test", or "all" (every split found, train first). Returns images
    (n, 28, 28) float32 in [0, 1] and labels (n,) int64 in 0..9. A missing or malformed file
    raises FileNotFoundError or ValueError naming it.
    """
    if split not in ("all", *MNIST_PREFIXES):
        raise ValueError(f"split: expected 'all', 'train' or 'test', got {split!r}")
    path = fetch_mnist() if path is None else os.fspath(path)
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, MNIST_NPZ)):
        path = os.path.join(path, MNIST_NPZ)
    if os.path.isfile(path):
        pairs = read_mnist_npz(path, split)
    elif os.path.isdir(path):
        pairs = read_mnist_folder(path, split)
    else:
        raise FileNotFoundError(f"MNIST {path}: no such file or folder")
    sizes = {images.shape[1:] for images, _ in pairs}
    if len(sizes) > 1:
        raise ValueError(f"MNIST {path}: its splits hold images of different sizes "
                         f"({' and '.join(f'{rows}x{cols}' for rows, cols in sorted(sizes))}); "
                         f"load one with split='train' or split='test'")
    images = np.concatenate([images for images, _ in pairs]).astype(np.float32) / np.float32(255)
    return images, np.concatenate([labels for _, labels in pairs]).astype(np.int64)


def split_names(split):
    return list(MNIST_PREFIXES) if split == "all" else [split]


def idx_file(folder, prefix, kind):
    """The path of an IDX file in `folder` by its standard names, or None."""
    for name in (f"{prefix}-{kind}", f"{prefix}-{kind.replace('-', '.', 1)}"):
        for candidate in (os.path.join(folder, name + ".gz"), os.path.join(folder, name)):
            if os.path.isfile(candidate):
                return candidate
    return None


def read_mnist_folder(folder, split):
    prefixes = [MNIST_PREFIXES[name] for name in split_names(split)]
    pairs = []
    for prefix in prefixes:
        images_path = idx_file(folder, prefix, "images-idx3-ubyte")
        labels_path = idx_file(folder, prefix, "labels-idx1-ubyte")
        if images_path is None and labels_path is None:
            continue
        if images_path is None or labels_path is None:
            missing = f"{prefix}-images-idx3-ubyte" if images_path is None else f"{prefix}-labels-idx1-ubyte"
            raise FileNotFoundError(f"MNIST {os.path.join(folder, missing)}[.gz]: no such file "
                                    f"(its pair {images_path or labels_path} is there)")
        pairs.append(checked_pair(read_idx(images_path, 3), read_idx(labels_path, 1),
                                  images_path, labels_path))
    if not pairs:
        wanted = " or ".join(f"{prefix}-images-idx3-ubyte[.gz]" for prefix in prefixes)
        raise FileNotFoundError(f"MNIST {folder}: holds neither {wanted} nor {MNIST_NPZ}")
    return pairs


def read_idx(path, ndim):
    """The unsigned-byte array of `ndim` dimensions in an IDX file, gunzipped if it is gzipped."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"MNIST {path}: cannot be read ({error})") from error
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:4] != bytes([0, 0, 8, ndim]):
        raise ValueError(f"MNIST {path}: not an IDX file of {ndim}-d unsigned bytes "
                         f"(magic number {raw[:4].hex() or 'missing'}, expected 000008{ndim:02x})")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    size = math.prod(shape)
    if len(raw) - header != size:
        problem = "truncated" if len(raw) - header < size else "longer than its header says"
        raise ValueError(f"MNIST {path}: {problem}: its header says {size} bytes of shape {shape}, "
                         f"the file holds {len(raw) - header}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def checked_pair(images, labels, images_name, labels_name):
    """images (n, rows, cols) uint8 and labels (n,) in 0..9, or ValueError naming the file."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"MNIST {images_name}: expected (n, rows, cols) uint8 images, "
                         f"got {images.dtype} of shape {images.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"MNIST {labels_name}: expected (n,) integer labels, "
                         f"got {labels.dtype} of shape {labels.shape}")
    if len(labels) != len(images):
        raise ValueError(f"MNIST {labels_name}: holds {len(labels)} labels for the "
                         f"{len(images)} images of {images_name}")
    if images.size == 0:
        raise ValueError(f"MNIST {images_name}: holds no images (shape {images.shape}); "
                         f"expected at least one image of at least one pixel")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"MNIST {labels_name}: labels must be digits 0..9, got {labels.min()}..{labels.max()}")
    return images, labels


def read_mnist_npz(path, split):
    """The (images, labels) pairs of Keras's mnist.npz: x_train, y_train, x_test, y_test."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError) as error:
        raise ValueError(f"MNIST {path}: not a readable .npz file like Keras's mnist.npz ({error})") from error
    pairs = []
    for name in split_names(split):
        keys = (f"x_{name}", f"y_{name}")
        missing = [key for key in keys if key not in arrays]
        if missing:
            raise ValueError(f"MNIST {path}: has no {' and '.join(missing)} (it holds {sorted(arrays)})")
        pairs.append(checked_pair(arrays[keys[0]], arrays[keys[1]], f"{path} {keys[0]}", f"{path} {keys[1]}"))
    return pairs


def cache_folder():
    """Where downloads are kept: $PYAI_CACHE, else ~/.cache/pyai."""
    return os.environ.get("PYAI_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "pyai")


def fetch_mnist():
    """The path of mnist.npz in the cache folder, downloaded the first time (from $PYAI_MNIST_URL,
    else Keras's URL) and checked against its SHA-256 ($PYAI_MNIST_SHA256, else Keras's) every
    time; a cached file that does not match is downloaded again."""
    url = os.environ.get("PYAI_MNIST_URL") or MNIST_URL
    sha256 = os.environ.get("PYAI_MNIST_SHA256") or MNIST_SHA256
    path = os.path.join(cache_folder(), MNIST_NPZ)
    if not (os.path.isfile(path) and file_sha256(path) == sha256):
        download(url, sha256, path)
    return path


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url, sha256, path):
    """`url` saved at `path` if its SHA-256 is `sha256`: written to a temporary file beside `path`
    and renamed over it, so `path` is never a partial or unchecked file. An unreachable URL is an
    OSError, a different file a ValueError, each one line naming the URL."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    file = tempfile.NamedTemporaryFile(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp",
                                       delete=False)
    try:
        digest = hashlib.sha256()
        with file:
            try:
                with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                    for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                        digest.update(chunk)
                        file.write(chunk)
            except (urllib.error.URLError, OSError, ValueError) as error:
                reason = getattr(error, "reason", None) or error
                raise OSError(f"MNIST: cannot download {url} ({reason}); without a network, pass a "
                              f"local copy with --data PATH (a folder of IDX files or mnist.npz), "
                              f"or load_mnist(path)") from None
            file.flush()
            os.fsync(file.fileno())
        if digest.hexdigest() != sha256:
            raise ValueError(f"MNIST {url}: the downloaded file's SHA-256 is {digest.hexdigest()}, "
                             f"expected {sha256}; it was not kept")
        os.replace(file.name, path)
    except BaseException:
        os.unlink(file.name)
        raise
