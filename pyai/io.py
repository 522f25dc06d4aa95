"""Checkpoints: named arrays in an .npz file, written atomically and read without pickle.

`save(path, arrays)` writes a temporary file beside `path`, flushes and fsyncs it, then renames it
over `path` (os.replace is atomic), so a crash mid-write leaves the old checkpoint or none, never
half of one. `load(path, expected)` reads with allow_pickle=False, so a checkpoint cannot run code,
and checks every tensor's name, shape and dtype against what the caller expects.
"""

import os
import uuid
import zipfile

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, unreadable without pickle, or for another model."""


def save(path, arrays):
    """Write {name: array} to `path` as an .npz file, atomically. Object arrays are refused."""
    path = os.fspath(path)
    arrays = {name: np.asarray(array) for name, array in arrays.items()}
    for name, array in arrays.items():
        if array.dtype.hasobject:
            raise TypeError(f"{name}: object arrays would need pickle; save numbers or strings")
    # beside `path`, so the rename stays on one file system; opened like any new file, so it gets
    # the usual permissions (tempfile.mkstemp would make the checkpoint private to its owner)
    temporary = f"{path}.{uuid.uuid4().hex}.tmp"
    file = open(temporary, "xb")
    try:
        with file:
            np.savez(file, allow_pickle=False, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    sync_directory(os.path.dirname(os.path.abspath(path)))


def sync_directory(directory):
    """Make the rename itself durable (POSIX); Windows cannot open a directory, nor needs to."""
    if os.name == "posix":
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def load(path, expected=None):
    """{name: array} from the .npz file at `path`.

    With `expected` ({name: array}), the file must hold exactly those names, each with the same
    shape and dtype and, for floats, only finite values; otherwise CheckpointError names the file
    and the tensor.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    arrays = read_npz(path)
    if expected is not None:
        check(path, arrays, expected)
    return arrays


def read_npz(path):
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"checkpoint {path}: not a readable .npz file ({error})") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CheckpointError(f"checkpoint {path}: holds a single array, not an .npz archive of named ones")
    with archive:
        arrays = {}
        for name in archive.files:
            try:
                arrays[name] = archive[name]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
                message = f"checkpoint {path}: tensor {name!r} cannot be read ({error})"
                raise CheckpointError(message) from error
    return arrays


def check(path, arrays, expected):
    """The names, shapes, dtypes and finiteness of `arrays` against `expected`, or CheckpointError."""
    missing = [name for name in expected if name not in arrays]
    unexpected = [name for name in arrays if name not in expected]
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path}: does not match this model (a checkpoint of another "
                              f"architecture?): missing tensors {missing}, unexpected tensors {unexpected}")
    for name, reference in expected.items():
        array, reference = arrays[name], np.asarray(reference)
        if array.shape != reference.shape or array.dtype != reference.dtype:
            raise CheckpointError(f"checkpoint {path}: tensor {name!r} is {array.dtype}{list(array.shape)}, "
                                  f"this model expects {reference.dtype}{list(reference.shape)} "
                                  f"(a checkpoint of another architecture?)")
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise CheckpointError(f"checkpoint {path}: tensor {name!r} holds NaN or infinity")
