"""sum(term(x[i], y[i])) over flat arrays, in float64, with the same bits on any thread count and
threading layer: parallel over fixed blocks of SUM_BLOCK elements, one partial sum each, added in
block order at the end (TBB hands chunks to threads dynamically, so a prange reduction into
per-thread sums would differ in its last bit from call to call). The losses' forward passes
(mse.py, binary_crossentropy.py) are this with their own `term`, a jitted scalar function,
inlined into a kernel of each loss's own (sum_kernel). One block (SUM_BLOCK elements or fewer) is
summed by a serial compile, on this thread.
'reassoc' lets LLVM keep several SIMD partial sums inside a block; no nnan/ninf, so NaN and inf
propagate.
"""

import numba
import numpy as np

from pyai.kernels.numba_cpu.first_call import BySize

SUM_FASTMATH = {"reassoc", "contract"}
SUM_BLOCK = 4096   # elements per partial sum


@numba.njit(inline="always")
def ordered_sum(term, x, y):
    blocks = -(-x.size // SUM_BLOCK)
    partial = np.empty(blocks)
    for block in numba.prange(blocks):
        total = 0.0
        for i in range(block * SUM_BLOCK, min(x.size, (block + 1) * SUM_BLOCK)):
            total += term(x[i], y[i])
        partial[block] = total
    total = 0.0
    for block in range(blocks):
        total += partial[block]
    return total


def sum_kernel(function):
    """A loss's sum, function(x, y) = ordered_sum(its term, x, y), as a kernel of its own: cached
    (a kernel taking the term as an argument is compiled again in every process: Numba's cache is
    keyed by argument types, and a jitted function's type is new in each), and one block or less
    summed by its serial compile, on this thread."""
    kernel = numba.njit(parallel=True, fastmath=SUM_FASTMATH, cache=True)(function)
    return BySize(kernel, sized=0, elements=SUM_BLOCK + 1)
