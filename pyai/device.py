"""GPU arrays for the numba-cuda backend: recognising them, and moving arrays to and from the GPU.

A device array is any object with `__cuda_array_interface__` (numba device arrays, CuPy arrays,
PyTorch CUDA tensors, ...) or, under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1), the
simulator's stand-in arrays, which mark themselves `__cuda_ndarray__` instead. An object whose
DLPack device (`__dlpack_device__`) is the CPU is not one, though its class may define the
interface: every PyTorch tensor's does, a CPU tensor's raises when it is read.

    to_device(x)    a numpy array copied to the GPU; a device array wrapped as a numba device
                    array without a copy
    to_host(x)      a device array copied into a new numpy array; a numpy array as it is

Transfers are always explicit: the numba-cuda ops copy their numpy arguments with `to_device`
and their results back with `to_host`, and leave device arrays on the GPU (the rule is in
`pyai._backends.numba_cuda`). numba.cuda is imported inside the transfers only, so that the
argument checks (pyai.checks) can recognise GPU arrays without importing it.
"""

import numpy as np


def is_numba_array(array):
    """numba's device arrays (and the simulator's) mark their class `__cuda_ndarray__`."""
    return bool(getattr(type(array), "__cuda_ndarray__", False))


# DLPack's device types (dlpack.h, DLDeviceType), as a user would name the device.
DLPACK_DEVICES = {1: "cpu", 2: "cuda", 3: "cuda_host", 4: "opencl", 7: "vulkan", 8: "metal",
                  9: "vpi", 10: "rocm", 11: "rocm_host", 12: "ext_dev", 13: "cuda_managed",
                  14: "oneapi", 15: "webgpu", 16: "hexagon", 17: "maia"}


def dlpack_device(array):
    """Where an object that exports DLPack keeps its data, as "cpu" or "cuda:0" (None when it
    does not say): read from `__dlpack_device__`, which exporters answer without touching the data."""
    if not hasattr(type(array), "__dlpack_device__"):
        return None
    device_type, device_id = array.__dlpack_device__()
    name = DLPACK_DEVICES.get(int(device_type), f"DLPack device type {int(device_type)}")
    return name if name == "cpu" else f"{name}:{device_id}"


def is_device_array(array):
    """Looked up on the class, without reading the interface: PyTorch raises when it is read
    on a tensor that requires grad, or on a CPU tensor."""
    if isinstance(array, np.ndarray) or dlpack_device(array) == "cpu":
        return False
    return hasattr(type(array), "__cuda_array_interface__") or is_numba_array(array)


def layout(array):
    """(dtype, shape, strides in bytes or None for C order) of a device array, read from its
    `__cuda_array_interface__` without touching the GPU (the simulator's arrays: their own)."""
    interface = getattr(array, "__cuda_array_interface__", None)
    if interface is None:
        return array.dtype, tuple(array.shape), array.strides
    strides = interface.get("strides")
    return np.dtype(interface["typestr"]), tuple(interface["shape"]), strides and tuple(strides)


def is_c_contiguous(shape, itemsize, strides):
    """Whether `strides` (bytes; None means C order) lay out `shape` in C order. Dimensions of
    size 1 may have any stride, as in numpy."""
    if strides is None:
        return True
    expected = itemsize
    for size, stride in zip(reversed(shape), reversed(strides)):
        if size > 1 and stride != expected:
            return False
        expected *= size
    return True


def to_device(array):
    """`array` on the GPU as a numba device array: device arrays without a copy, anything else
    copied from the host (as a C-contiguous numpy array of its own dtype)."""
    from numba import cuda
    if is_numba_array(array):
        return array
    if is_device_array(array):
        return cuda.as_cuda_array(array)
    return cuda.to_device(np.asarray(array, order="C"))   # 0-d stays 0-d


def copy_into(out, array):
    """`array`, on the host or the GPU, written into the numpy array `out`; returns `out`."""
    out[...] = to_host(array)
    return out


def to_host(array):
    """A device array copied into a new numpy array; a numpy array (or anything else) as it is."""
    if not is_device_array(array):
        return array
    return to_device(array).copy_to_host()
