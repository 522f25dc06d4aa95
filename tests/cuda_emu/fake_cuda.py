"""A stand-in for the nanobind extension pyai._cuda over an emulated build (build.py): the same
functions, each calling the kernel's C entry point through ctypes, and DeviceBuffer in host
memory. A kernel call raises RuntimeError when the launcher threw (CUDA_CHECK), or when the
emulator saw a fault (a barrier or shuffle after a thread exited, threads stuck at different
barriers, a misaligned float4 access, an invalid launch).

Arguments are checked as strictly as nanobind does (ints are ints, bools are bools), so the
cuda backend's Python code (pyai/_backends/cuda.py) is exercised as on a GPU.
"""

import ctypes
import pathlib
import re
import types
import weakref

import numpy as np

POINTER, INT32, INT64, FLOAT, BOOL = ctypes.c_uint64, ctypes.c_int, ctypes.c_int64, ctypes.c_float, ctypes.c_bool
GEOMETRY = ctypes.POINTER(ctypes.c_int)   # a ConvGeometry (cuda_src/conv2d.cuh): a sequence of its ints
P, I, L, F, B, G = POINTER, INT32, INT64, FLOAT, BOOL, GEOMETRY
SIGNATURES = {   # the launchers of cuda_src/*.cuh, with the stream last
    "leaky_relu_forward": (P, P, L, F, P),
    "leaky_relu_backward": (P, P, P, L, F, P),
    "matmul_forward": (P, P, P, P, I, I, I, B, B, I, F, P),
    "matmul_forward_tiles": (I, P, P, P, P, I, I, I, B, B, I, F, P),
    "matmul_tf32_forward": (P, P, P, P, I, I, I, B, B, I, F, P),
    "matmul_bf16_forward": (P, P, P, P, I, I, I, B, B, I, F, P),
    "matmul_bf16_forward_tiles": (I, P, P, P, P, I, I, I, B, B, I, F, P),
    "attention_forward": (P, P, P, P, P, I, I, I, I, B, F, P),
    "attention_forward_bf16": (P, P, P, P, P, I, I, I, I, B, F, P),
    "attention_backward": (P, P, P, P, P, P, P, P, P, P, I, I, I, I, B, F, P),
    "attention_backward_bf16": (P, P, P, P, P, P, P, P, P, P, I, I, I, I, B, F, P),
    "layer_norm_forward": (P, P, P, P, P, P, L, I, F, P),
    "layer_norm_backward": (P, P, P, P, P, P, P, P, P, L, I, P),
    "gelu_forward": (P, P, L, P),
    "gelu_backward": (P, P, P, L, P),
    "sigmoid_forward": (P, P, L, P),
    "sigmoid_backward": (P, P, P, L, P),
    "tanh_forward": (P, P, L, P),
    "tanh_backward": (P, P, P, L, P),
    "binary_crossentropy_logits_forward": (P, P, P, P, L, P),
    "binary_crossentropy_logits_backward": (P, P, P, L, P),
    "softmax_forward": (P, P, L, I, P),
    "softmax_cross_entropy": (P, P, P, P, L, I, P),
    "embedding_forward": (P, P, P, L, I, P),
    "embedding_backward": (P, P, P, L, L, I, P),
    "adam_update": (P, P, P, P, L, F, F, F, F, P),
    "conv2d_forward": (P, P, P, P, G, I, F, P, I, P),
    "conv2d_transpose_forward": (P, P, P, P, G, I, F, P, I, P),
    "conv2d_backward": (P, P, P, P, P, P, G, P, I, P, P, P),
    "conv2d_transpose_backward": (P, P, P, P, P, P, G, P, I, P, P, P),
}
QUERIES = {   # functions of cuda_src/*.cuh that return a number: (argument types, result type)
    "conv_partial_floats": ((G, I), L),
}
# (header, name) of the constants pyai._cuda exposes
HEADER_CONSTANTS = (("attention.cuh", "ATTENTION_MAX_DEPTH"), ("layer_norm.cuh", "LAYER_NORM_MAX_ROW_CHUNKS"),
                    ("binary_crossentropy.cuh", "BINARY_CROSSENTROPY_MAX_BLOCKS"),
                    ("bias_grad.cuh", "BIAS_GRAD_MAX_ROW_CHUNKS"))
CUDA_SRC = pathlib.Path(__file__).resolve().parents[2] / "cuda_src"
HOST_DTYPES = (np.float32, np.int64, np.uint16)   # what DeviceBuffer copies (bfloat16 travels as uint16)
POISON = 0xFF   # every byte of a new DeviceBuffer: NaN floats, so an output never written shows


# AddressSanitizer's own functions, where the process runs under it (its runtime preloaded)
ASAN_POISON = getattr(ctypes.CDLL(None), "__asan_poison_memory_region", None)
ASAN_UNPOISON = getattr(ctypes.CDLL(None), "__asan_unpoison_memory_region", None)


def guard(raw, start, stop):
    """Under AddressSanitizer, make the bytes of the array `raw` outside [start, stop)
    unaddressable while it lives, so a kernel reading or writing past its buffer is reported.
    They are made addressable again before numpy frees (or caches) the memory."""
    if ASAN_POISON is None:
        return
    base = raw.ctypes.data
    ASAN_POISON(ctypes.c_void_p(base), ctypes.c_size_t(start))
    ASAN_POISON(ctypes.c_void_p(base + stop), ctypes.c_size_t(raw.nbytes - stop))
    weakref.finalize(raw, ASAN_UNPOISON, ctypes.c_void_p(base), ctypes.c_size_t(raw.nbytes))


def is_int(value):
    return type(value) is not bool and isinstance(value, int)


def geometry_ints(name, geometry):
    """A ConvGeometry's ints as the C array the entry point reads (nanobind takes a sequence of
    exactly CONV_GEOMETRY_INTS ints for the std::array)."""
    size = header_constant("conv2d.cuh", "CONV_GEOMETRY_INTS")
    if not isinstance(geometry, (tuple, list)) or len(geometry) != size or not all(map(is_int, geometry)):
        raise TypeError(f"{name}: expected a sequence of {size} ints for the geometry, got {geometry!r}")
    return (ctypes.c_int * size)(*geometry)


class Emulator:
    """The kernels of one emulated build, callable with pointers (ints) as pyai._cuda's are."""

    def __init__(self, library_path):
        self.library = ctypes.CDLL(str(library_path))
        self.library.emu_message.restype = ctypes.c_char_p
        for name, argtypes in SIGNATURES.items():
            function = getattr(self.library, "w_" + name)
            function.argtypes, function.restype = argtypes, ctypes.c_int
            setattr(self, name, self._checked(name, function, argtypes))
        for name, (argtypes, restype) in QUERIES.items():
            function = getattr(self.library, "w_" + name)
            function.argtypes, function.restype = argtypes, restype
            setattr(self, name, self._query(name, function, argtypes))

    def _checked(self, name, function, argtypes):
        def call(*arguments):
            if len(arguments) != len(argtypes):
                raise TypeError(f"{name}: expected {len(argtypes)} arguments, got {len(arguments)}")
            for argument, kind in zip(arguments, argtypes):
                if kind is BOOL and type(argument) is not bool:
                    raise TypeError(f"{name}: expected a bool, got {argument!r}")
                if kind in (INT32, INT64, POINTER) and not is_int(argument):
                    raise TypeError(f"{name}: expected an int, got {argument!r}")
            arguments = [geometry_ints(name, argument) if kind is GEOMETRY else argument
                         for argument, kind in zip(arguments, argtypes)]
            if function(*arguments):
                raise RuntimeError(f"{name}: {self.library.emu_message().decode()}")
        return call

    def _query(self, name, function, argtypes):
        def call(*arguments):
            if len(arguments) != len(argtypes) or not all(map(is_int, arguments[1:])):
                raise TypeError(f"{name}: expected {len(argtypes)} arguments, ints after the first, got {arguments!r}")
            return function(*[geometry_ints(name, argument) if kind is GEOMETRY else argument
                              for argument, kind in zip(arguments, argtypes)])
        return call

    def float_to_bf16(self, x):
        """The bits of the emulation's __float2bfloat16(x)."""
        function = self.library.emu_float_to_bf16
        function.argtypes, function.restype = [FLOAT], ctypes.c_uint16
        return function(x)

    def set_reverse(self, reverse):
        """Run each block's threads in reverse order up to each barrier (default: lane order)."""
        self.library.emu_reverse(int(reverse))


class DeviceBuffer:
    """`nbytes` of 'device' memory: host memory aligned to 256 bytes as cudaMalloc's, poisoned."""

    def __init__(self, nbytes):
        self._raw = np.empty(nbytes + 256, np.uint8)
        start = (-self._raw.ctypes.data) % 256
        self._memory = self._raw[start:start + nbytes]
        self._memory[:] = POISON
        self.nbytes = nbytes
        self.ptr = self._memory.ctypes.data if nbytes else 0
        guard(self._raw, start, start + nbytes)

    def copy_from_host(self, array):
        if not (isinstance(array, np.ndarray) and array.flags.c_contiguous and array.dtype in HOST_DTYPES):
            raise TypeError("copy_from_host: expected a C-contiguous float32, int64 or uint16 numpy array")
        self._check_size("copy_from_host", array)
        self._memory[:] = array.reshape(-1).view(np.uint8)

    def copy_to_host(self, array):
        if not (isinstance(array, np.ndarray) and array.dtype in (np.float32, np.uint16) and array.flags.c_contiguous):
            raise TypeError("copy_to_host: expected a C-contiguous float32 or uint16 numpy array")
        self._check_size("copy_to_host", array)
        array.reshape(-1).view(np.uint8)[:] = self._memory

    def _check_size(self, method, array):
        if array.nbytes != self.nbytes:
            raise ValueError(f"{method}: the array holds {array.nbytes} bytes but the buffer holds {self.nbytes}")


def header_constant(header, name):
    """The value of `constexpr int NAME = value;` in cuda_src/HEADER."""
    text = (CUDA_SRC / header).read_text()
    return int(re.search(rf"constexpr int {name} = (\d+);", text).group(1))


def module(emulator):
    """A module that can stand in for pyai._cuda (in sys.modules) over `emulator`."""
    fake = types.ModuleType("pyai._cuda")
    for name in (*SIGNATURES, *QUERIES):
        setattr(fake, name, getattr(emulator, name))
    fake.DeviceBuffer = DeviceBuffer
    for header, name in HEADER_CONSTANTS:
        setattr(fake, name, header_constant(header, name))
    fake.runtime_status = lambda: None
    fake.synchronize = lambda: None
    return fake
