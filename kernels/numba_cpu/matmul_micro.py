"""The matmul micro-kernel: an MR x NR tile of C held in 12 vector registers, MR = 6 rows of
NR = 2 vectors (simd.py): 6 x 32 where the CPU has AVX-512, 6 x 16 with AVX2.

Why this shape: an FMA has a latency of 4 cycles and a core issues one or two per cycle, so
8 independent accumulators keep two FMA units busy; 12 leave room. Each k step loads 2 vectors
of B and broadcasts 6 floats of A: 8 loads for 12 FMAs, under the 2-3 loads a cycle a core can
do. The 12 accumulators, 2 B vectors and a broadcast take 15 of the 16 (AVX2) or 32 (AVX-512)
vector registers, so nothing spills.

Per k step: MR + NR floats loaded, MR * NR FMAs (2 * MR * NR FLOPs). The packed slivers are
contiguous, so the loads stream from L1.
"""

import numba
from numba import float32, int64, void

from pyai.kernels.numba_cpu.simd import WIDTH, add, fma, load, splat, store, zeros

MR, NR = 6, 2 * WIDTH


def micro_kernel_reference(a_sliver, b_sliver, c, row, col):
    """The plain version: c[row:row+MR, col:col+NR] += a_sliver.T @ b_sliver."""
    c[row:row + MR, col:col + NR] += a_sliver.T @ b_sliver


@numba.njit(inline="always", cache=True)
def add_to_row(c, row, col, left, right):
    """c[row, col:col + NR] += (left, right)."""
    out = c[row, col:col + NR]
    store(out, 0, add(load(out, 0), left))
    store(out, WIDTH, add(load(out, WIDTH), right))


@numba.njit(void(float32[:, ::1], float32[:, ::1], float32[:, ::1], int64, int64), cache=True)
def micro_kernel(a_sliver, b_sliver, c, row, col):
    """c[row:row+MR, col:col+NR] += a_sliver.T @ b_sliver, for C-contiguous a_sliver (kc, MR)
    and b_sliver (kc, NR); c's rows may be strided."""
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = zeros()
    for p in range(a_sliver.shape[0]):
        b0 = load(b_sliver, p * NR)
        b1 = load(b_sliver, p * NR + WIDTH)
        a = splat(a_sliver[p, 0]); c00 = fma(a, b0, c00); c01 = fma(a, b1, c01)  # noqa: E702
        a = splat(a_sliver[p, 1]); c10 = fma(a, b0, c10); c11 = fma(a, b1, c11)  # noqa: E702
        a = splat(a_sliver[p, 2]); c20 = fma(a, b0, c20); c21 = fma(a, b1, c21)  # noqa: E702
        a = splat(a_sliver[p, 3]); c30 = fma(a, b0, c30); c31 = fma(a, b1, c31)  # noqa: E702
        a = splat(a_sliver[p, 4]); c40 = fma(a, b0, c40); c41 = fma(a, b1, c41)  # noqa: E702
        a = splat(a_sliver[p, 5]); c50 = fma(a, b0, c50); c51 = fma(a, b1, c51)  # noqa: E702
    add_to_row(c, row, col, c00, c01)
    add_to_row(c, row + 1, col, c10, c11)
    add_to_row(c, row + 2, col, c20, c21)
    add_to_row(c, row + 3, col, c30, c31)
    add_to_row(c, row + 4, col, c40, c41)
    add_to_row(c, row + 5, col, c50, c51)
