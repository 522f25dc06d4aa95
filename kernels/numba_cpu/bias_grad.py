"""The bias gradient of a dense or convolution layer: dy summed over every axis but the last.

    db[c] = sum over rows r of dy[r, c]        dy worked on as (rows, C), C-contiguous float32

Cost: rows * C adds; 4 * rows * C bytes read, 4 * C written. Memory-bound.

Fast version: up to BIAS_PARTS tasks (numba.prange), as many as give each PART_ROWS rows or
more (fixed by the row count, never by the threads), each sum a run of rows into a float32
partial: four vectors of columns at a time summed down the run's rows in registers (a column's
terms in row order), or for one column, the run's floats, which lie end to end, four vectors at a
time and their lanes summed. The partials are added in order in float64, in the kernel (numpy's
float64 sum of the float32 partials took longer than the kernel itself on a GAN layer's (64,
1024): the whole op 14 -> 9 us): dy read once, the same bits on any thread count, and each
float32 partial a sum of at most rows / BIAS_PARTS terms (numpy's float32 axis-0 sum adds all
rows in turn into one float32 row). Arrays under PARALLEL_ELEMENTS take the kernel's serial
compile (first_call.BySize).
Measured on one Intel Xeon (AVX-512, 2 cores), numpy's axis-0 sum / serial / parallel: (64, 1024)
0.0068 / 0.0044 / 0.0060 ms, (256, 512) 0.0137 / 0.0114 / 0.0131, (2048, 128) 0.052 / 0.018 /
0.017, (2048, 384) 0.18 / 0.11 / 0.063; (50176, 32) 1.08 ms by numpy, 0.15 parallel. A loop of a
float a column, partials in memory, had taken 147 us for a one-channel convolution's (50176, 1)
(one float a row, 12 cycles a float) and 42-45 us for (64, 6272) (16 runs of 4 rows, then 16
partials of 6272 added); in registers: 2.6 and 28-30 us, (50176, 32) 90-114 -> 65, (25088, 64)
86-88 -> 41-42, (6272, 128) 45-50 -> 31-32 (AMD EPYC Zen 5, 2 cores, old and new in turn, best of 200).
"""

import numba
import numpy as np

from pyai.kernels.numba_cpu.first_call import BySize
from pyai.kernels.numba_cpu.simd import WIDTH, add, lane_sum, load, store, zeros

BIAS_PARTS = 16   # partial sums at most ...
PART_ROWS = 32    # ... of at least this many rows each


def bias_grad_reference(dy):
    """float64 numpy."""
    return dy.astype(np.float64).reshape(-1, dy.shape[-1]).sum(axis=0)


PARALLEL_ELEMENTS = 1 << 18   # below this the serial compile is faster (measured: see above)


@numba.njit(inline="always", cache=True)
def add_rows(flat, first, end, columns, partial):
    """partial = the sum of rows first .. end - 1 of flat (rows of `columns` floats), each column
    in row order: four vectors of columns at a time summed down the rows in registers, then
    single vectors, then the rest a float at a time."""
    whole = columns // WIDTH * WIDTH
    j = 0
    while j + 4 * WIDTH <= whole:
        s0, s1, s2, s3 = zeros(), zeros(), zeros(), zeros()
        for i in range(first, end):
            at = i * columns + j
            s0, s1 = add(s0, load(flat, at)), add(s1, load(flat, at + WIDTH))
            s2, s3 = add(s2, load(flat, at + 2 * WIDTH)), add(s3, load(flat, at + 3 * WIDTH))
        store(partial, j, s0)
        store(partial, j + WIDTH, s1)
        store(partial, j + 2 * WIDTH, s2)
        store(partial, j + 3 * WIDTH, s3)
        j += 4 * WIDTH
    while j < whole:
        s0 = zeros()
        for i in range(first, end):
            s0 = add(s0, load(flat, i * columns + j))
        store(partial, j, s0)
        j += WIDTH
    for j in range(whole, columns):
        total = np.float32(0.0)
        for i in range(first, end):
            total += flat[i * columns + j]
        partial[j] = total


@numba.njit(inline="always", cache=True)
def run_sum(flat, first, end):
    """The sum of flat[first:end]: four vectors at a time in four chains, their lanes summed,
    then the rest a float at a time."""
    s0, s1, s2, s3 = zeros(), zeros(), zeros(), zeros()
    i = first
    while i + 4 * WIDTH <= end:
        s0, s1 = add(s0, load(flat, i)), add(s1, load(flat, i + WIDTH))
        s2, s3 = add(s2, load(flat, i + 2 * WIDTH)), add(s3, load(flat, i + 3 * WIDTH))
        i += 4 * WIDTH
    total = lane_sum(add(add(s0, s1), add(s2, s3)))
    for j in range(i, end):
        total += flat[j]
    return total


@numba.njit(parallel=True, cache=True)
def column_sums_kernel(rows, partials, sums):
    parts = partials.shape[0]
    count, columns = rows.shape
    flat = rows.reshape(-1)
    for part in numba.prange(parts):
        partial = partials[part]
        first, end = part * count // parts, (part + 1) * count // parts
        if columns == 1:    # a column of floats that lie end to end
            partial[0] = run_sum(flat, first, end)
        else:
            add_rows(flat, first, end, columns, partial)
    totals = np.zeros(columns)   # the partials added in order, in float64, a row at a time
    for part in range(parts):
        partial = partials[part]
        for j in range(columns):
            totals[j] += partial[j]
    for j in range(columns):
        sums[j] = totals[j]


column_sums_kernel = BySize(column_sums_kernel, elements=PARALLEL_ELEMENTS)


def partial_count(rows):
    """The runs of rows summed apart: fixed by the row count, never by the threads."""
    return min(BIAS_PARTS, max(1, rows // PART_ROWS))


# dy (..., C): float32, C-contiguous -> db (C,) float32
def bias_grad(dy):
    rows = dy.reshape(-1, dy.shape[-1])
    partials = np.empty((partial_count(len(rows)), rows.shape[1]), dtype=np.float32)
    sums = np.empty(rows.shape[1], dtype=np.float32)
    column_sums_kernel(rows, partials, sums)
    return sums
