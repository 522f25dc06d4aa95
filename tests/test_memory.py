"""The CPU kernels' output arrays (kernels/numba_cpu/memory.py): large ones from blocks reused once
every view of an array is gone, never while one is alive; aligned; within the cache's cap."""

import sys
import threading

import numpy as np
import pytest

from pyai.kernels.numba_cpu import memory

LARGE = (512, 1024)   # 2 MiB of float32, past POOLED_BYTES


def span(array):
    """(first byte, one past the last) of an array's memory."""
    start = array.ctypes.data
    return start, start + array.nbytes


def test_a_freed_block_is_reused_only_once_no_view_holds_it():
    memory.release()
    first = memory.empty(LARGE)
    first[:] = 1.0
    view = first[100:]
    first_address = first.ctypes.data
    del first
    second = memory.empty(LARGE)           # the view still holds the first block
    second_address = second.ctypes.data
    assert span(second)[0] >= span(view)[1] or span(second)[1] <= span(view)[0]
    second[:] = 2.0
    assert (view == 1.0).all()
    del view, second                       # both blocks free, the second freed last
    third, fourth = memory.empty(LARGE), memory.empty(LARGE)
    assert (third.ctypes.data, fourth.ctypes.data) == (second_address, first_address)


def test_arrays_are_aligned_writable_c_contiguous_of_the_shape_and_dtype():
    for shape, dtype in [(LARGE, np.float32), ((3, 70001), np.float32), ((300000,), np.float64), ((5, 7), np.float32),
                         ((1, 1), np.float32), ((13, 31), np.float32), ((4, 3, 5), np.float32), ((9,), np.float32),
                         ((6, 5), np.float64)]:
        array = memory.empty(shape, dtype)
        assert array.shape == shape and array.dtype == dtype
        assert array.flags.c_contiguous and array.flags.writeable
        assert array.ctypes.data % memory.ALIGNMENT == 0, shape
        array[...] = 2
        assert (array == 2).all()


def test_live_arrays_never_overlap_across_threads():
    """Threads allocating, filling and dropping arrays of a few sizes at once: every array keeps
    the values its thread wrote (no block is handed out twice)."""
    memory.release()
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        kept = []
        for i in range(200):
            rows = int(rng.integers(200, 600))
            array = memory.empty((rows, 1024))
            array.fill(seed * 1000 + i)
            kept.append((array, seed * 1000 + i))
            if len(kept) > 3:
                old, value = kept.pop(int(rng.integers(0, len(kept))))
                if not (old == value).all():
                    errors.append((seed, value))
        for old, value in kept:
            if not (old == value).all():
                errors.append((seed, value))

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_the_cache_keeps_at_most_its_cap_and_release_empties_it(monkeypatch):
    memory.release()
    monkeypatch.setattr(memory, "CACHE_BYTES", 5 << 20)
    arrays = [memory.empty(LARGE) for _ in range(6)]   # 6 x 2 MiB freed at once
    del arrays
    assert 0 < memory.cached_bytes() <= 5 << 20
    memory.release()
    assert memory.cached_bytes() == 0


@pytest.mark.parametrize("shape", [LARGE, (64, 100)])
def test_small_and_large_arrays_are_plain_numpy_arrays_to_the_ops(shape):
    from pyai import ops
    x = memory.empty(shape)
    x[...] = np.linspace(-2, 2, x.size, dtype=np.float32).reshape(shape)
    np.testing.assert_array_equal(ops.relu(x), np.maximum(x, 0))


def test_an_array_outliving_the_module_globals_gives_its_block_back_quietly(monkeypatch):
    """At exit Python may clear this module's globals before the last array goes (an array a
    compiled function still holds): the lease gives its block back all the same, no error
    printed as "Exception ignored"."""
    memory.release()
    errors = []
    monkeypatch.setattr(sys, "unraisablehook", errors.append)
    array = memory.empty(LARGE)
    returned = memory._returned
    monkeypatch.setattr(memory, "_returned", None)   # as the module's teardown leaves it
    del array
    assert not errors and len(returned) == 1


def test_scratch_is_the_threads_kept_array_grown_as_needed_and_dropped_by_release():
    memory.release()
    small = memory.scratch(1000)
    assert small.dtype == np.float32 and small.size >= 1000 and small.ctypes.data % memory.ALIGNMENT == 0
    assert memory.scratch(10) is small and memory.scratch(small.size) is small
    grown = memory.scratch(small.size + 1)
    assert grown is not small and grown.size >= small.size + 1 and memory.scratch(5) is grown
    others = []
    worker = threading.Thread(target=lambda: others.append(memory.scratch(10)))
    worker.start()
    worker.join()
    assert others[0] is not grown                       # a thread of its own, an array of its own
    huge = memory.scratch(memory.KEPT_BYTES // 4 + 1)  # past what a thread keeps: not kept
    assert huge.size == memory.KEPT_BYTES // 4 + 1 and memory.scratch(5) is grown
    memory.release()
    assert memory.scratch(5) is not grown
