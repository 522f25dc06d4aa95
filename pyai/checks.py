"""Argument checks shared by the public ops: done once in Python, so kernels can assume valid input.

The documented behaviour for arrays handed to `pyai.ops`:
  - anything numpy can turn into an array of real numbers is accepted; integer and other float
    dtypes are converted to float32, non-contiguous arrays are copied to C order; an ndarray
    subclass (np.matrix, a user's own) is read as the plain ndarray of its data, which keeps its
    shape exactly (np.asarray); a masked array (np.ma.MaskedArray) raises TypeError, since its
    mask would be dropped;
  - float64 (or wider) values beyond float32's range (|x| > 3.4e38) raise ValueError, rather
    than become infinity in the conversion; values already infinite or NaN are let through;
  - bool, complex, object and string dtypes raise TypeError naming the argument;
  - a wrong rank, mismatched shapes or an empty dimension raise ValueError naming the argument;
  - NaN and infinity are not rejected by the ops: they propagate as IEEE arithmetic says
    (models and data loaders check for them where a user's data comes in).

Arrays updated in place (`in_place`) must be the caller's own float32, C-contiguous, writeable
arrays; a subclass is updated through a plain-ndarray view of the same memory, so a kernel always
sees the shape it assumes. Flags (`flag`) are bool or numpy bool (or the ints 0 and 1), never
a truthy string; numbers (`real_number`) must be finite and within float32's range.

Arrays of other libraries that export DLPack (`__dlpack__`, `__dlpack_device__`: PyTorch CPU
tensors, TensorFlow eager tensors, JAX arrays, ...) are read on the CPU through `np.from_dlpack`,
a view of their memory without a copy, and then follow the rules above (a float32 C-contiguous
one is used as it is; an in-place one is updated in its own memory). One whose data is elsewhere
(a GPU) is a TypeError naming its device, unless it is a GPU array a backend takes (below); one
that cannot be exported (a PyTorch tensor that requires grad, a dtype numpy lacks such as
bfloat16) is a TypeError saying why.

bfloat16 operands of matmul and linear (`gemm_operands`; ml_dtypes.bfloat16 numpy arrays, GPU
arrays of typestr "<V2", other libraries' CPU bfloat16 arrays through DLPack, see `pyai.bfloat16`)
are kept in bfloat16 on a backend that computes on them (`pyai.dispatch.takes_bfloat16`: cuda),
where all the operands of the product must be bfloat16; any other backend raises TypeError naming
the argument, rather than converting behind the caller's back.

GPU arrays (anything with `__cuda_array_interface__`, see `pyai.device`):
  - on a backend that takes them (`pyai.dispatch.takes_device_arrays`: numba-cuda) they pass
    through as numba device arrays, without a copy, when they are float32 (else TypeError) and
    C-contiguous (else ValueError), with the same rank and empty-dimension rules as above:
    nothing is converted or copied on the GPU behind the caller's back;
  - on any other backend they raise TypeError saying to copy them to the host.
"""

import math
import numbers
import os

import numpy as np

from pyai import bfloat16, device, dispatch

FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32 = np.dtype(np.float32)   # the one float32 dtype numpy gives its arrays: `is` tells it at once


def as_float32(name, array, ndim=None, min_ndim=None, backend=None):
    """`array` as a C-contiguous float32 numpy array, or a clear error naming `name`; a GPU array
    stays on the GPU if `backend` (default: the current one) takes GPU arrays."""
    if type(array) is np.ndarray and array.dtype is FLOAT32 and array.flags.c_contiguous:
        check_shape(name, array.shape, ndim, min_ndim)   # already what the kernels take
        return array
    if device.is_device_array(array):
        return device_float32(name, array, ndim, min_ndim, backend)
    array = plain_array(name, array)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected an array of real numbers (float32 preferred), "
                        f"got dtype {array.dtype}")
    check_shape(name, array.shape, ndim, min_ndim)
    with np.errstate(over="ignore"):   # an overflow is reported below, naming the argument
        converted = np.asarray(array, dtype=np.float32, order="C")   # keeps 0-d arrays 0-d
    if array.dtype.kind == "f" and array.dtype.itemsize > 4 and not np.isfinite(converted).all():
        overflowed = np.count_nonzero(np.isinf(converted) & np.isfinite(array))
        if overflowed:
            raise ValueError(f"{name}: holds {overflowed} finite value(s) beyond float32's range "
                             f"(|x| > {FLOAT32_MAX:.4g}), which float32 would make infinite; "
                             f"scale the input or clip it")
    return converted


def is_bfloat16(array):
    """Whether `array` is a numpy array of bfloat16 (ml_dtypes.bfloat16; numpy has none of its own).
    Its dtype's kind, 'V', is looked at first: numpy builds `dtype.name` anew on each read (1.8 us),
    and every float32 array ops.attention checks would pay it."""
    return isinstance(array, np.ndarray) and array.dtype.kind == "V" and array.dtype.name == "bfloat16"


def as_bfloat16(name, array, ndim=None):
    """`array`, a bfloat16 numpy array, C-contiguous, or a clear error naming `name`."""
    if not is_bfloat16(array):
        kind = f"dtype {array.dtype}" if isinstance(array, np.ndarray) else type(array).__name__
        raise TypeError(f"{name}: expected a bfloat16 numpy array (ml_dtypes.bfloat16) like the other inputs, "
                        f"got {kind}")
    check_shape(name, array.shape, ndim)
    return np.ascontiguousarray(array)


def plain_array(name, array):
    """`array` as a plain numpy ndarray (a subclass viewed as its data, exactly; another library's
    CPU array viewed through DLPack), or TypeError."""
    if isinstance(array, np.ma.MaskedArray):
        raise TypeError(f"{name}: masked arrays are not supported (the mask would be ignored); "
                        f"pass array.filled(value) or array.compressed()")
    if not isinstance(array, np.ndarray) and hasattr(type(array), "__dlpack__"):
        return dlpack_view(name, array)
    return np.asarray(array)


def dlpack_view(name, array):
    """A numpy view, without a copy, of a CPU array that exports DLPack, or TypeError naming
    `name` and, for data elsewhere, its device."""
    where = device.dlpack_device(array)
    if where != "cpu":
        raise TypeError(f"{name}: expected an array on the CPU, got a {type(array).__name__} on "
                        f"{where or 'a device it does not name'}; copy it to the host first "
                        f"(pyai reads DLPack arrays on the CPU; the GPU backends take GPU arrays "
                        f"through __cuda_array_interface__)")
    try:
        return np.from_dlpack(array)
    except (BufferError, RuntimeError, TypeError, ValueError) as error:   # e.g. requires grad, bfloat16
        raise TypeError(f"{name}: this {type(array).__name__} cannot be read through DLPack: "
                        f"{error}") from None


def in_place(name, array):
    """The caller's own float32 C-contiguous writeable array, as a plain ndarray over the same
    memory, for an op that updates it in place; TypeError or ValueError naming `name` otherwise."""
    if isinstance(array, np.ma.MaskedArray):
        raise TypeError(f"{name}: updated in place, so it cannot be a masked array (its mask "
                        f"would be ignored)")
    kind = type(array).__name__
    if not isinstance(array, np.ndarray) and hasattr(type(array), "__dlpack__"):
        array = dlpack_view(name, array)   # the same memory, so the caller's tensor is updated
    if not isinstance(array, np.ndarray) or array.dtype != np.float32 or not array.flags.c_contiguous:
        raise TypeError(f"{name}: updated in place, so it must be a C-contiguous float32 array, "
                        f"got {kind} {getattr(array, 'dtype', '')}".rstrip())
    if not array.flags.writeable:
        raise ValueError(f"{name}: updated in place, but the array is read-only")
    if array.size == 0:
        raise ValueError(f"{name}: has an empty dimension (shape {array.shape})")
    return array.view(np.ndarray)   # np.matrix keeps 2 dimensions through reshape(-1): not a kernel's


def gemm_operands(operands, backend=None):
    """The operands of a product, [(name, array, ndim, min_ndim), ...], all float32 (as_float32)
    or, where any is bfloat16, all bfloat16 (bfloat16_operand): TypeError naming one that is not.
    One plain loop, a float32 numpy array taken at once: every product asks, and right after a
    kernel each Python step costs about a microsecond, its code and data out of cache (two
    loops, the first asking is_bfloat16 of each, and as_float32 for each had taken 10 us there;
    Intel Xeon, family 6 model 167)."""
    checked = []
    for name, array, ndim, min_ndim in operands:
        if type(array) is np.ndarray and array.dtype is FLOAT32 and array.flags.c_contiguous:
            check_shape(name, array.shape, ndim, min_ndim)
            checked.append(array)
        elif bfloat16.is_bfloat16(array):
            return bfloat16_operands(operands, name, backend)
        else:
            checked.append(as_float32(name, array, ndim, min_ndim, backend))
    return checked


def bfloat16_operands(operands, first, backend):
    """gemm_operands where `first` is bfloat16: all bfloat16, or TypeError naming one that is not."""
    for name, array, _, _ in operands:
        if not bfloat16.is_bfloat16(array):
            raise TypeError(f"{name}: {first} is bfloat16, so {name} must be too (got "
                            f"{getattr(array, 'dtype', type(array).__name__)}); convert one of them")
    return [bfloat16_operand(name, array, ndim, min_ndim, backend) for name, array, ndim, min_ndim in operands]


def bfloat16_operand(name, array, ndim=None, min_ndim=None, backend=None):
    """A bfloat16 operand for a backend that computes on it (pyai.dispatch.takes_bfloat16): a
    C-contiguous ml_dtypes.bfloat16 numpy array (another library's CPU array copied into one), or
    a C-contiguous GPU array passed through as it is; TypeError on other backends."""
    if not dispatch.takes_bfloat16(backend):
        raise TypeError(f"{name}: bfloat16 arrays are taken by the cuda backend only; backend "
                        f"{backend or dispatch.get_backend()!r} computes in float32: convert {name} "
                        f"to float32 first (e.g. {name}.astype(np.float32))")
    if device.is_device_array(array):
        _, shape, strides = device.layout(array)
        check_shape(name, shape, ndim, min_ndim)
        if not device.is_c_contiguous(shape, 2, strides):
            raise ValueError(f"{name}: expected a C-contiguous GPU array, got strides {strides} for "
                             f"shape {shape}; GPU arrays are not copied")
        return array
    array = array if isinstance(array, np.ndarray) else bfloat16.from_dlpack(name, array)
    check_shape(name, array.shape, ndim, min_ndim)
    return np.ascontiguousarray(array)


def device_float32(name, array, ndim, min_ndim, backend):
    """A GPU array as a numba device array (no copy), or a clear error naming `name`."""
    if not dispatch.takes_device_arrays(backend):
        raise TypeError(f"{name}: expected a numpy array on the CPU, got a GPU array "
                        f"({type(array).__name__} on {device.dlpack_device(array) or 'the GPU'}); "
                        f"copy it to the host first (backend {backend or dispatch.get_backend()!r} "
                        f"takes host arrays only)")
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
    """A finite Python float in [low, high] (or (low, high] with low_open) and within float32's
    range, where every pyai kernel computes, or a clear error."""
    if type(value) is float and abs(value) <= FLOAT32_MAX and value <= high and (
            value > low if low_open else value >= low):
        return value   # the usual case (a NaN or an infinity fails abs's test and is named below)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or value > high:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name}: expected a finite number in {bracket}{low}, {high}], got {value}")
    if abs(value) > FLOAT32_MAX:
        raise ValueError(f"{name}: {value} is beyond float32's range (|x| <= {FLOAT32_MAX:.4g}), "
                         f"where the kernels compute")
    return value


def flag(name, value):
    """A yes/no argument as a Python bool: bool, numpy bool or the ints 0 and 1; a string such as
    "no" is truthy in Python, so anything else is a TypeError rather than a guess."""
    if value is False or value is True:   # the usual case, on every product's path
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name}: expected True or False, got {type(value).__name__} {value!r}")


def physical_memory():
    """This machine's memory in bytes, or None where the OS does not say (then nothing is refused)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def fits_in_memory(name, parameters, model):
    """ValueError naming `name` unless a model of `parameters` float32 parameters, with as many
    gradients and Adam's two moments (4 floats each), fits in this machine's memory: checked
    before anything is allocated, so an absurd size is one clear error, not a MemoryError or a
    process that grows until it is killed."""
    needed, memory = 16 * parameters, physical_memory()
    if memory is not None and needed > memory:
        raise ValueError(f"{name}: {model} of {parameters:.3g} parameters needs {needed / 2**30:,.0f} GiB "
                         f"for its weights, gradients and Adam's moments; this machine has "
                         f"{memory / 2**30:,.0f} GiB")


def positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)
