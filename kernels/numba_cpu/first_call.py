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
"""

import contextlib
import types

from numba.core.compiler_lock import global_compiler_lock


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
