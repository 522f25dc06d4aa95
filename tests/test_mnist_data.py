"""pyai.data.load_mnist: the real files where they are, files this test writes, and broken ones.

The real MNIST test split lives at ../shared/data/mnist beside the repository on development and
CI machines only; the test that reads it skips elsewhere. Every other test writes its own files.
"""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from pyai.data import load_mnist

REAL_MNIST = Path(__file__).resolve().parents[2] / "shared/data/mnist"


def idx_bytes(array):
    """The IDX encoding of a uint8 array: 0, 0, type 8 (unsigned byte), ndim, big-endian sizes, data."""
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write(path, data, gzipped):
    path.write_bytes(gzip.compress(data) if gzipped else data)


def write_split(folder, rng, prefix="t10k", count=5, gzipped=True):
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, count, dtype=np.uint8)
    suffix = ".gz" if gzipped else ""
    write(folder / f"{prefix}-images-idx3-ubyte{suffix}", idx_bytes(images), gzipped)
    write(folder / f"{prefix}-labels-idx1-ubyte{suffix}", idx_bytes(labels), gzipped)
    return images, labels


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason=f"the real MNIST files are not at {REAL_MNIST}")
def test_the_real_test_split():
    images, labels = load_mnist(REAL_MNIST)
    assert images.shape == (10000, 28, 28) and images.dtype == np.float32
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert images.min() == 0.0 and images.max() == 1.0
    assert list(labels[:10]) == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9], "the test split starts 7 2 1 0 4 1 4 9 5 9"
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert 0.12 < images.mean() < 0.14, "MNIST's mean intensity is about 0.13"


@pytest.mark.parametrize("gzipped", [True, False])
def test_idx_files_written_here_read_back_exactly(rng, tmp_path, gzipped):
    images, labels = write_split(tmp_path, rng, gzipped=gzipped)
    got_images, got_labels = load_mnist(tmp_path)
    assert np.array_equal(got_images, images.astype(np.float32) / 255)
    assert np.array_equal(got_labels, labels)


def test_all_takes_both_splits_train_first_and_a_split_alone(rng, tmp_path):
    train_images, train_labels = write_split(tmp_path, rng, prefix="train", count=4, gzipped=False)
    test_images, test_labels = write_split(tmp_path, rng, prefix="t10k", count=3)
    images, labels = load_mnist(tmp_path)
    assert np.array_equal(labels, np.concatenate([train_labels, test_labels]))
    assert np.array_equal(images * 255, np.concatenate([train_images, test_images]))
    assert np.array_equal(load_mnist(tmp_path, split="test")[1], test_labels)


def test_keras_mnist_npz_as_a_file_or_in_a_folder(rng, tmp_path):
    arrays = {"x_train": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, 4, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, 2, dtype=np.uint8)}
    np.savez(tmp_path / "mnist.npz", **arrays)
    for path in (tmp_path / "mnist.npz", tmp_path):
        images, labels = load_mnist(path)
        assert np.array_equal(labels, np.concatenate([arrays["y_train"], arrays["y_test"]]))
        assert np.array_equal(images * 255, np.concatenate([arrays["x_train"], arrays["x_test"]]))
    images, labels = load_mnist(tmp_path, split="train")
    assert np.array_equal(images * 255, arrays["x_train"]) and np.array_equal(labels, arrays["y_train"])


def broken_images(images):
    """name -> (bytes of a broken images file, what the error must say)."""
    good = idx_bytes(images)
    return {
        "bad magic": (b"\x00\x00\x0d\x03" + good[4:], "not an IDX file of 3-d unsigned bytes"),
        "empty": (b"", "magic number missing"),
        "truncated": (good[:-100], "truncated"),
        "trailing bytes": (good + b"\x00" * 7, "longer than its header says"),
        "corrupt gzip": (gzip.compress(good)[:40], "cannot be read"),
    }


@pytest.mark.parametrize("case", ["bad magic", "empty", "truncated", "trailing bytes", "corrupt gzip"])
def test_a_malformed_images_file_is_named_in_the_error(rng, tmp_path, case):
    images, _ = write_split(tmp_path, rng, gzipped=False)
    data, says = broken_images(images)[case]
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=says) as error:
        load_mnist(tmp_path)
    assert str(path) in str(error.value)


def test_counts_that_differ_are_named_in_the_error(rng, tmp_path):
    write_split(tmp_path, rng, count=5)
    labels_path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write(labels_path, idx_bytes(rng.integers(0, 10, 4, dtype=np.uint8)), gzipped=True)
    with pytest.raises(ValueError, match="holds 4 labels for the 5 images") as error:
        load_mnist(tmp_path)
    assert str(labels_path) in str(error.value)


def test_labels_beyond_nine_are_refused(rng, tmp_path):
    write_split(tmp_path, rng, count=3, gzipped=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([1, 12, 3], np.uint8)))
    with pytest.raises(ValueError, match="labels must be digits 0..9, got 1..12"):
        load_mnist(tmp_path)


def test_missing_files_are_named(rng, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_mnist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="holds neither .*t10k-images-idx3-ubyte.* nor mnist.npz"):
        load_mnist(tmp_path)
    write_split(tmp_path, rng)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte\\[.gz\\]: no such file"):
        load_mnist(tmp_path)


def test_a_broken_npz_is_named_in_the_error(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="not a readable .npz file") as error:
        load_mnist(path)
    assert str(path) in str(error.value)
    np.savez(path, x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match=r"has no y_train \(it holds \['x_train'\]\)"):
        load_mnist(path)
