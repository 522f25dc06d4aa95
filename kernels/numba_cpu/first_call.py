"""Kernels compiled for one signature on their first call, not when their file is imported.

`numba.njit(signature)` compiles as soon as the decorator runs, so importing a file compiles every
kernel declared with its types, whether or not the program calls it: importing matmul.py would
compile the blocked loop for many rows (gemm) in a program whose products all have a few rows.
CompiledOnFirstCall does what the decorator does, compile that one signature and then refuse any
other (arguments are converted to it, a writable array to a read-only one), at the first call:

    gemm = CompiledOnFirstCall(numba.njit(parallel=True, cache=True)(gemm), signature, slp_vectorize)

`settings` is a context manager held around the compile (simd.slp_vectorize), under Numba's
compiler lock, so that no other thread's compile sees the setting. Python calls it; a kernel calls
its `compiled()` dispatcher, taken when the kernel's file is imported.

BySize(kernel) pairs a parallel=True kernel over flat arrays with a serial compile of it (its
prange loops run as plain ranges), compiled on its first call too, which runs where an array has
fewer than PARALLEL_ELEMENTS elements (fewer for kernels that spend more per element): there
waking the other threads costs more than they save (2048 elements: leaky ReLU's gradient 6.2 ->
0.4 us, Adam's step 7.5 -> 1.3 us; at 32768 Adam's 17.0 and 14.4 us, measured on an Intel Xeon,
family 6 model 167, 2 cores), and a serial compile
takes a third of a parallel one's time (0.1 CPU s, not 0.3: a parallel kernel is three compiled
layers), which is what the first run of a small model waits for.
"""

import contextlib
import types

import numba
from numba.core.compiler_lock import global_compiler_lock

PARALLEL_ELEMENTS = 32768   # an array this large or larger is worked on by every thread
# ... or this large, for kernels of an exp or a divide an element: two threads pay from 4096
# elements on (the logits' BCE gradient on an Intel Xeon, family 6 model 167: 2048 elements
# 14.5 us on two threads, 13.3 on one; 8192: 34 and 52)
COSTLY_ELEMENTS = 4096


class CompiledOnFirstCall:
    def __init__(self, dispatcher, signature, settings=contextlib.nullcontext):
        self.dispatcher, self.signature, self.settings = dispatcher, signature, settings
        self.ready = False
        self.__doc__ = dispatcher.py_func.__doc__

    def compile(self):
        """Compile the signature (or load it from Numba's cache) unless that is done."""
        if self.ready:
            return
        with global_compiler_lock, self.settings():
            if not self.ready:
                self.dispatcher.compile(self.signature)
                self.dispatcher.disable_compile()
                self.ready = True

    def compiled(self):
        """The dispatcher, compiled: what a kernel that calls this one uses (Numba calls
        dispatchers, not this object)."""
        self.compile()
        return self.dispatcher

    def __call__(self, *args):
        if not self.ready:
            self.compile()
        return self.dispatcher(*args)


def renamed(function, name):
    """A copy of `function` named `name`: Numba keys its cache by the function's name, not by the
    options it was compiled with, so a second compile of one function (serial beside parallel)
    needs a name of its own."""
    copy = types.FunctionType(function.__code__, function.__globals__, name, function.__defaults__,
                              function.__closure__)
    copy.__qualname__ = name
    return copy


class BySize:
    """kernel(*args), or its serial compile where args[sized] has fewer than `elements` elements
    (where two threads start to pay: lower for kernels that spend more per element); the serial
    one has the kernel's other options and a name of its own (Numba's cache key ignores
    parallel=True)."""

    def __init__(self, kernel, sized=0, elements=PARALLEL_ELEMENTS):
        options = {name: value for name, value in kernel.targetoptions.items()
                   if name not in ("parallel", "nopython") and value is not None}
        name = f"{kernel.py_func.__name__}_one_thread"
        self.parallel, self.sized, self.elements = kernel, sized, elements
        self.serial = numba.njit(cache=True, **options)(renamed(kernel.py_func, name))
        self.__doc__ = kernel.py_func.__doc__

    def __call__(self, *args):
        return (self.serial if args[self.sized].size < self.elements else self.parallel)(*args)
