"""Argument checks shared by the public ops: done once in Python, so kernels can assume valid input.

The documented behaviour for arrays handed to `pyai.ops`:
  - anything numpy can turn into an array of real numbers is accepted; integer and other float
    dtypes are converted to float32, non-contiguous arrays are copied to C order;
  - bool, complex, object and string dtypes raise TypeError naming the argument;
  - a wrong rank, mismatched shapes or an empty dimension raise ValueError naming the argument;
  - NaN and infinity are not rejected by the ops: they propagate as IEEE arithmetic says
    (models and data loaders check for them where a user's data comes in).
"""

import math
import numbers

import numpy as np


def as_float32(name, array, ndim=None, min_ndim=None):
    """`array` as a C-contiguous float32 numpy array, or a clear error naming `name`."""
    if hasattr(array, "__cuda_array_interface__") and not isinstance(array, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array on the CPU, got a GPU array "
                        f"({type(array).__name__}); copy it to the host first")
    array = np.asarray(array)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected an array of real numbers (float32 preferred), "
                        f"got dtype {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {array.shape}")
    if min_ndim is not None and array.ndim < min_ndim:
        raise ValueError(f"{name}: expected at least {min_ndim} dimension(s), got shape {array.shape}")
    if 0 in array.shape:
        raise ValueError(f"{name}: has an empty dimension (shape {array.shape}); "
                         f"every dimension must be at least 1")
    return np.ascontiguousarray(array, dtype=np.float32)


def same_shape(name, array, other_name, other):
    if array.shape != other.shape:
        raise ValueError(f"{name}: expected the shape of {other_name} {other.shape}, got {array.shape}")


def real_number(name, value, low=-math.inf, high=math.inf, low_open=False):
    """A finite Python float in [low, high] (or (low, high] with low_open), or a clear error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or value > high:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name}: expected a finite number in {bracket}{low}, {high}], got {value}")
    return value


def positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)
