"""A dense layer's weight and bias gradient and its Adam step, in one pass, float32, in place.

    G = [x^T dy; 1^T dy]    (in + 1, out): the weight gradient, then the bias gradient (dy's
                            column sums), written into grad
    then adam.py's step on P = [W; b] with G and its moments m, v

x is (batch, in), dy (batch, out). P, G, m and v are the layer's runs of flat buffers
(pyai.nn.flat lays a Dense layer's bias right after its weight), so any rows r0..r1 of each are one
contiguous run. The floats are those of matmul.weight_and_bias_grad, then adam.adam_update, bit
for bit: G's tiles are the product's tiles, and the step is Adam's float32 operations in Keras's
order, without contraction.
Cost: 2 batch (in + 1) out FLOPs; Adam's bytes, 28 a parameter, less G's trip to memory and
back: G is read while it is in L2, not after the whole product.

Fast version: each thread takes a run of G's rows (or, where G has few rows, of its columns). It
packs its columns of dy once (pack_b: batch <= DEEPEST, one slice, as the product's); then, a
block of ROW_BLOCK_BYTES of G at a time, packs the block's rows of x^T (pack_a, G's row of ones
last), multiplies them by its slivers of dy (matmul.multiply_block: the product's tile loop) and
steps the block's parameters at once, while the block of G is in L2: one contiguous run of each of
P, G, m, v (a run a row, for a part of the columns), read as long streams, WIDTH floats at a time
(adam_run). Stepping each tile as it was made lost to the two passes (12 rows x
128 bytes of P, m and v a tile: 36 short streams the prefetchers do not follow; a 64 x 1024 x
784 layer on an AMD EPYC Zen 4, 2 threads, m and v cold: 2.6-3.0 ms against 1.2). A block at a time
(benchmarks/dense_adam_vs_two_passes.py, medians, the two in turn, m and v cold; AMD EPYC Zen 4,
2 threads), the GAN's layers (batch x in x out) 64 x 100 x 256 1.24x faster than the two passes,
64 x 256 x 512 1.29x, 64 x 512 x 1024 1.05x, 64 x 1024 x 784 1.01x, 128 x 784 x 512 1.11x, 128 x
512 x 256 1.12x. The step itself is not overlapped with the product: it waits for its block
(asking for the next block's P, m and v during the product, into L1 or L2, a few column slivers
at a time or all at once, gained nothing).
A batch deeper than DEEPEST (several slices of K, each of which would meet every block) takes the
two passes.
"""

import numba
import numpy as np
from numba import float32, int64, void

from pyai.kernels.common import adam_step_size
from pyai.kernels.numba_cpu.adam import adam_update, adam_update_reference
from pyai.kernels.numba_cpu.epilogue import NONE
from pyai.kernels.numba_cpu.first_call import CompiledOnFirstCall, renamed
from pyai.kernels.numba_cpu.matmul import (DEEPEST, edge_tile, multiply_block, pack_a, pack_b, packed_rows,
                                           thread_count, weight_and_bias_grad)
from pyai.kernels.numba_cpu.matmul_micro import MR, NO_BIAS, NR
from pyai.kernels.numba_cpu.simd import (WIDTH, add, aligned_floats, divide, load, multiply, splat, square_root,
                                         store, subtract)

ROW_BLOCK_BYTES = 128 << 10   # of G stepped at once: in L2 beside the packed dy and the block of x^T


def dense_adam_reference(x, dy, param, m, v, lr, beta_1, beta_2, epsilon, step):
    """The plain version, in the arrays' own precision: G by numpy, then adam.py's reference
    step on param, m and v (flat); returns G."""
    grad = np.concatenate([x.T @ dy, dy.sum(axis=0, keepdims=True)]).ravel()
    adam_update_reference(param, grad, m, v, lr, beta_1, beta_2, epsilon, step)
    return grad


def adam_run(param, grad, m, v, start, stop, alpha, one_minus_beta_1, one_minus_beta_2, epsilon):
    """adam.adam_update_kernel's step on [start, stop) of the flat arrays, WIDTH floats at a time,
    the last few one at a time: the same float32 operations in the same order, so the same floats."""
    alphas, betas_1, betas_2, epsilons = splat(alpha), splat(one_minus_beta_1), splat(one_minus_beta_2), splat(epsilon)
    i = start
    while i + WIDTH <= stop:
        g, old_m, old_v = load(grad, i), load(m, i), load(v, i)
        new_m = add(old_m, multiply(subtract(g, old_m), betas_1))
        new_v = add(old_v, multiply(subtract(multiply(g, g), old_v), betas_2))
        store(m, i, new_m)
        store(v, i, new_v)
        store(param, i, subtract(load(param, i), divide(multiply(new_m, alphas), add(square_root(new_v), epsilons))))
        i += WIDTH
    for j in range(i, stop):
        g = grad[j]
        m[j] += (g - m[j]) * one_minus_beta_1
        v[j] += (g * g - v[j]) * one_minus_beta_2
        param[j] -= m[j] * alpha / (np.sqrt(v[j]) + epsilon)


def dense_adam_kernel(x, dy, grad, param, m, v, alpha, one_minus_beta_1, one_minus_beta_2, epsilon, row_parts,
                      col_parts):
    """G cut into row_parts x col_parts rectangles of whole slivers, one a thread (see above)."""
    batch, inputs = x.shape
    outputs = dy.shape[1]
    rows = inputs + 1
    row_slivers = -(-rows // MR)
    col_slivers = -(-outputs // NR)
    sliver_rows = packed_rows(batch)
    a = x.reshape(-1)
    gradient = grad.reshape((rows, outputs))
    for part in numba.prange(row_parts * col_parts):
        row_part, col_part = part // col_parts, part % col_parts
        first, last = row_part * row_slivers // row_parts, (row_part + 1) * row_slivers // row_parts
        col0 = col_part * col_slivers // col_parts * NR
        cols = min(outputs, (col_part + 1) * col_slivers // col_parts * NR) - col0
        block = max(1, ROW_BLOCK_BYTES // (4 * MR * cols))   # slivers of G a block
        b_packed = aligned_floats(-(-cols // NR) * sliver_rows * NR)
        pack_b(dy.reshape(-1), outputs, 1, 0, batch, col0, cols, b_packed.reshape((-(-cols // NR), sliver_rows, NR)))
        a_buffer = aligned_floats(block * batch * MR)
        edge = edge_tile()
        for s in range(first, last, block):
            row0 = s * MR
            block_rows = min(rows, min(last, s + block) * MR) - row0
            own = max(0, min(block_rows, inputs - row0))   # the block's rows of x^T; then the row of ones
            a_packed = a_buffer[:-(-block_rows // MR) * batch * MR].reshape((-(-block_rows // MR), batch, MR))
            pack_a(a, 1, inputs, row0, own, 0, batch, a_packed, own < block_rows)
            multiply_block(a_packed, a, 0, 0, 0, 0, b_packed, 0, sliver_rows * NR, NR, gradient, row0, block_rows,
                           col0, cols, True, True, NO_BIAS, False, NONE, np.float32(0), edge)
            runs = 1 if cols == outputs else block_rows   # the block's rows are one run, or a run each
            length = block_rows * outputs // runs if cols == outputs else cols
            for run in range(runs):
                start = (row0 + run) * outputs + col0
                adam_run(param, grad, m, v, start, start + length, alpha, one_minus_beta_1, one_minus_beta_2,
                         epsilon)


FLAT = float32[::1]
adam_run = numba.njit(void(FLAT, FLAT, FLAT, FLAT, int64, int64, float32, float32, float32, float32),
                      error_model="numpy", cache=True)(adam_run)
KERNEL = void(float32[:, ::1], float32[:, ::1], FLAT, FLAT, FLAT, FLAT, float32, float32, float32, float32, int64,
              int64)
# a small layer (one part: matmul.thread_count's) runs a serial compile: no parallel region to start
# (64 x 100 x 256, the GAN's first layer: 0.72x the two passes' time as a parallel region of one part)
dense_adam_one_thread = CompiledOnFirstCall(numba.njit(error_model="numpy", cache=True)(
    renamed(dense_adam_kernel, "dense_adam_one_thread")), KERNEL)
dense_adam_kernel = CompiledOnFirstCall(numba.njit(parallel=True, error_model="numpy", cache=True)(dense_adam_kernel),
                                        KERNEL)


# x (batch, in), dy (batch, out): C-contiguous float32; grad, param, m, v: contiguous float32 runs
# of (in + 1) out floats each, [weight; bias] row-major; param, m, v stepped in place, grad written
def dense_adam_update(x, dy, grad, param, m, v, lr, beta_1, beta_2, epsilon, step):
    batch, inputs = x.shape
    outputs = dy.shape[1]
    if batch > DEEPEST or outputs == 1:   # one output: the product's gemv, not 1 / NR of a tile
        weight_and_bias_grad(x, dy, out=grad.reshape((inputs + 1, outputs)))
        adam_update(param, grad, m, v, lr, beta_1, beta_2, epsilon, step)
        return
    threads = thread_count(inputs + 1, outputs, batch)
    row_slivers, col_slivers = -(-(inputs + 1) // MR), -(-outputs // NR)
    # rows where each thread gets several slivers of them; else columns (a Dense 100 -> 6272:
    # 9 row slivers, 5 and 4, where 196 column slivers split 98 and 98)
    grid = (threads, 1) if row_slivers >= 8 * threads else (1, min(threads, col_slivers))
    kernel = dense_adam_one_thread if grid == (1, 1) else dense_adam_kernel
    kernel(x, dy, grad, param, m, v, adam_step_size(lr, beta_1, beta_2, step), np.float32(1 - beta_1),
           np.float32(1 - beta_2), np.float32(epsilon), *grid)
