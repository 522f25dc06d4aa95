"""Argument checks shared by the public ops: done once in Python, so kernels can assume valid input.

The documented behaviour for arrays handed to `pyai.ops`:
  - anything numpy can turn into an array of real numbers is accepted; integer and other float
    dtypes are converted to float32, non-contiguous arrays are copied to C order;
  - bool, complex, object and string dtypes raise TypeError naming the argument;
  - a wrong rank, mismatched shapes or an empty dimension raise ValueError naming the argument;
  - NaN and infinity are not rejected by the ops: they propagate as IEEE arithmetic says
    (models and data loaders check for them where a user's data comes in).

GPU arrays (anything with `__cuda_array_interface__`, see `pyai.device`):
  - on a backend that takes them (`pyai.dispatch.takes_device_arrays`: numba-cuda) they pass
    through as numba device arrays, without a copy, when they are float32 (else TypeError) and
    C-contiguous (else ValueError), with the same rank and empty-dimension rules as above:
    nothing is converted or copied on the GPU behind the caller's back;
  - on any other backend they raise TypeError saying to copy them to the host.
"""

import math
import numbers

import numpy as np

from pyai import device, dispatch


def as_float32(name, array, ndim=None, min_ndim=None, backend=None):
    """`array` as a C-contiguous float32 numpy array, or a clear error naming `name`; a GPU array
    stays on the GPU if `backend` (default: the current one) takes GPU arrays."""
    if device.is_device_array(array):
        return device_float32(name, array, ndim, min_ndim, backend)
    array = np.asarray(array)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected an array of real numbers (float32 preferred), "
                        f"got dtype {array.dtype}")
    check_shape(name, array.shape, ndim, min_ndim)
    return np.asarray(array, dtype=np.float32, order="C")   # keeps 0-d arrays 0-d


def device_float32(name, array, ndim, min_ndim, backend):
    """A GPU array as a numba device array (no copy), or a clear error naming `name`."""
    if not dispatch.takes_device_arrays(backend):
        raise TypeError(f"{name}: expected a numpy array on the CPU, got a GPU array "
                        f"({type(array).__name__}); copy it to the host first (backend "
                        f"{backend or dispatch.get_backend()!r} takes host arrays only)")
    try:
        dtype, shape, strides = device.layout(array)
    except RuntimeError as error:   # e.g. PyTorch: "Can't export tensors that require gradient"
        raise TypeError(f"{name}: its __cuda_array_interface__ cannot be read: {error}") from None
    if dtype != np.float32:
        raise TypeError(f"{name}: expected a float32 GPU array, got {dtype}; "
                        f"GPU arrays are not converted")
    check_shape(name, shape, ndim, min_ndim)
    if not device.is_c_contiguous(shape, dtype.itemsize, strides):
        raise ValueError(f"{name}: expected a C-contiguous GPU array, got strides {strides} for "
                         f"shape {shape}; GPU arrays are not copied")
    return device.to_device(array)


def check_shape(name, shape, ndim=None, min_ndim=None):
    if ndim is not None and len(shape) != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {shape}")
    if min_ndim is not None and len(shape) < min_ndim:
        raise ValueError(f"{name}: expected at least {min_ndim} dimension(s), got shape {shape}")
    if 0 in shape:
        raise ValueError(f"{name}: has an empty dimension (shape {shape}); "
                         f"every dimension must be at least 1")


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
