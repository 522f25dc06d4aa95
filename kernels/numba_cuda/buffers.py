"""Device memory for the numba-cuda kernels, reused between op calls.

An op on numpy arrays copies its inputs to the GPU and allocates its outputs and temporaries
there; a cudaMalloc, and a cudaFree that waits for the whole device, per array per call cost more
than a small kernel. Inside `pooled_call()` (pyai/_backends/numba_cuda.py wraps every op in
one), `device_array` and `copy_to_device` take arrays from POOL, keyed by shape and dtype, and
the call gives them all back when it ends, except the results it hands to the caller on the GPU
(`PooledCall.keep`): those are the caller's from then on and never pooled. An array taken in a
call stays out of the pool until that call ends, so two live arrays (two results of one op,
both operands of a product) never share memory.

Reuse needs no wait: the kernels launch on the default stream and the copies are synchronous on
it, so the next user's copy or kernel runs after every earlier kernel that used the array. (Work
that a caller queues on other streams with these results is the caller's to order, as ever.)
Outside a call (a kernel function called directly) `device_array` allocates as numba.cuda does.
"""

import contextlib
import contextvars
import threading

import numpy as np
from numba import cuda


def shape_tuple(shape):
    """numba's shapes: an int or a sequence of ints."""
    return (int(shape),) if np.ndim(shape) == 0 else tuple(int(size) for size in shape)


class BufferPool:
    """Device arrays kept between calls by (shape, dtype); at most MAX_BYTES of them."""

    MAX_BYTES = 1 << 30

    def __init__(self):
        self.free = {}   # (shape, dtype.str) -> [device array]
        self.cached_bytes = 0
        self.lock = threading.Lock()

    def take(self, shape, dtype):
        key = (shape_tuple(shape), np.dtype(dtype).str)
        with self.lock:
            arrays = self.free.get(key)
            if arrays:
                array = arrays.pop()
                self.cached_bytes -= array.nbytes
                return array
        return self.allocate(shape, dtype)

    def allocate(self, shape, dtype):
        return cuda.device_array(shape, dtype)

    def give(self, arrays):
        with self.lock:
            for array in arrays:
                if self.cached_bytes + array.nbytes <= self.MAX_BYTES:
                    self.free.setdefault((shape_tuple(array.shape), array.dtype.str), []).append(array)
                    self.cached_bytes += array.nbytes

    def clear(self):
        with self.lock:
            self.free.clear()
            self.cached_bytes = 0


POOL = BufferPool()
current_call = contextvars.ContextVar("pyai_numba_cuda_call", default=None)


class PooledCall:
    """The arrays one op call took from the pool, and which of them it hands to the caller."""

    def __init__(self):
        self.taken = []
        self.kept = set()   # ids of the arrays returned on the GPU

    def keep(self, results):
        """`results` (a device array, or a tuple of results) are the caller's: never pooled."""
        for result in results if isinstance(results, tuple) else (results,):
            self.kept.add(id(result))
        return results


@contextlib.contextmanager
def pooled_call():
    call = PooledCall()
    token = current_call.set(call)
    try:
        yield call
    finally:
        current_call.reset(token)
        POOL.give([array for array in call.taken if id(array) not in call.kept])


def device_array(shape, dtype):
    """An uninitialised device array: from the pool inside a call, else a new one."""
    call = current_call.get()
    if call is None:
        return cuda.device_array(shape, dtype)
    array = POOL.take(shape, dtype)
    call.taken.append(array)
    return array


def copy_to_device(array):
    """A numpy array copied into a device array of its shape and dtype (from the pool in a call);
    a 0-d array stays 0-d (np.ascontiguousarray would make it 1-d)."""
    array = np.asarray(array, order="C")
    on_gpu = device_array(array.shape, array.dtype)
    on_gpu.copy_to_device(array)
    return on_gpu
