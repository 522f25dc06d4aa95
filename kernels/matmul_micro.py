"""The matmul micro-kernel: a 6 x 16 tile of C held in 96 scalar accumulators.

Numba has no SIMD vector types, so the tile is written out longhand: one line per row, sixteen
multiply-adds each. Compiled with LLVM's SLP vectorizer on (see `slp_vectorize` in matmul.py),
each line becomes vector FMAs on a broadcast of a[i] (two 8-wide or one 16-wide register per row)
and the 96 accumulators stay in registers for the whole k loop.

Per k step: 6 + 16 floats loaded, 96 FMAs (192 FLOPs). The packed slivers are contiguous, so the
loads stream from L1.
"""

import numpy as np

MR, NR = 6, 16
ZERO = np.float32(0.0)


def micro_kernel(a_sliver, b_sliver, c, row, col):
    """c[row:row+MR, col:col+NR] += a_sliver.T @ b_sliver, for a_sliver (kc, MR) and b_sliver (kc, NR)."""
    c0_0 = c0_1 = c0_2 = c0_3 = c0_4 = c0_5 = c0_6 = c0_7 = c0_8 = c0_9 = c0_10 = c0_11 = c0_12 = c0_13 = c0_14 = c0_15 = ZERO
    c1_0 = c1_1 = c1_2 = c1_3 = c1_4 = c1_5 = c1_6 = c1_7 = c1_8 = c1_9 = c1_10 = c1_11 = c1_12 = c1_13 = c1_14 = c1_15 = ZERO
    c2_0 = c2_1 = c2_2 = c2_3 = c2_4 = c2_5 = c2_6 = c2_7 = c2_8 = c2_9 = c2_10 = c2_11 = c2_12 = c2_13 = c2_14 = c2_15 = ZERO
    c3_0 = c3_1 = c3_2 = c3_3 = c3_4 = c3_5 = c3_6 = c3_7 = c3_8 = c3_9 = c3_10 = c3_11 = c3_12 = c3_13 = c3_14 = c3_15 = ZERO
    c4_0 = c4_1 = c4_2 = c4_3 = c4_4 = c4_5 = c4_6 = c4_7 = c4_8 = c4_9 = c4_10 = c4_11 = c4_12 = c4_13 = c4_14 = c4_15 = ZERO
    c5_0 = c5_1 = c5_2 = c5_3 = c5_4 = c5_5 = c5_6 = c5_7 = c5_8 = c5_9 = c5_10 = c5_11 = c5_12 = c5_13 = c5_14 = c5_15 = ZERO
    for p in range(a_sliver.shape[0]):
        a = a_sliver[p]
        b = b_sliver[p]
        b0 = b[0]; b1 = b[1]; b2 = b[2]; b3 = b[3]; b4 = b[4]; b5 = b[5]; b6 = b[6]; b7 = b[7]; b8 = b[8]; b9 = b[9]; b10 = b[10]; b11 = b[11]; b12 = b[12]; b13 = b[13]; b14 = b[14]; b15 = b[15]
        a0 = a[0]
        c0_0 += a0 * b0; c0_1 += a0 * b1; c0_2 += a0 * b2; c0_3 += a0 * b3; c0_4 += a0 * b4; c0_5 += a0 * b5; c0_6 += a0 * b6; c0_7 += a0 * b7; c0_8 += a0 * b8; c0_9 += a0 * b9; c0_10 += a0 * b10; c0_11 += a0 * b11; c0_12 += a0 * b12; c0_13 += a0 * b13; c0_14 += a0 * b14; c0_15 += a0 * b15
        a1 = a[1]
        c1_0 += a1 * b0; c1_1 += a1 * b1; c1_2 += a1 * b2; c1_3 += a1 * b3; c1_4 += a1 * b4; c1_5 += a1 * b5; c1_6 += a1 * b6; c1_7 += a1 * b7; c1_8 += a1 * b8; c1_9 += a1 * b9; c1_10 += a1 * b10; c1_11 += a1 * b11; c1_12 += a1 * b12; c1_13 += a1 * b13; c1_14 += a1 * b14; c1_15 += a1 * b15
        a2 = a[2]
        c2_0 += a2 * b0; c2_1 += a2 * b1; c2_2 += a2 * b2; c2_3 += a2 * b3; c2_4 += a2 * b4; c2_5 += a2 * b5; c2_6 += a2 * b6; c2_7 += a2 * b7; c2_8 += a2 * b8; c2_9 += a2 * b9; c2_10 += a2 * b10; c2_11 += a2 * b11; c2_12 += a2 * b12; c2_13 += a2 * b13; c2_14 += a2 * b14; c2_15 += a2 * b15
        a3 = a[3]
        c3_0 += a3 * b0; c3_1 += a3 * b1; c3_2 += a3 * b2; c3_3 += a3 * b3; c3_4 += a3 * b4; c3_5 += a3 * b5; c3_6 += a3 * b6; c3_7 += a3 * b7; c3_8 += a3 * b8; c3_9 += a3 * b9; c3_10 += a3 * b10; c3_11 += a3 * b11; c3_12 += a3 * b12; c3_13 += a3 * b13; c3_14 += a3 * b14; c3_15 += a3 * b15
        a4 = a[4]
        c4_0 += a4 * b0; c4_1 += a4 * b1; c4_2 += a4 * b2; c4_3 += a4 * b3; c4_4 += a4 * b4; c4_5 += a4 * b5; c4_6 += a4 * b6; c4_7 += a4 * b7; c4_8 += a4 * b8; c4_9 += a4 * b9; c4_10 += a4 * b10; c4_11 += a4 * b11; c4_12 += a4 * b12; c4_13 += a4 * b13; c4_14 += a4 * b14; c4_15 += a4 * b15
        a5 = a[5]
        c5_0 += a5 * b0; c5_1 += a5 * b1; c5_2 += a5 * b2; c5_3 += a5 * b3; c5_4 += a5 * b4; c5_5 += a5 * b5; c5_6 += a5 * b6; c5_7 += a5 * b7; c5_8 += a5 * b8; c5_9 += a5 * b9; c5_10 += a5 * b10; c5_11 += a5 * b11; c5_12 += a5 * b12; c5_13 += a5 * b13; c5_14 += a5 * b14; c5_15 += a5 * b15
    # a slice, not c[row + i, col + j]: constant indices let the stores vectorize too
    out = c[row + 0, col:col + NR]
    out[0] += c0_0; out[1] += c0_1; out[2] += c0_2; out[3] += c0_3; out[4] += c0_4; out[5] += c0_5; out[6] += c0_6; out[7] += c0_7; out[8] += c0_8; out[9] += c0_9; out[10] += c0_10; out[11] += c0_11; out[12] += c0_12; out[13] += c0_13; out[14] += c0_14; out[15] += c0_15
    out = c[row + 1, col:col + NR]
    out[0] += c1_0; out[1] += c1_1; out[2] += c1_2; out[3] += c1_3; out[4] += c1_4; out[5] += c1_5; out[6] += c1_6; out[7] += c1_7; out[8] += c1_8; out[9] += c1_9; out[10] += c1_10; out[11] += c1_11; out[12] += c1_12; out[13] += c1_13; out[14] += c1_14; out[15] += c1_15
    out = c[row + 2, col:col + NR]
    out[0] += c2_0; out[1] += c2_1; out[2] += c2_2; out[3] += c2_3; out[4] += c2_4; out[5] += c2_5; out[6] += c2_6; out[7] += c2_7; out[8] += c2_8; out[9] += c2_9; out[10] += c2_10; out[11] += c2_11; out[12] += c2_12; out[13] += c2_13; out[14] += c2_14; out[15] += c2_15
    out = c[row + 3, col:col + NR]
    out[0] += c3_0; out[1] += c3_1; out[2] += c3_2; out[3] += c3_3; out[4] += c3_4; out[5] += c3_5; out[6] += c3_6; out[7] += c3_7; out[8] += c3_8; out[9] += c3_9; out[10] += c3_10; out[11] += c3_11; out[12] += c3_12; out[13] += c3_13; out[14] += c3_14; out[15] += c3_15
    out = c[row + 4, col:col + NR]
    out[0] += c4_0; out[1] += c4_1; out[2] += c4_2; out[3] += c4_3; out[4] += c4_4; out[5] += c4_5; out[6] += c4_6; out[7] += c4_7; out[8] += c4_8; out[9] += c4_9; out[10] += c4_10; out[11] += c4_11; out[12] += c4_12; out[13] += c4_13; out[14] += c4_14; out[15] += c4_15
    out = c[row + 5, col:col + NR]
    out[0] += c5_0; out[1] += c5_1; out[2] += c5_2; out[3] += c5_3; out[4] += c5_4; out[5] += c5_5; out[6] += c5_6; out[7] += c5_7; out[8] += c5_8; out[9] += c5_9; out[10] += c5_10; out[11] += c5_11; out[12] += c5_12; out[13] += c5_13; out[14] += c5_14; out[15] += c5_15
