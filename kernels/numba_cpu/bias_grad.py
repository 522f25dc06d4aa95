"""The bias gradient of a dense or convolution layer: dy summed over every axis but the last.

    db[c] = sum over rows r of dy[r, c]        dy worked on as (rows, C), C-contiguous float32

Cost: rows * C adds; 4 * rows * C bytes read, 4 * C written. Memory-bound.

Fast version: BIAS_PARTS tasks (numba.prange) each sum a fixed run of rows into a float32
partial, a row at a time (a vector loop over the columns), and the partials are added in order in
float64, in the kernel (numpy's float64 sum of the float32 partials took longer than the kernel
itself on a GAN layer's (64, 1024): the whole op 14 -> 9 us): dy read once, the same bits on any
thread count, and each float32 partial a sum of at
most rows / BIAS_PARTS terms (numpy's float32 axis-0 sum adds all rows in turn into one float32
row). Arrays under PARALLEL_ELEMENTS take the kernel's serial compile (first_call.BySize).
Measured on one Intel Xeon (AVX-512, 2 cores), numpy's axis-0 sum / serial / parallel: (64, 1024)
0.0068 / 0.0044 / 0.0060 ms, (256, 512) 0.0137 / 0.0114 / 0.0131, (2048, 128) 0.052 / 0.018 /
0.017, (2048, 384) 0.18 / 0.11 / 0.063; (50176, 32) 1.08 ms by numpy, 0.15 parallel.
"""

import numba
import numpy as np

from pyai.kernels.numba_cpu.first_call import BySize

BIAS_PARTS = 16


def bias_grad_reference(dy):
    """float64 numpy."""
    return dy.astype(np.float64).reshape(-1, dy.shape[-1]).sum(axis=0)


PARALLEL_ELEMENTS = 1 << 18   # below this the serial compile is faster (measured: see above)


@numba.njit(parallel=True, cache=True)
def column_sums_kernel(rows, partials, sums):
    parts = partials.shape[0]
    count, columns = rows.shape
    for part in numba.prange(parts):
        partial = partials[part]
        partial[:] = 0.0
        for i in range(part * count // parts, (part + 1) * count // parts):
            row = rows[i]
            for j in range(columns):
                partial[j] += row[j]
    totals = np.zeros(columns)   # the partials added in order, in float64, a row at a time
    for part in range(parts):
        partial = partials[part]
        for j in range(columns):
            totals[j] += partial[j]
    for j in range(columns):
        sums[j] = totals[j]


column_sums_kernel = BySize(column_sums_kernel, elements=PARALLEL_ELEMENTS)


# dy (..., C): float32, C-contiguous -> db (C,) float32
def bias_grad(dy):
    rows = dy.reshape(-1, dy.shape[-1])
    partials = np.empty((BIAS_PARTS, rows.shape[1]), dtype=np.float32)
    sums = np.empty(rows.shape[1], dtype=np.float32)
    column_sums_kernel(rows, partials, sums)
    return sums
