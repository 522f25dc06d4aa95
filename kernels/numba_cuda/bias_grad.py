"""The bias gradient on the GPU (numba.cuda): dy summed over every axis but the last.

    db[c] = sum over rows r of dy[r, c]        dy worked on as (rows, C), float32

Cost: rows * C adds; 4 * rows * C bytes read, 4 * C written. Memory-bound.

Fast version, in two passes without atomics, so the same bits on every run: a thread per
(run of PART_ROWS rows, column) sums its run down the column in float32 into `partials`
(neighbouring threads take neighbouring columns: a warp reads consecutive floats of a row);
then a thread per column adds its partials in order, in float64. A float32 partial holds at
most PART_ROWS terms. The conv gradients use it (conv2d_backward.py,
conv2d_transpose_backward.py); it is not in the backend's row as the op `bias_grad`, which
pyai.nn's Dense layers would then call on numpy arrays: a copy to the GPU and back for a sum
that numpy does on the host. The plain reference is the numba-cpu file's bias_grad_reference.
"""

import numpy as np
from numba import cuda, float32, float64

from pyai.kernels.numba_cpu.bias_grad import bias_grad_reference  # noqa: F401  (the reference)
from pyai.kernels.numba_cuda import THREADS, grid_size
from pyai.kernels.numba_cuda.buffers import device_array

PART_ROWS = 64   # rows a partial sums: 196 partials a column for a DCGAN layer's 64 x 14 x 14 rows


@cuda.jit
def partial_sums_kernel(rows, partials):
    count, columns = rows.shape
    for index in range(cuda.grid(1), partials.size, cuda.gridsize(1)):
        part, c = index // columns, index % columns
        total = float32(0.0)
        for r in range(part * PART_ROWS, min(count, (part + 1) * PART_ROWS)):
            total += rows[r, c]
        partials[part, c] = total


@cuda.jit
def column_sums_kernel(partials, sums):
    for c in range(cuda.grid(1), sums.size, cuda.gridsize(1)):
        total = float64(0.0)
        for part in range(partials.shape[0]):
            total += partials[part, c]
        sums[c] = total


# dy (..., C): float32 device array -> db (C,), a new device array
def bias_grad(dy):
    columns = dy.shape[dy.ndim - 1]   # not shape[-1]: the simulator's shapes refuse it
    rows = dy.reshape(dy.size // columns, columns)
    partials = device_array((-(-rows.shape[0] // PART_ROWS), columns), np.float32)
    partial_sums_kernel[grid_size(partials.size), THREADS](rows, partials)
    sums = device_array(columns, np.float32)
    column_sums_kernel[grid_size(columns), THREADS](partials, sums)
    return sums
