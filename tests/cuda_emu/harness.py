"""What the emulated-kernel tests share: the emulated build, memory placed at chosen offsets, and
the fake pyai._cuda installed for the cuda backend."""

import contextlib
import shutil
import sys

import numpy as np
import pytest

import pyai
from cuda_emu import build, fake_cuda


def require_compiler():
    if shutil.which("g++") is None:
        pytest.skip("no g++: the CUDA emulation builds cuda_src/ with the host C++ compiler")


def emulator(changes=None):
    """The kernels of cuda_src/ (with `changes` applied) built for the host and loaded: the
    sanitized build (AddressSanitizer, UBSan) in a process started with its runtime preloaded."""
    require_compiler()
    return fake_cuda.Emulator(build.build(fake_cuda.ASAN_POISON is not None, changes))


def placed(array, offset=0):
    """A copy of `array` whose first element lies `offset` elements past a 256-byte boundary
    (cudaMalloc's alignment), so offset 1 gives kernels a pointer that is not 16-byte aligned."""
    array = np.asarray(array)
    raw = np.empty(array.size + offset + 512 // array.itemsize, array.dtype)
    start = (-raw.ctypes.data % 256) // array.itemsize + offset
    out = raw[start:start + array.size].reshape(array.shape)
    out[...] = array
    fake_cuda.guard(raw, start * array.itemsize, (start + array.size) * array.itemsize)
    return out


def output(shape, offset=0):
    """A float32 output placed as `placed`, filled with NaN so an element never written shows."""
    return placed(np.full(shape, np.nan, np.float32), offset)


def pointer(array):
    """The address of `array`'s data, which must outlive the kernel call: an array made in the
    call's own argument list (a reference count of 2 here) would be freed before the kernel runs
    and the kernel would write into freed memory, so it is refused."""
    if sys.getrefcount(array) <= 2:
        raise ValueError("pointer: the array is a temporary; keep it in a variable until the kernel has run")
    return array.ctypes.data


@contextlib.contextmanager
def as_cuda_extension(kernels):
    """The cuda backend running on `kernels` (an Emulator) as its pyai._cuda, inside the block."""
    module = fake_cuda.module(kernels)
    saved_module, saved_attribute = sys.modules.get("pyai._cuda"), getattr(pyai, "_cuda", None)
    sys.modules["pyai._cuda"] = pyai._cuda = module
    try:
        with pyai.use_backend("cuda"):
            yield module
    finally:
        if saved_module is None:
            sys.modules.pop("pyai._cuda", None)
        else:
            sys.modules["pyai._cuda"] = saved_module
        if saved_attribute is None:
            del pyai._cuda
        else:
            pyai._cuda = saved_attribute
