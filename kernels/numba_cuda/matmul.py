"""Matrix multiply with a fused epilogue on the GPU (numba.cuda):

    C = activation(op(A) @ op(B) + bias)

Shapes: op(A) is (M, K), op(B) is (K, N), bias is (N,), C is (M, N), all float32 device arrays;
op transposes when asked. Cost: 2 M N K FLOPs; at best 4 (M K + K N + M N) bytes from memory,
so large products are compute-bound (4096^3: 137 GFLOP over 200 MB).

Fast version, the shared-memory SGEMM with register blocking (CUTLASS's SIMT kernels, S. Boehm's
"How to optimize a CUDA matmul"):
  a block of 256 threads computes a BLOCK x BLOCK = 128 x 128 tile of C, a thread 8 x 8 of it;
  for each TILE_K = 8 deep slice of K:
    the block copies the slice of A's 128 rows and of B's 128 columns into shared memory,
    k-major, zero past the edges of the matrices;
    for each k of the slice a thread reads 8 values of A and 8 of B from shared memory and does
    64 FMAs into its registers: 4 FMAs per shared load, where one output per thread does 1/2;
  while a slice is multiplied, the next one is already on its way from global memory into
  registers (prefetch), so load latency hides behind the FMAs.
After the last slice: bias and activation on the registers, one store per element of C.
A thread's 8 rows and 8 columns are strided by 16 (rows ty + 16 i, columns tx + 16 j): 16
neighbouring threads read 16 consecutive floats of the B tile (no bank conflicts) and write 16
consecutive floats of C (coalesced). Each operand is read along its contiguous axis whichever
way it is stored, so transposes cost nothing: one kernel per (transpose_a, transpose_b, bias,
activation) is compiled on first use with those choices as constants.
The shared tiles are flat arrays read at a running offset, and the thread index is masked to
its range, so that LLVM can drop numba's negative-index checks: the inner loop compiles to 16
shared loads at constant offsets and 64 FMAs (sm_90 PTX: ~122 registers, no local memory,
two blocks per SM).
The plain reference is `matmul_reference` (numpy, float64) from the CPU kernel's file.
"""

import functools
import math

import numpy as np
from numba import cuda, float32

from pyai.kernels.common import ACTIVATIONS
from pyai.kernels.numba_cuda import GRID_Y_MAX, check_grid_y
from pyai.kernels.numba_cuda.buffers import device_array
from pyai.kernels.numba_cpu.matmul import matmul_reference  # noqa: F401  (the reference)

BLOCK = 128          # rows of A and columns of B per block: the block's C tile is BLOCK x BLOCK
TILE_K = 8           # depth of a slice: two 8 x 128 tiles in shared memory
THREAD_TILE = 8      # a thread's C tile is THREAD_TILE x THREAD_TILE, in registers
THREADS_ACROSS = BLOCK // THREAD_TILE           # 16 x 16 threads
THREADS = THREADS_ACROSS * THREADS_ACROSS       # 256
LOADS = BLOCK * TILE_K // THREADS               # values of each operand a thread loads per slice
PADDED_BLOCK = BLOCK + 4   # a shared tile row: + 4 floats, so the k-major stores of a row-major
                           # operand spread over the 32 banks
TILE_FLOATS = TILE_K * PADDED_BLOCK   # a shared tile, flat (a shared shape must be a constant)

LEAKY_RELU, RELU, SIGMOID, TANH, GELU = (ACTIVATIONS[name]
                                         for name in ("leaky_relu", "relu", "sigmoid", "tanh", "gelu"))
SQRT_2_OVER_PI, CUBIC = float32(0.7978845608028654), float32(0.044715)


@cuda.jit(device=True, inline=True)
def tile_position(index, depth_contiguous):
    """(row, k) in a BLOCK x TILE_K tile of load number `index`: consecutive indices walk the
    operand's contiguous axis, so a warp reads consecutive addresses."""
    if depth_contiguous:
        return index // TILE_K, index % TILE_K
    return index % BLOCK, index // BLOCK


@cuda.jit(device=True, inline=True)
def load_tile(x, depth_contiguous, thread, first_row, first_k, staged):
    """This thread's LOADS values of operand rows [first_row, +BLOCK), depths [first_k,
    +TILE_K), zero outside. x is stored (rows, depth) if depth_contiguous, else (depth, rows)."""
    rows, depth = (x.shape[0], x.shape[1]) if depth_contiguous else (x.shape[1], x.shape[0])
    for load in range(LOADS):
        row, k = tile_position(thread + load * THREADS, depth_contiguous)
        row += first_row
        k += first_k
        value = float32(0.0)
        if row < rows and k < depth:
            value = x[row, k] if depth_contiguous else x[k, row]
        staged[load] = value


@cuda.jit(device=True, inline=True)
def store_tile(staged, depth_contiguous, thread, tile):
    """tile[k, row] (flat, k-major) = this thread's staged values."""
    for load in range(LOADS):
        row, k = tile_position(thread + load * THREADS, depth_contiguous)
        tile[k * PADDED_BLOCK + row] = staged[load]


@cuda.jit(device=True, inline=True)
def multiply_tile(tile_a, tile_b, row, col, acc):
    """acc[i, j] += sum_k tile_a[k, row + 16 i] tile_b[k, col + 16 j]. The flat indices step
    by a row per k, so each shared load is a base register plus a constant offset."""
    a = cuda.local.array(THREAD_TILE, float32)
    b = cuda.local.array(THREAD_TILE, float32)
    a_index, b_index = row, col
    for k in range(TILE_K):
        for i in range(THREAD_TILE):
            a[i] = tile_a[a_index + i * THREADS_ACROSS]
        for j in range(THREAD_TILE):
            b[j] = tile_b[b_index + j * THREADS_ACROSS]
        a_index += PADDED_BLOCK
        b_index += PADDED_BLOCK
        for i in range(THREAD_TILE):
            for j in range(THREAD_TILE):
                acc[i, j] += a[i] * b[j]


@cuda.jit(device=True, inline=True)
def activate(y, activation, alpha):
    if activation == LEAKY_RELU:
        return y if y > 0 else alpha * y
    if activation == RELU:
        return y if y > 0 else float32(0.0)
    if activation == SIGMOID:
        e = math.exp(-abs(y))          # exp of a non-positive number: no overflow for any y
        return float32(1.0) / (float32(1.0) + e) if y >= 0 else e / (float32(1.0) + e)
    if activation == TANH:
        return math.tanh(y)
    if activation == GELU:             # y sigmoid(2u), u = sqrt(2/pi) (y + 0.044715 y^3); see numba_cpu/gelu.py
        u = SQRT_2_OVER_PI * (y + CUBIC * y * y * y)
        e = math.exp(float32(-2.0) * abs(u))
        return y / (float32(1.0) + e) if u >= 0 else y * e / (float32(1.0) + e)
    return y


@functools.cache
def gemm_kernel(transpose_a, transpose_b, has_bias, activation):
    """The kernel for one combination of choices, compiled on its first launch."""
    a_depth_contiguous = not transpose_a    # A stored (M, K): read along K
    b_depth_contiguous = transpose_b        # B stored (N, K): read along K

    @cuda.jit
    def gemm(a, b, bias, alpha, c):
        tile_a = cuda.shared.array(TILE_FLOATS, float32)
        tile_b = cuda.shared.array(TILE_FLOATS, float32)
        staged_a = cuda.local.array(LOADS, float32)
        staged_b = cuda.local.array(LOADS, float32)
        acc = cuda.local.array((THREAD_TILE, THREAD_TILE), float32)
        for i in range(THREAD_TILE):
            for j in range(THREAD_TILE):
                acc[i, j] = float32(0.0)
        first_row, first_col = cuda.blockIdx.y * BLOCK, cuda.blockIdx.x * BLOCK
        # masking the thread index tells LLVM it is non-negative: numba's negative-index
        # wraparound then drops out of the inner loop (5 instructions per shared load)
        thread = cuda.threadIdx.x & (THREADS - 1)
        row, col = thread // THREADS_ACROSS, thread % THREADS_ACROSS
        depth = a.shape[0] if transpose_a else a.shape[1]
        load_tile(a, a_depth_contiguous, thread, first_row, 0, staged_a)
        load_tile(b, b_depth_contiguous, thread, first_col, 0, staged_b)
        for first_k in range(0, depth, TILE_K):
            store_tile(staged_a, a_depth_contiguous, thread, tile_a)
            store_tile(staged_b, b_depth_contiguous, thread, tile_b)
            cuda.syncthreads()
            if first_k + TILE_K < depth:   # the next slice travels while this one is multiplied
                load_tile(a, a_depth_contiguous, thread, first_row, first_k + TILE_K, staged_a)
                load_tile(b, b_depth_contiguous, thread, first_col, first_k + TILE_K, staged_b)
            multiply_tile(tile_a, tile_b, row, col, acc)
            cuda.syncthreads()
        for i in range(THREAD_TILE):
            out_row = first_row + row + i * THREADS_ACROSS
            for j in range(THREAD_TILE):
                out_col = first_col + col + j * THREADS_ACROSS
                if out_row < c.shape[0] and out_col < c.shape[1]:
                    y = acc[i, j]
                    if has_bias:
                        y += bias[out_col]
                    c[out_row, out_col] = activate(y, activation, alpha)

    return gemm


@functools.cache
def no_bias():
    """The bias argument when there is none (never read)."""
    return cuda.device_array(1, np.float32)


# a, b: float32 device arrays, (M, K) and (K, N) or transposed as flagged; bias: (N,) or None
#   -> c (M, N) float32 device array: a new one, or `out` (a C-contiguous (M, N) view of the
#   caller's result, such as a conv's 4-d output) written in place
def fused_matmul(a, b, transpose_a, transpose_b, bias, activation, alpha, out=None):
    m = a.shape[1] if transpose_a else a.shape[0]
    n = b.shape[0] if transpose_b else b.shape[1]
    check_grid_y(-(-m // BLOCK), f"matmul: M = {m} rows need more than {GRID_Y_MAX} row tiles of {BLOCK}")
    c = device_array((m, n), np.float32) if out is None else out
    kernel = gemm_kernel(transpose_a, transpose_b, bias is not None, ACTIVATIONS[activation])
    grid = (-(-n // BLOCK), -(-m // BLOCK))
    kernel[grid, THREADS](a, b, no_bias() if bias is None else bias, np.float32(alpha), c)
    return c


def matmul(a, b, transpose_a, transpose_b):
    return fused_matmul(a, b, transpose_a, transpose_b, None, None, 0.0)


def linear(x, w, bias, activation, alpha):
    return fused_matmul(x, w, False, False, bias, activation, alpha)
