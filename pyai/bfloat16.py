"""bfloat16 arrays: recognising them and reading the ones that numpy cannot import.

numpy has no bfloat16; `ml_dtypes.bfloat16` (the dtype JAX and TensorFlow use on the host) adds
one, whose arrays pyai takes as they are. A GPU array says bfloat16 with the typestr "<V2" in its
`__cuda_array_interface__` (PyTorch's choice, ml_dtypes' `dtype.str`). A CPU array of another
library in bfloat16 (a PyTorch CPU tensor, say) cannot go through `np.from_dlpack`, which does
not know the type: `from_dlpack` reads its DLPack tensor directly and copies it into an
ml_dtypes array. ml_dtypes is optional: without it nothing is bfloat16 here.
"""

import ctypes
import functools

import numpy as np

from pyai import device

GPU_TYPESTRS = ("<V2", "|V2")
DLPACK_BFLOAT = 4   # DLDataTypeCode kDLBfloat


@functools.cache
def dtype():
    """numpy's bfloat16 dtype (ml_dtypes'), or None where ml_dtypes is not installed."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


def is_bfloat16(array):
    """Whether `array` holds bfloat16: an ml_dtypes.bfloat16 numpy array, a GPU array of typestr
    "<V2", or another library's array whose dtype is named bfloat16 (torch.bfloat16, ...)."""
    bfloat16 = dtype()
    if bfloat16 is None:
        return False
    if isinstance(array, np.ndarray):
        return array.dtype == bfloat16
    if device.is_device_array(array):
        try:
            interface = getattr(array, "__cuda_array_interface__", None)
        except (RuntimeError, TypeError, ValueError):   # unreadable (a PyTorch tensor that requires
            return False                                # grad): pyai.checks says why, for float32
        return interface is not None and interface["typestr"] in GPU_TYPESTRS
    return hasattr(type(array), "__dlpack__") and str(getattr(array, "dtype", "")).endswith("bfloat16")


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):   # dlpack.h
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32), ("dtype", DLDataType),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


def from_dlpack(name, array):
    """A C-contiguous ml_dtypes.bfloat16 copy of a CPU array that exports bfloat16 through DLPack,
    or TypeError naming `name`."""
    where = device.dlpack_device(array)
    if where != "cpu":
        raise TypeError(f"{name}: expected a bfloat16 array on the CPU or a GPU array, got a "
                        f"{type(array).__name__} on {where or 'a device it does not name'}")
    try:
        capsule = array.__dlpack__()
    except (BufferError, RuntimeError, TypeError, ValueError) as error:   # e.g. requires grad
        raise TypeError(f"{name}: this {type(array).__name__} cannot be read through DLPack: {error}") from None
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    tensor = DLTensor.from_address(get_pointer(capsule, b"dltensor"))
    kind = tensor.dtype
    if (kind.code, kind.bits, kind.lanes) != (DLPACK_BFLOAT, 16, 1):
        raise TypeError(f"{name}: its DLPack dtype is (code {kind.code}, {kind.bits} bits, {kind.lanes} lanes), "
                        f"not bfloat16")
    shape = tuple(tensor.shape[i] for i in range(tensor.ndim))
    if 0 in shape:
        return np.empty(shape, dtype())
    strides = (tuple(tensor.strides[i] for i in range(tensor.ndim)) if tensor.strides    # in elements
               else tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape))))
    if any(stride < 0 for stride in strides):
        raise TypeError(f"{name}: negative DLPack strides {strides} are not supported")
    span = 1 + sum((size - 1) * stride for size, stride in zip(shape, strides))
    words = np.ctypeslib.as_array((ctypes.c_uint16 * span).from_address(tensor.data + tensor.byte_offset))
    view = np.lib.stride_tricks.as_strided(words, shape, tuple(2 * stride for stride in strides))
    return np.ascontiguousarray(view).view(dtype())   # copied while the capsule keeps the data alive
