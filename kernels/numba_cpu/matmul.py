"""Matrix multiply with a fused epilogue: C = activation(op(A) @ op(B) + bias), float32, on the CPU.

Shapes: op(A) is (M, K), op(B) is (K, N), bias is (N,), C is (M, N); op transposes when asked.
Cost: 2*M*N*K FLOPs; at best 4*(M*K + K*N + M*N) bytes from memory.

The fast version is the Goto/BLIS blocking:
  for each KC-deep slice of K and each NC-wide panel of B:
    pack B[slice, panel] into NR-wide slivers, k-major (shared by all threads; stays in L3/L2)
    in parallel over tasks, a task being an MC-row block of A times a run of B slivers:
      pack A[block, slice] into MR-tall slivers, k-major (stays in L2)
      for each B sliver, for each A sliver: the micro-kernel adds an MR x NR tile into C,
        its accumulators in registers for the whole slice (see matmul_micro.py)
      after the last slice, each tile gets bias + activation while it is still in L1.
Packing turns any layout or transpose of A and B into the same unit-stride slivers, so one
compiled kernel serves all four transpose cases; zero padding turns ragged edges into full tiles.

Few rows (M <= FEW_ROWS, a training batch times a weight matrix) take another loop order: A is
small, so it is packed once for all of K and shared; the threads split the columns of C, and each
packs its own run of B, a slice at a time, just before it meets every A sliver. B, the big
operand, is read once with no shared panel to wait for, and a call is two parallel regions
whatever K is. (Over the GAN step's products, 64 and 128 rows, it took 8% less time than the
blocking above in one measured run, though a few single shapes ran slower.)
"""

import contextlib
import math

import numba
import numpy as np
from numba import float32, int64, void

from pyai.kernels.common import ACTIVATIONS, activation_reference
from pyai.kernels.numba_cpu.gelu import gelu_scalar
from pyai.kernels.numba_cpu.matmul_micro import MR, NR, micro_kernel
from pyai.kernels.numba_cpu.simd import WIDTH, load, store

KC = 256    # depth of a slice: an MR x KC sliver of A and a KC x NR sliver of B fit in L1
MC = 96     # rows of A per task: an MC x KC block of A fits in L2
NC = 4096   # columns of B per panel: a KC x NC panel of B fits in L3
PACK_ROWS = 16   # rows of B packed together: a few pages read side by side, each front to back
FEW_ROWS = 128   # up to this many rows of C, the few-rows loop order (see above)
NONE, LEAKY_RELU, RELU, SIGMOID, TANH, GELU = (ACTIVATIONS[name] for name in
                                               (None, "leaky_relu", "relu", "sigmoid", "tanh", "gelu"))

def matmul_reference(a, b, bias=None, activation=None, alpha=0.2):
    """The plain version the kernel is tested against (float64)."""
    y = a.astype(np.float64) @ b.astype(np.float64)
    if bias is not None:
        y = y + bias
    return activation_reference(y, activation, alpha)


@contextlib.contextmanager
def slp_vectorize():
    """Numba leaves LLVM's SLP vectorizer off by default; the micro-kernel needs it on."""
    previous = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        numba.config.SLP_VECTORIZE = previous


def pack_a(a, row_stride, col_stride, row0, rows, depth0, depth, packed):
    """packed[s, p, r] = A[row0 + s*MR + r, depth0 + p], zero past the last row."""
    for s in range(packed.shape[0]):
        for r in range(MR):
            row = row0 + s * MR + r
            if row < row0 + rows:
                base = row * row_stride + depth0 * col_stride
                for p in range(depth):
                    packed[s, p, r] = a[base + p * col_stride]
            else:
                for p in range(depth):
                    packed[s, p, r] = 0.0


def copy_sliver_row(source, out):
    """out[:NR] = source[:NR], two vector loads and stores."""
    store(out, 0, load(source, 0))
    store(out, WIDTH, load(source, WIDTH))


def pack_b(b, row_stride, col_stride, depth0, depth, col0, cols, packed):
    """packed[t, p, c] = B[depth0 + p, col0 + t*NR + c], zero past the last column.

    B is read in its own order, so that the reads stream: along rows when its rows are unit-
    stride, down columns when it is transposed."""
    full = cols // NR
    if col_stride == 1:
        for p0 in range(0, depth, PACK_ROWS):
            for t in range(full):
                for p in range(p0, min(depth, p0 + PACK_ROWS)):
                    start = (depth0 + p) * row_stride + col0 + t * NR
                    copy_sliver_row(b[start:start + NR], packed[t, p])
    else:
        for t in range(full):
            for c in range(NR):
                base = depth0 * row_stride + (col0 + t * NR + c) * col_stride
                for p in range(depth):
                    packed[t, p, c] = b[base + p * row_stride]
    if full < packed.shape[0]:                  # the ragged last sliver
        for p in range(depth):
            base = (depth0 + p) * row_stride
            for c in range(NR):
                col = full * NR + c
                packed[full, p, c] = b[base + (col0 + col) * col_stride] if col < cols else 0.0


def apply_epilogue(c, row, col, rows, cols, bias, has_bias, activation, alpha):
    """Bias and activation on the tile c[row:row+rows, col:col+cols], in place.

    One loop per activation, so that each inner loop is branch-free and vectorizes."""
    one = float32(1.0)
    for i in range(row, row + rows):
        out = c[i, col:col + cols]
        if has_bias:
            out += bias[col:col + cols]
        if activation == LEAKY_RELU:
            for j in range(cols):
                out[j] = out[j] if out[j] > 0 else alpha * out[j]
        elif activation == RELU:
            for j in range(cols):
                out[j] = out[j] if out[j] > 0 else float32(0.0)
        elif activation == SIGMOID:
            for j in range(cols):
                # exp of a non-positive number only: no overflow for any input
                e = math.exp(-abs(out[j]))
                out[j] = one / (one + e) if out[j] >= 0 else e / (one + e)
        elif activation == TANH:
            for j in range(cols):
                out[j] = math.tanh(out[j])
        elif activation == GELU:
            for j in range(cols):
                out[j] = gelu_scalar(out[j])


def run_task(a_packed, b_packed, c, row0, rows, col0, cols, sliver0, sliver1, last_slice,
             bias, has_bias, activation, alpha):
    """One task: every A sliver of the packed block times B slivers [sliver0, sliver1)."""
    edge = np.empty((MR, NR), dtype=np.float32)
    for t in range(sliver0, sliver1):
        col = col0 + t * NR
        tile_cols = min(NR, col0 + cols - col)
        for s in range(a_packed.shape[0]):
            row = row0 + s * MR
            tile_rows = min(MR, row0 + rows - row)
            if tile_rows == MR and tile_cols == NR:
                micro_kernel(a_packed[s], b_packed[t], c, row, col)
            else:
                edge[:] = 0.0
                micro_kernel(a_packed[s], b_packed[t], edge, 0, 0)
                for i in range(tile_rows):
                    for j in range(tile_cols):
                        c[row + i, col + j] += edge[i, j]
            if last_slice and (has_bias or activation != NONE):
                apply_epilogue(c, row, col, tile_rows, tile_cols, bias, has_bias, activation, alpha)


def gemm(a, a_row_stride, a_col_stride, b, b_row_stride, b_col_stride, c, k, bias, has_bias,
         activation, alpha, row_blocks, col_chunks, parts):
    """c (zeroed, M x N) = epilogue(A @ B); A and B are flat arrays read through their strides.

    The MR-row slivers of C are cut into `row_blocks` even blocks and each panel's NR-column
    slivers into `col_chunks` even runs; the row_blocks * col_chunks tasks are shared among the
    threads (numba gives each thread an equal run of tasks). Each panel of B is packed in `parts`
    runs of slivers, one per thread.
    """
    m, n = c.shape
    row_slivers = -(-m // MR)
    for col0 in range(0, n, NC):
        cols = min(NC, n - col0)
        col_slivers = -(-cols // NR)
        for depth0 in range(0, k, KC):
            depth = min(KC, k - depth0)
            b_packed = np.empty((col_slivers, depth, NR), dtype=np.float32)
            for part in numba.prange(parts):
                sliver0 = part * col_slivers // parts
                sliver1 = (part + 1) * col_slivers // parts
                pack_b(b, b_row_stride, b_col_stride, depth0, depth, col0 + sliver0 * NR,
                       min(cols - sliver0 * NR, (sliver1 - sliver0) * NR), b_packed[sliver0:sliver1])
            last_slice = depth0 + KC >= k
            for task in numba.prange(row_blocks * col_chunks):
                block, chunk = task // col_chunks, task % col_chunks
                first_sliver = block * row_slivers // row_blocks
                row0 = first_sliver * MR
                rows = min(m, (block + 1) * row_slivers // row_blocks * MR) - row0
                sliver0 = chunk * col_slivers // col_chunks
                sliver1 = (chunk + 1) * col_slivers // col_chunks
                if rows > 0 and sliver1 > sliver0:
                    a_packed = np.empty((-(-rows // MR), depth, MR), dtype=np.float32)
                    pack_a(a, a_row_stride, a_col_stride, row0, rows, depth0, depth, a_packed)
                    run_task(a_packed, b_packed, c, row0, rows, col0, cols, sliver0, sliver1,
                             last_slice, bias, has_bias, activation, alpha)


def gemm_few_rows(a, a_row_stride, a_col_stride, b, b_row_stride, b_col_stride, c, k, bias,
                  has_bias, activation, alpha, col_chunks):
    """c (zeroed, M x N) = epilogue(A @ B) for few rows: A packed once, slice by slice, into
    a_slices; the NR-column slivers of C cut into `col_chunks` even runs, one per task, each task
    packing its own run of B a slice at a time."""
    m, n = c.shape
    row_slivers = -(-m // MR)
    col_slivers = -(-n // NR)
    a_slices = np.empty(row_slivers * k * MR, dtype=np.float32)
    for s in numba.prange(row_slivers):
        for depth0 in range(0, k, KC):
            depth = min(KC, k - depth0)
            a_packed = a_slices[row_slivers * depth0 * MR:][:row_slivers * depth * MR]
            pack_a(a, a_row_stride, a_col_stride, s * MR, min(MR, m - s * MR), depth0, depth,
                   a_packed.reshape((row_slivers, depth, MR))[s:s + 1])
    for chunk in numba.prange(col_chunks):
        sliver0 = chunk * col_slivers // col_chunks
        sliver1 = (chunk + 1) * col_slivers // col_chunks
        col0 = sliver0 * NR
        cols = min(n, sliver1 * NR) - col0
        for depth0 in range(0, k, KC):
            depth = min(KC, k - depth0)
            b_packed = np.empty((sliver1 - sliver0, depth, NR), dtype=np.float32)
            pack_b(b, b_row_stride, b_col_stride, depth0, depth, col0, cols, b_packed)
            a_packed = a_slices[row_slivers * depth0 * MR:][:row_slivers * depth * MR]
            run_task(a_packed.reshape((row_slivers, depth, MR)), b_packed, c, 0, m, col0, cols,
                     0, sliver1 - sliver0, depth0 + KC >= k, bias, has_bias, activation, alpha)


FASTMATH = {"contract"}   # fused multiply-add only: no reassociation, IEEE infinities and NaN kept
MATRIX = float32[:, ::1]
PANEL = float32[:, :, ::1]
FLAT = float32[::1]
with slp_vectorize():
    pack_a = numba.njit(void(FLAT, int64, int64, int64, int64, int64, int64, PANEL),
                        cache=True)(pack_a)
    copy_sliver_row = numba.njit(void(FLAT, FLAT), cache=True)(copy_sliver_row)
    pack_b = numba.njit(void(FLAT, int64, int64, int64, int64, int64, int64, PANEL),
                        cache=True)(pack_b)
    apply_epilogue = numba.njit(
        void(MATRIX, int64, int64, int64, int64, FLAT, numba.boolean, int64, float32),
        fastmath=FASTMATH, cache=True)(apply_epilogue)
    run_task = numba.njit(
        void(PANEL, PANEL, MATRIX, int64, int64, int64, int64, int64, int64, numba.boolean,
             FLAT, numba.boolean, int64, float32),
        fastmath=FASTMATH, cache=True)(run_task)
    gemm = numba.njit(
        void(FLAT, int64, int64, FLAT, int64, int64, MATRIX, int64, FLAT, numba.boolean, int64,
             float32, int64, int64, int64),
        parallel=True, fastmath=FASTMATH, cache=True)(gemm)
    gemm_few_rows = numba.njit(
        void(FLAT, int64, int64, FLAT, int64, int64, MATRIX, int64, FLAT, numba.boolean, int64,
             float32, int64),
        parallel=True, fastmath=FASTMATH, cache=True)(gemm_few_rows)

NO_BIAS = np.zeros(1, dtype=np.float32)
SERIAL_FLOPS = 2_000_000   # below this, one thread is faster than waking the others


def thread_count(m, n, k):
    return 1 if 2 * m * n * k < SERIAL_FLOPS else numba.get_num_threads()


def task_grid(m, n, k, threads):
    """(row_blocks, col_chunks): about MC rows per block, at least one task per thread."""
    row_blocks = max(1, -(-m // MC))
    if row_blocks >= threads:
        return -(-row_blocks // threads) * threads, 1
    col_chunks = min(-(-threads // row_blocks), -(-min(n, NC) // NR))
    return row_blocks, col_chunks


def fused_matmul(a, b, transpose_a, transpose_b, bias, activation, alpha):
    """activation(op(a) @ op(b) + bias) for C-contiguous float32 a and b (checked by pyai.ops)."""
    m, k = (a.shape[1], a.shape[0]) if transpose_a else a.shape
    n = b.shape[0] if transpose_b else b.shape[1]
    a_strides = (1, m) if transpose_a else (k, 1)
    b_strides = (1, k) if transpose_b else (n, 1)
    c = np.zeros((m, n), dtype=np.float32)
    threads = thread_count(m, n, k)
    has_bias = bias is not None
    # A small product runs its parallel regions on this thread alone: waking the other threads
    # costs more than they save, and a parallel region waits for its slowest (descheduled) thread.
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    operands = (a.reshape(-1), *a_strides, b.reshape(-1), *b_strides, c, k,
                bias if has_bias else NO_BIAS, has_bias, ACTIVATIONS[activation],
                np.float32(alpha))
    try:
        if m <= FEW_ROWS:
            gemm_few_rows(*operands, threads)
        else:
            gemm(*operands, *task_grid(m, n, k, threads), threads)
    finally:
        numba.set_num_threads(previous)
    return c


def matmul(a, b, transpose_a, transpose_b):
    return fused_matmul(a, b, transpose_a, transpose_b, None, None, 0.0)


def linear(x, w, bias, activation, alpha):
    return fused_matmul(x, w, False, False, bias, activation, alpha)
