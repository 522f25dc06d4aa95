"""The matmul's tiles over rows that are not one matrix's, read where they lie: an implicit GEMM's
windows of an image (implicit_gemm.py), as A or as B. Only the convolutions use them, so they
compile when a convolution's file is imported, not with every product (importing matmul.py had
compiled them too: 26 -> 18 s of its compile on an AMD EPYC Zen 4).

    micro_kernel_gathered:   matmul_micro.micro_kernel_strided's MR x NR tile with A's rows at
                             addresses (in the image, or in a buffer of zeros for padding), read
                             in runs (a tap's channels a run), and C's rows where a table lists
                             them (a transposed convolution's phase writes its output's);
                             finished_gathered and graded_gathered finish it with the epilogue
    micro_kernel_b_gathered: the same tile with B's rows at addresses (a weight gradient's
                             windows)
    multiply_gathered:       matmul.multiply_block's loop over a block's tiles, for a block of
                             gathered rows (implicit_gemm's hook into matmul's loop nest)
Per k step, as the packed tile's: MR + NR floats loaded, MR * NR FMAs (2 * MR * NR FLOPs).
"""

import numba
from numba import boolean, float32, int64, void

from pyai.kernels.numba_cpu.epilogue import EXPENSIVE, FASTMATH, LEAKY_RELU_GRAD, NONE, apply_epilogue
from pyai.kernels.numba_cpu.matmul import MATRIX, add_edge, in_registers, rest_of_epilogue, rest_to_apply
from pyai.kernels.numba_cpu.matmul_micro import (EPILOGUE, MR, NR, READ_ONLY, ROWS_PER_GROUP, consecutive,
                                                 finish_tile, fma_six_rows_at, fma_six_rows_in_place, grade_tile,
                                                 prefetch_tile, prefetch_tile_to_read, write_six_rows, write_tile,
                                                 zero_rows)
from pyai.kernels.numba_cpu.simd import ALIGNMENT, WIDTH, load, load_from, prefetch_at, slp_vectorize


@numba.njit(cache=True)
def listed(table, start):
    """A tile's MR rows as a table lists them from table[start] on, in consecutive's form: the C
    rows of a tile whose rows are not one run of C's (a transposed convolution's stride phase,
    written into its output), or the addresses of A's rows (gathered_product)."""
    return (table[start], table[start + 1], table[start + 2], table[start + 3], table[start + 4], table[start + 5],
            table[start + MR - 6], table[start + MR - 5], table[start + MR - 4], table[start + MR - 3],
            table[start + MR - 2], table[start + MR - 1])


@numba.njit(inline="always", cache=True)
def gathered_product(a_rows, a_start, lengths, runs, b, b_start, b_stride, c, rows, col, next_start):
    """tile_product with A's rows read where they lie, in runs (micro_kernel_gathered). With
    next_start >= 0, each run first asks for the same run of the next sliver's rows (their
    addresses from a_rows[next_start] on), a line of every 128 bytes: the cores' adjacent-line
    prefetchers (AMD's, Intel's spatial one) bring the pair's other line. Twelve short runs at
    scattered addresses are more streams than the hardware's prefetchers follow: a
    Conv2DTranspose (128 x 14x14x64 -> 28x28x32) after a pass that flushed the caches took
    4.26-4.80 ms, 3.96-4.05 with them, the same 3.7-3.8 ms as before with its operands in cache
    (AMD EPYC Zen 5, 2 threads, best of 25, old and new alternating). A line of every 64 bytes
    cost 2-4% with the operands in cache; asking inside the k loop, one line a step, spoiled the
    loop (+30%)."""
    prefetch_tile(c, rows, col, MR)
    top = zero_rows()
    bottom = zero_rows()
    b_row = b_start
    for j in range(runs):
        at = listed(a_rows, a_start + j * MR)
        if next_start >= 0:
            for r in range(MR):
                where = a_rows[next_start + j * MR + r]
                for line in range(0, 4 * lengths[j], 2 * ALIGNMENT):
                    prefetch_at(where + line)
        for p in range(lengths[j]):
            b0 = load(b, b_row)
            b1 = load(b, b_row + WIDTH)
            top = fma_six_rows_at(at, 0, p, b0, b1, top)
            if MR == 2 * ROWS_PER_GROUP:
                bottom = fma_six_rows_at(at, ROWS_PER_GROUP, p, b0, b1, bottom)
            b_row += b_stride
    return top, bottom


@numba.njit(inline="always", cache=True)
def b_gathered_product(a, a_start, a_step, depth, b_rows, b_first, b_offset, c, rows, col, groups):
    """tile_product with B's rows read where they lie: row p of B is the NR floats from address
    b_rows[b_first + p] + b_offset (simd.address), wherever it lies; A's column p the MR floats
    from a[a_start + p * a_step] (a packed sliver's, a_step = MR, or a row-major D's row). The
    first `groups` groups of 6 rows (a constant where compiled: 1 for a half tile)."""
    prefetch_tile(c, rows, col, groups * ROWS_PER_GROUP)
    top = zero_rows()
    bottom = zero_rows()
    for p in range(depth):
        at = b_rows[b_first + p] + b_offset
        b0 = load_from(at)
        b1 = load_from(at + 4 * WIDTH)
        top = fma_six_rows_in_place(a, a_start + p * a_step, 1, b0, b1, top)
        if groups == 2:
            bottom = fma_six_rows_in_place(a, a_start + p * a_step + ROWS_PER_GROUP, 1, b0, b1, bottom)
    return top, bottom


# the tile kernels take their arrays whole, with offsets (matmul_micro.py says why)
GATHERED = (int64[::1], int64, int64[::1], int64, READ_ONLY, int64, int64, float32[:, ::1], int64[::1], int64, int64,
            boolean, int64)
B_GATHERED = (READ_ONLY, int64, int64, int64, int64[::1], int64, int64, float32[:, ::1], int64, int64, boolean)


@numba.njit(void(*GATHERED), cache=True)
def micro_kernel_gathered(a_rows, a_start, lengths, runs, b, b_start, b_stride, c, row_of, row_start, col,
                          accumulate, next_start):
    """micro_kernel_strided's tile with A's rows read where they lie, in runs: in run j, row r of
    the tile's A is lengths[j] floats from address a_rows[a_start + j * MR + r] (simd.address: in
    an image, or in a buffer of zeros for padding), against the next lengths[j] rows of B. No
    packing at all, for rows that are not one matrix's (the windows of an image,
    implicit_gemm.py). Its row r goes to C's row row_of[row_start + r] (any rows: a transposed
    convolution's phase writes its output's). next_start: where the next sliver's addresses start
    in a_rows, to be asked for ahead (gathered_product), or -1."""
    rows = listed(row_of, row_start)
    top, bottom = gathered_product(a_rows, a_start, lengths, runs, b, b_start, b_stride, c, rows, col, next_start)
    write_tile(c, rows, col, top, bottom, accumulate)


@numba.njit(void(*GATHERED, READ_ONLY, EPILOGUE), cache=True)
def finished_gathered(a_rows, a_start, lengths, runs, b, b_start, b_stride, c, row_of, row_start, col, accumulate,
                      next_start, bias, epilogue):
    rows = listed(row_of, row_start)
    top, bottom = gathered_product(a_rows, a_start, lengths, runs, b, b_start, b_stride, c, rows, col, next_start)
    finish_tile(c, rows, col, top, bottom, accumulate, bias, epilogue)


@numba.njit(void(*GATHERED, READ_ONLY, float32), cache=True)
def graded_gathered(a_rows, a_start, lengths, runs, b, b_start, b_stride, c, row_of, row_start, col, accumulate,
                    next_start, y, alpha):
    """micro_kernel_gathered's tile times the gradient of the leaky ReLU whose output is y (C's
    shape, flat) as it is stored (matmul_micro.grade_tile), y's lines asked for first: in a DCGAN
    step y comes from memory, and the stores had waited on it (AMD EPYC Zen 5, medians of 40 steps,
    three rounds, old and new in turn: the discriminator's 14x14x64 input gradient over 128
    images 2.24-2.30 -> 2.20 ms, the two Conv2DTranspose input gradients 1.98-2.02 -> 1.91-1.94
    and 1.93-1.95 -> 1.89-1.91)."""
    rows = listed(row_of, row_start)
    prefetch_tile_to_read(y, c.shape[1], rows, col)
    top, bottom = gathered_product(a_rows, a_start, lengths, runs, b, b_start, b_stride, c, rows, col, next_start)
    grade_tile(c, rows, col, top, bottom, accumulate, y, alpha)


@numba.njit(void(*B_GATHERED), cache=True)
def micro_kernel_b_gathered(a, a_start, a_step, depth, b_rows, b_first, b_offset, c, row, col, accumulate):
    """micro_kernel_strided's tile with B's rows read where they lie: row p of B is the NR floats
    from address b_rows[b_first + p] + b_offset (in an image, or in a buffer of zeros for
    padding). No packing of B, whose rows are not one matrix's (the windows of an image, as a
    weight gradient's B: implicit_gemm.py). A's MR floats of step p lie side by side at
    a[a_start + p * a_step]: a packed sliver, or A^T's rows where they lie."""
    rows = consecutive(row)
    top, bottom = b_gathered_product(a, a_start, a_step, depth, b_rows, b_first, b_offset, c, rows, col,
                                     MR // ROWS_PER_GROUP)
    write_tile(c, rows, col, top, bottom, accumulate)


@numba.njit(void(*B_GATHERED), cache=True)
def half_kernel_b_gathered(a, a_start, a_step, depth, b_rows, b_first, b_offset, c, row, col, accumulate):
    """The first ROWS_PER_GROUP rows of micro_kernel_b_gathered's tile (as half_kernel_strided's)."""
    rows = consecutive(row)
    top, _ = b_gathered_product(a, a_start, a_step, depth, b_rows, b_first, b_offset, c, rows, col, 1)
    write_six_rows(c, rows, 0, col, top, accumulate)


def multiply_gathered(rows_at, lengths, runs, b, b_start, sliver_step, b_stride, c, row_of, rows, col0, cols,
                      first_slice, last_slice, bias, has_bias, activation, alpha, edge, in_order):
    """multiply_block for an A block of `rows` rows read where they lie (micro_kernel_gathered):
    sliver s's MR rows at the addresses rows_at[s] (runs x MR), lengths[j] floats in run j; the
    block's row i goes to C's row row_of[i] (a table of whole slivers, increasing), which need
    not follow row_of[i - 1]: a ragged tile's rows and the epilogue after a tile are added and
    applied a run of C's rows at a time, all of the tile's where they follow each other. The
    caller hands over the room for a ragged tile (edge_tile) and in_order = 0 .. MR - 1, its rows
    there. The tiles of the first column sliver ask for the next A sliver's rows ahead
    (gathered_product); the later ones find the block's rows in L2. A leaky ReLU's gradient
    (LEAKY_RELU_GRAD) is applied as each whole tile is stored (graded_gathered): after the block,
    a transposed convolution's phase had applied it a C row at a time (its rows lie apart), the
    input gradient of a 14x14x64 -> 7x7x128 stride-2 conv over 128 images 2.37-2.39 -> 2.11-2.13
    ms (AMD EPYC Zen 5, 2 threads, best of 40, old and new alternating; the same floats)."""
    graded = activation == LEAKY_RELU_GRAD   # in registers as a whole tile is stored (graded_gathered)
    by_tile = activation not in EXPENSIVE or graded
    epilogue = (has_bias, activation if by_tile else NONE, alpha)
    addresses = rows_at.reshape(-1)   # the tiles take the tables whole, with offsets (GATHERED)
    sliver_addresses = rows_at.shape[1] * MR
    for t in range(-(-cols // NR)):
        col = col0 + t * NR
        tile_cols = min(NR, col0 + cols - col)
        for s in range(-(-rows // MR)):
            tile_rows = min(MR, rows - s * MR)
            whole = tile_cols == NR and tile_rows == MR
            first_row = s * MR
            start = b_start + t * sliver_step
            finished = last_slice and whole and (in_registers(epilogue) or graded)
            after = (s + 1) * sliver_addresses if t == 0 and (s + 1) * MR < rows else -1
            if finished and graded:
                graded_gathered(addresses, s * sliver_addresses, lengths, runs, b, start, b_stride, c, row_of,
                                first_row, col, not first_slice, after, bias, alpha)
            elif finished:
                finished_gathered(addresses, s * sliver_addresses, lengths, runs, b, start, b_stride, c, row_of,
                                  first_row, col, not first_slice, after, bias, epilogue)
            elif whole:
                micro_kernel_gathered(addresses, s * sliver_addresses, lengths, runs, b, start, b_stride, c, row_of,
                                      first_row, col, not first_slice, after)
            else:
                micro_kernel_gathered(addresses, s * sliver_addresses, lengths, runs, b, start, b_stride, edge,
                                      in_order, 0, 0, False, after)
            rest = last_slice and rest_to_apply(finished, epilogue)
            if whole and not rest:
                continue
            run = tile_rows if row_of[first_row + tile_rows - 1] - row_of[first_row] == tile_rows - 1 else 1
            for i in range(0, tile_rows, run):
                if not whole:
                    add_edge(c, edge[i:i + run], row_of[first_row + i], col, run, tile_cols, not first_slice)
                if rest:
                    rest_of_epilogue(c, row_of[first_row + i], col, run, tile_cols, finished, bias, epilogue)
    if last_slice and not by_tile:
        run = rows if row_of[rows - 1] - row_of[0] == rows - 1 else 1
        for i in range(0, rows, run):
            apply_epilogue(c, row_of[i], col0, run, cols, bias, False, activation, alpha)


# without reference counts, as matmul.multiply_block (matmul.py says why)
with slp_vectorize():
    multiply_gathered = numba.njit(
        void(int64[:, :, ::1], int64[::1], int64, READ_ONLY, int64, int64, int64, MATRIX, int64[::1], int64, int64,
             int64, boolean, boolean, READ_ONLY, boolean, int64, float32, MATRIX, int64[::1]),
        fastmath=FASTMATH, cache=True, _nrt=False)(multiply_gathered)
