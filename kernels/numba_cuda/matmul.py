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
A product of few tiles over a deep K (a convolution's weight gradient: 512 x 64 over 12544 rows,
4 blocks for an H100's 132 SMs) is cut in depth (split-K, depth_splits): blockIdx.z is a run of
K, at least SPLIT_MIN_DEPTH deep, enough runs to give TARGET_BLOCKS SMs a block; each run's sum
goes to a page of its own, then sum_pages adds the pages in order, with the bias and activation.
The count depends on the shape alone: the same bits on every run and every GPU.
The plain reference is `matmul_reference` (numpy, float64) from the CPU kernel's file.
"""

import functools
import math

import numpy as np
from numba import cuda, float32

from pyai.kernels.common import ACTIVATIONS
from pyai.kernels.numba_cuda import GRID_Y_MAX, THREADS as SUM_THREADS, check_grid_y, grid_size
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
TARGET_BLOCKS = 132        # the SMs of an H100 SXM: a product of fewer blocks is cut in depth
SPLIT_MIN_DEPTH = 512      # ... into runs at least this deep
MAX_DEPTH_SPLITS = 64

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
    def gemm(a, b, bias, alpha, run_depth, c):
        """c[z] (pages, (runs, M, N)) = epilogue(op(A) @ op(B)) over K's run z = blockIdx.z,
        run_depth deep (a multiple of TILE_K)."""
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
        page = cuda.blockIdx.z
        run_start = page * run_depth
        run_end = a.shape[0] if transpose_a else a.shape[1]
        if run_start + run_depth < run_end:   # (a builtin min does not compile for CUDA)
            run_end = run_start + run_depth
        load_tile(a, a_depth_contiguous, thread, first_row, run_start, staged_a)
        load_tile(b, b_depth_contiguous, thread, first_col, run_start, staged_b)
        for first_k in range(run_start, run_end, TILE_K):
            store_tile(staged_a, a_depth_contiguous, thread, tile_a)
            store_tile(staged_b, b_depth_contiguous, thread, tile_b)
            cuda.syncthreads()
            if first_k + TILE_K < run_end:   # the next slice travels while this one is multiplied
                load_tile(a, a_depth_contiguous, thread, first_row, first_k + TILE_K, staged_a)
                load_tile(b, b_depth_contiguous, thread, first_col, first_k + TILE_K, staged_b)
            multiply_tile(tile_a, tile_b, row, col, acc)
            cuda.syncthreads()
        for i in range(THREAD_TILE):
            out_row = first_row + row + i * THREADS_ACROSS
            for j in range(THREAD_TILE):
                out_col = first_col + col + j * THREADS_ACROSS
                if out_row < c.shape[1] and out_col < c.shape[2]:
                    y = acc[i, j]
                    if has_bias:
                        y += bias[out_col]
                    c[page, out_row, out_col] = activate(y, activation, alpha)

    return gemm


@cuda.jit
def sum_pages_kernel(pages, bias, has_bias, activation, alpha, c):
    """c = epilogue(pages[0] + pages[1] + ...), added in that order; c and each page flat."""
    size = c.size
    for index in range(cuda.grid(1), size, cuda.gridsize(1)):
        y = pages[index]
        for page in range(1, pages.size // size):
            y += pages[page * size + index]
        if has_bias:
            y += bias[index % bias.size]
        c[index] = activate(y, activation, alpha)


def sum_pages(pages, c, bias=None, activation=None, alpha=0.0):
    """c (M, N) = epilogue(pages[0] + pages[1] + ...) for pages (P, M, N), added in that order."""
    m, n = c.shape
    sum_pages_kernel[grid_size(m * n), SUM_THREADS](pages.reshape(pages.size), no_bias() if bias is None else bias,
                                                    bias is not None, ACTIVATIONS[activation], np.float32(alpha),
                                                    c.reshape(m * n))
    return c


def depth_splits(m, n, k):
    """The runs K is cut into (1: not cut): where the product's BLOCK x BLOCK tiles give at most
    half of TARGET_BLOCKS SMs a block, enough runs to give them all one, each run at least
    SPLIT_MIN_DEPTH deep."""
    blocks = -(-m // BLOCK) * -(-n // BLOCK)
    if blocks == 0 or 2 * blocks > TARGET_BLOCKS:
        return 1
    return max(1, min(-(-TARGET_BLOCKS // blocks), k // SPLIT_MIN_DEPTH, MAX_DEPTH_SPLITS))


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
    k = a.shape[0] if transpose_a else a.shape[1]
    c = device_array((m, n), np.float32) if out is None else out
    bias_array, alpha = no_bias() if bias is None else bias, np.float32(alpha)
    splits = depth_splits(m, n, k)
    run_depth = -(-k // (splits * TILE_K)) * TILE_K
    grid = (-(-n // BLOCK), -(-m // BLOCK), splits)
    if splits == 1:
        kernel = gemm_kernel(transpose_a, transpose_b, bias is not None, ACTIVATIONS[activation])
        kernel[grid, THREADS](a, b, bias_array, alpha, run_depth, c.reshape(1, m, n))
        return c
    pages = device_array((splits, m, n), np.float32)
    gemm_kernel(transpose_a, transpose_b, False, ACTIVATIONS[None])[grid, THREADS](a, b, bias_array, alpha, run_depth,
                                                                                  pages)
    return sum_pages(pages, c, bias, activation, alpha)


def matmul(a, b, transpose_a, transpose_b):
    return fused_matmul(a, b, transpose_a, transpose_b, None, None, 0.0)


def linear(x, w, bias, activation, alpha):
    return fused_matmul(x, w, False, False, bias, activation, alpha)
