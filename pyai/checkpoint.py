"""Checkpoints of pyai's models: one .npz format for the MLP, the GAN and the GPT.

    checkpoint.save("gpt.npz", model, optimizer, training, metadata={"vocabulary": "abc"})
    model, metadata = checkpoint.load("gpt.npz", GPT, optimizer, training)   # restores both in place

The file holds named arrays, JSON as string arrays:
  "format"                 {"version": FORMAT_VERSION, "kind": "GPT"}: the model class it rebuilds
  "config"                 the model's constructor arguments, so `load` can rebuild it
  "weights/<name>"         each parameter, named as `model.parameters()` names it
  "optimizer/<prefix><key>"  each optimizer's `state()` (Adam: "steps", "m/<name>", "v/<name>"); the
                           optimizer given to `save` has prefix "", the ones a model keeps itself
                           (the GAN's, by `model.optimizers()`) the prefix of the parameters they step
  "training", "history"    with a `pyai.training.Training`: its `state()` (epochs, steps, the random
                           generator's state) and its history rows as a float64 (rows, columns) array
  "metadata"               with `metadata`: any JSON object the caller wants back

Writing is atomic: a temporary file beside `path` (`<path>.<32 hex digits>.tmp`) is written, fsynced
and renamed over `path` (os.replace), then the folder is fsynced, so a crash leaves the old checkpoint
or the new one, never half of one; the next save to `path` removes such temporary files that a
killed save left (those untouched for STALE_SECONDS). Weights and optimizer state that are not
finite are never written. Reading never unpickles (allow_pickle=False), so a checkpoint cannot run
code; anything unusable (corrupt, another format version, another model, tensors of other shapes,
NaN or infinite weights or Adam moments, negative second moments, a tensor whose header claims
more bytes than the file holds) raises CheckpointError naming the file.
"""

import json
import math
import os
import re
import time
import uuid
import zipfile

import numpy as np

FORMAT_VERSION = 1
READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, MemoryError, OverflowError)
STALE_SECONDS = 60   # a temporary file untouched this long is a killed save's, not one in progress


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, unreadable without pickle, or for another model."""


# ---- The model-level format ----

def save(path, model, optimizer=None, training=None, metadata=None):
    """Write `model` (its config and parameters), the optimizers' states, and, when given, the
    training state and a JSON-able `metadata` dict to `path`, atomically."""
    arrays = {"format": json_array({"version": FORMAT_VERSION, "kind": type(model).__name__}),
              "config": json_array(model.config)}
    arrays.update({f"weights/{name}": parameter for name, parameter in model.parameters()})
    for prefix, each in optimizers_of(model, optimizer).items():
        arrays.update({f"optimizer/{prefix}{key}": array for key, array in each.state().items()})
    for name, array in arrays.items():
        if np.asarray(array).dtype.kind == "f" and not np.isfinite(array).all():
            raise CheckpointError(f"checkpoint {path}: not saved: {name!r} holds NaN or infinity "
                                  f"(a diverged run?); the file on disk is left as it was")
    if training is not None:
        arrays["training"] = json_array(training.state())
        rows = np.array(training.history, np.float64)
        # (rows, columns) even with no rows yet, whose width reshape cannot infer
        arrays["history"] = rows.reshape(len(rows), -1) if len(rows) else np.zeros((0, 0))
    if metadata is not None:
        arrays["metadata"] = json_array(metadata)
    write_npz(path, arrays)


def load(path, model_class, optimizer=None, training=None):
    """(model, metadata): a `model_class` rebuilt from the checkpoint at `path`, with its weights.

    `optimizer` and `training`, when given, get their saved state back, in place; metadata is {}
    when none was saved.
    """
    arrays = read_npz(path)
    check_format(path, arrays, model_class.__name__)
    try:
        model = model_class(**read_json(path, arrays, "config"))
    except (TypeError, ValueError) as error:
        message = f"checkpoint {path}: its config does not make {with_article(model_class.__name__)} ({error})"
        raise CheckpointError(message) from error
    return model, restore(path, arrays, model, optimizer, training)


def load_into(path, model, optimizer=None, training=None):
    """Copy the checkpoint at `path` into an existing `model` (and `optimizer`, `training`); its
    metadata. The weights change only when everything fits: every check runs before they are copied."""
    arrays = read_npz(path)
    check_format(path, arrays, type(model).__name__)
    return restore(path, arrays, model, optimizer, training)


def restore(path, arrays, model, optimizer, training):
    """Check everything against `model`, then copy weights and states in; the metadata.

    Same shapes are not enough: the saved config must match the model's too (activations, say),
    but for the seed, which only draws the initial weights.
    """
    weights = with_prefix(arrays, "weights/")
    parameters = dict(model.parameters())
    check(path, weights, parameters)
    saved = read_json(path, arrays, "config")
    differing = sorted(key for key in model.config if key != "seed" and saved.get(key) != model.config[key])
    if differing:
        raise CheckpointError(f"checkpoint {path}: its {type(model).__name__} differs from {model!r} in "
                              + ", ".join(f"{key}={saved.get(key)!r}" for key in differing))
    metadata = read_json(path, arrays, "metadata") if "metadata" in arrays else {}
    for prefix, each in optimizers_of(model, optimizer).items():
        load_optimizer_state(path, each, with_prefix(arrays, f"optimizer/{prefix}"), parameters, prefix, model)
    if training is not None:
        load_training(path, training, arrays)
    for name, parameter in parameters.items():
        parameter[...] = weights[name]
    return metadata


def optimizers_of(model, optimizer):
    """{parameter-name prefix: optimizer}: the one given (prefix "") and those the model keeps itself."""
    optimizers = model.optimizers() if hasattr(model, "optimizers") else {}
    return optimizers if optimizer is None else {"": optimizer, **optimizers}


def with_prefix(arrays, prefix):
    return {name.removeprefix(prefix): array for name, array in arrays.items() if name.startswith(prefix)}


def check_format(path, arrays, kind):
    expected = f"expected a checkpoint of {with_article(kind)} in pyai's format {FORMAT_VERSION}"
    if "format" not in arrays:
        raise CheckpointError(f"checkpoint {path}: has no 'format' entry (not a pyai checkpoint, or one "
                              f"older than format {FORMAT_VERSION}); {expected}")
    found = read_json(path, arrays, "format")
    if found.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path}: is of format {found.get('version')!r}; {expected}")
    if found.get("kind") != kind:
        raise CheckpointError(f"checkpoint {path}: holds {with_article(str(found.get('kind')))}, which does not "
                              f"make {with_article(kind)} (a checkpoint of another model?); {expected}")


def with_article(kind):
    """'a GAN', 'an MLP': the article goes by how the first letter of a class name is spoken."""
    return ("an " if kind[:1] in "AEFHILMNORSX" else "a ") + kind


def load_optimizer_state(path, optimizer, state, parameters, prefix, model):
    """Adam's m and v must fit the parameters they belong to; the optimizer checks the rest."""
    for key, array in state.items():
        slot, _, name = key.partition("/")
        parameter = parameters.get(prefix + name)
        if slot in ("m", "v") and (parameter is None or parameter.shape != array.shape):
            raise CheckpointError(f"checkpoint {path}: optimizer tensor {prefix + key!r} has shape "
                                  f"{array.shape}, which fits no parameter of {model!r}")
        if slot in ("m", "v") and array.dtype.kind == "f" and not np.isfinite(array).all():
            raise CheckpointError(f"checkpoint {path}: optimizer tensor {prefix + key!r} holds NaN or infinity")
        if slot == "v" and array.dtype.kind == "f" and (array < 0).any():
            raise CheckpointError(f"checkpoint {path}: optimizer tensor {prefix + key!r} holds negative "
                                  f"values, but Adam's second moments are averages of squares")
    try:
        optimizer.load_state(state)
    except ValueError as error:
        raise CheckpointError(f"checkpoint {path}: {error}") from error


def load_training(path, training, arrays):
    if "training" not in arrays:
        raise CheckpointError(f"checkpoint {path}: holds no training state to resume from")
    history = arrays.get("history")
    if history is None or history.dtype != np.float64 or history.ndim != 2:
        raise CheckpointError(f"checkpoint {path}: 'history' is not a float64 (rows, columns) array")
    state = read_json(path, arrays, "training")
    try:
        training.load_state(state, history.tolist())
    except (KeyError, TypeError, ValueError, OverflowError) as error:
        raise CheckpointError(f"checkpoint {path}: 'training' is not a training state "
                              f"({type(error).__name__}: {error})") from error


def json_array(value):
    return np.array(json.dumps(value))


def read_json(path, arrays, key):
    """The JSON object stored under `key`, or CheckpointError."""
    try:
        value = json.loads(str(arrays[key]))
    except KeyError:
        raise CheckpointError(f"checkpoint {path}: has no {key!r}") from None
    except ValueError as error:
        raise CheckpointError(f"checkpoint {path}: {key!r} is not valid JSON ({error})") from error
    if not isinstance(value, dict):
        raise CheckpointError(f"checkpoint {path}: {key!r} is not a JSON object")
    return value


# ---- Named arrays in an .npz file, written atomically and read without pickle ----

def write_npz(path, arrays):
    """Write {name: array} to `path` as an .npz file, atomically. Object arrays are refused."""
    path = os.fspath(path)
    arrays = {name: np.asarray(array) for name, array in arrays.items()}
    for name, array in arrays.items():
        if array.dtype.hasobject:
            raise TypeError(f"{name}: object arrays would need pickle; save numbers or strings")
    # beside `path`, so the rename stays on one file system; opened like any new file, so it gets
    # the usual permissions (tempfile.mkstemp would make the checkpoint private to its owner)
    remove_stale_temporaries(path)
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


def remove_stale_temporaries(path):
    """Delete the temporary files of `path` (named as write_npz names them) left by killed saves."""
    folder = os.path.dirname(os.path.abspath(path))
    pattern = re.compile(re.escape(os.path.basename(path)) + r"\.[0-9a-f]{32}\.tmp")
    for name in os.listdir(folder):
        candidate = os.path.join(folder, name)
        try:
            if pattern.fullmatch(name) and time.time() - os.stat(candidate).st_mtime > STALE_SECONDS:
                os.unlink(candidate)
        except FileNotFoundError:   # another save removed it first
            pass


def sync_directory(directory):
    """Make the rename itself durable (POSIX); Windows cannot open a directory, nor needs to."""
    if os.name == "posix":
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def read_npz(path):
    """{name: array} from the .npz file at `path`, or CheckpointError for anything unreadable."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    try:
        archive = np.load(path, allow_pickle=False)
    except READ_ERRORS as error:
        raise CheckpointError(f"checkpoint {path}: not a readable .npz file ({error})") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CheckpointError(f"checkpoint {path}: holds a single array, not an .npz archive of named ones")
    with archive:
        arrays = {}
        for name in archive.files:
            try:
                check_claimed_size(path, archive, name)
                arrays[name] = archive[name]
            except READ_ERRORS as error:
                message = f"checkpoint {path}: tensor {name!r} cannot be read ({error})"
                raise CheckpointError(message) from error
    return arrays


def check_claimed_size(path, archive, name):
    """CheckpointError unless the bytes a tensor's .npy header claims fit in its zip entry: a
    crafted header (10^13 floats) must not make numpy allocate before it reads the data."""
    member = name + ".npy"
    if member not in archive.zip.namelist():
        return
    stored = archive.zip.getinfo(member).file_size
    with archive.zip.open(member) as file:
        version = np.lib.format.read_magic(file)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            return   # numpy's own reader says what is wrong with it
        shape, _, dtype = read_header(file)
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > stored:
        raise CheckpointError(f"checkpoint {path}: tensor {name!r} claims shape {shape} of {dtype} "
                              f"({claimed:,} bytes), but its entry holds {stored:,} bytes")


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
