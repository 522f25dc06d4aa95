"""The kernels' output arrays, from memory kept for reuse: a cache of freed blocks.

glibc's malloc serves a block over its mmap threshold (128 KB at first, then the size of the
largest block freed so far, up to 32 MB) with fresh pages from the OS, each faulted in and zeroed
on its first touch (1-2.5 us a 4 KB page on the VMs measured), and hands the block back on free;
it also trims its heap's free top past twice that threshold. So a training step that makes the
same few-MB arrays every step pays for their pages every step or not, as the history of the
process decides: a GPT step (2,048 tokens) took a median of 79 ms with ~200 page faults a step and
90 ms with ~5,500, the same kernels, only the largest block freed before differing.
Here an array of at least POOLED_BYTES is cut from a block of this module's; once the array and
every view of it are gone, the block goes back to a list of free blocks, and the next array takes
the most recently freed block that fits (at most twice its size), its pages in memory and likely
in cache, as malloc reuses its last freed chunk. The list keeps at most CACHE_BYTES (the least
recently freed dropped first); `release()` empties it. Smaller arrays come from malloc as ever
(float32 ones through simd.aligned_floats, each starting a cache line): its heap serves them
once a block of their size has been freed (a GAN step's 100-400 KB arrays: no fault a step
either way; taking them here cost it ~2% in Python).
"""

import math
import os
import threading

import numpy as np

from pyai.kernels.numba_cpu.simd import aligned_floats, aligned_matrix

POOLED_BYTES = 512 << 10   # from 512 KB (a GPT head's 2048 x 103 logits, 0.8 MB, faulted every step)
CACHE_BYTES = min(1 << 30, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 16)   # of free blocks
ALIGNMENT = 64        # bytes: an array starts on a cache line
GRANULE = 64 << 10    # block sizes are rounded up to this
SEARCHED = 64         # free blocks looked at, from the most recently freed

_free = []         # free blocks, the least recently freed first
_cached = [0]      # bytes in _free
_returned = []     # blocks given back by _Lease.__del__, not yet in _free
_lock = threading.Lock()             # around _free and _cached (ops may run in several threads)
KEPT_BYTES = 64 << 20   # the most a thread keeps for scratch
_kept = threading.local()            # a thread's scratch array (.floats)


class _Lease:
    """The owner of an array's memory (the array's base): gives its block back when the last
    view of the array goes. list.append is atomic, so __del__, which may run in any thread at any
    allocation, touches nothing else. A block is (uint8 array, its first 64-byte aligned address)."""

    __slots__ = ("block", "__array_interface__")

    def __init__(self, block, shape, typestr):
        self.block = block
        self.__array_interface__ = {"data": (block[1], False), "shape": shape, "typestr": typestr, "version": 3}

    def __del__(self, returned=_returned):   # bound here: at exit the module's globals may go first
        returned.append(self.block)


def _take_returned():
    """Move the blocks given back into _free, then drop the least recently freed past
    CACHE_BYTES (under _lock)."""
    while _returned:
        block = _returned.pop(0)
        _free.append(block)
        _cached[0] += block[0].size
    while _cached[0] > CACHE_BYTES:
        _cached[0] -= _free.pop(0)[0].size


def _take_free(size):
    """The most recently freed block of `size` to twice that, if one is free (under _lock): the
    last freed is the likeliest to be in cache still, as malloc's reuse of its last freed
    chunk is."""
    for i in range(len(_free) - 1, max(-1, len(_free) - 1 - SEARCHED), -1):
        if size <= _free[i][0].size <= 2 * size:
            _cached[0] -= _free[i][0].size
            return _free.pop(i)
    return None


def empty(shape, dtype=np.float32):
    """An uninitialized C-contiguous array of shape (a tuple of ints), starting a cache line (a
    512-bit store to a row of whole lines never straddles two), from a cached block when large."""
    if dtype is np.float32 and len(shape) == 2 and 4 * shape[0] * shape[1] < POOLED_BYTES:
        # a kernel's output, most often: made 2-d in the compiled call, as few Python steps as
        # can be, since right after a kernel each costs about a microsecond (13 -> 8-9 us there:
        # 64 x 512, Intel Xeon, family 6 model 167)
        return aligned_matrix(shape[0], shape[1])
    count = math.prod(shape)
    if dtype is np.float32 and 4 * count < POOLED_BYTES:
        return aligned_floats(count).reshape(shape)   # 3.6 us, not 8: no ndarray.ctypes
    dtype = np.dtype(dtype)
    nbytes = count * dtype.itemsize
    if nbytes < POOLED_BYTES:
        raw = np.empty(nbytes + ALIGNMENT, np.uint8)
        skip = -raw.ctypes.data % ALIGNMENT
        return raw[skip:skip + nbytes].view(dtype).reshape(shape)
    size = -(-(nbytes + ALIGNMENT) // GRANULE) * GRANULE
    with _lock:
        if _returned:
            _take_returned()
        block = _take_free(size)
    if block is None:
        raw = np.empty(size, np.uint8)
        block = (raw, raw.ctypes.data + -raw.ctypes.data % ALIGNMENT)
    return np.asarray(_Lease(block, tuple(shape), dtype.str))


def scratch(floats):
    """A float32 array of at least `floats` floats, its contents undefined, for a kernel to work
    in during one call and leave: this thread's kept array, made anew only when a call needs more
    (up to KEPT_BYTES; past that, an array of the cache's, as empty). The same memory call after
    call, in cache and never faulted in again, with none of empty's bookkeeping (a few us a call):
    the matmul's few-rows workspaces, 1-3 MB each, taken from empty had cost the Dense GAN's step
    2% and the GPT's 1%, its median over 40 and 12 alternating rounds (Intel Xeon, family 6
    model 167). The array is only lent: a caller is done with it before it, or anything in its
    thread, asks again."""
    kept = getattr(_kept, "floats", None)
    if kept is not None and kept.size >= floats:
        return kept
    if 4 * floats > KEPT_BYTES:
        return empty((floats,))
    _kept.floats = aligned_floats(floats)
    return _kept.floats


def empty_like(x):
    return empty(x.shape, x.dtype.type)


def release():
    """Drop every cached free block and this thread's scratch array (their memory goes back to
    malloc, and so to the OS)."""
    _kept.floats = None
    with _lock:
        _take_returned()
        _free.clear()
        _cached[0] = 0


def cached_bytes():
    """Bytes held in free blocks."""
    with _lock:
        _take_returned()
        return _cached[0]
