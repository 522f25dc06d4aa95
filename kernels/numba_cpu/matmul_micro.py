"""The matmul micro-kernel: an MR x NR tile of C held in vector registers for a whole k loop.

NR = 2 vectors (simd.py): 32 columns where the CPU has AVX-512, 16 with AVX2. MR = 12 rows with
AVX-512, 6 with AVX2: 24 or 12 accumulators.
Why these shapes: an FMA takes 4 cycles and a core starts one or two a cycle, so at least 8
independent accumulators must be in flight; more of them also means fewer loads per FMA. Each k
step loads 2 vectors of B and broadcasts MR floats of A for 2 * MR FMAs. AVX2 has 16 vector
registers: 12 accumulators, 2 B vectors and a broadcast fill 15. AVX-512 has 32: 24 accumulators
+ 3 fill 27, and the 12-row tile ran 10-15% faster than the 6-row one on an Intel core with two
FMA ports (measured in isolation: 6 x 32 at ~75% of the core's FMA peak, 12 x 32 at ~85%).

Per k step: MR + NR floats loaded, MR * NR FMAs (2 * MR * NR FLOPs). The packed slivers are
contiguous, so the loads stream from L1. A tile's last slice can finish it in registers: + bias,
then leaky ReLU, before the store (the "finished" kernels).

How the pieces compile: the loops and stores that take or return a tile's accumulators whole
(tile_product, in_place_product, write_tile, finish_tile, write_left) are inlined by Numba
(inline="always"), which types and copies their code again at every place they are called; the
small pieces inside them (a row's FMAs, one row's store) are plain functions, compiled once, which
LLVM inlines on its own into the same loops (a test checks that no tile calls one). Inlining those
by Numba too had cost a third of the compile (AMD EPYC Zen 4, CPU s): importing matmul.py 17-18 ->
10.5, with every loop 30 -> 23, attention's files 54 -> 36.
"""

import llvmlite.binding
import numba
import numpy as np
from numba import boolean, float32, int64, void

READ_ONLY = numba.types.Array(float32, 1, "C", readonly=True)

from pyai.kernels.numba_cpu.epilogue import LEAKY_RELU
from pyai.kernels.numba_cpu.simd import (WIDTH, add, address, biased_leaky, fma, load, opaque, prefetch,
                                         prefetch_for_write, splat, splat_at, splat_from, store, times_leaky_gradient,
                                         zeros)

ROWS_PER_GROUP = 6
MR, NR = (12 if WIDTH == 16 else 6), 2 * WIDTH
# The k steps of a tile that each ask for a row of its C (prefetch_row): MR, but none under LLVM's
# AMD schedules (znver), where the loop they split off spilled an accumulator a step
TARGET_CPU = numba.config.CPU_NAME or llvmlite.binding.get_host_cpu_name()
LEAD_STEPS = 0 if TARGET_CPU.startswith("znver") else MR
# The k steps ahead that a packing tile (packing_product) asks for B's row: B's rows are lines
# of different pages, which no prefetcher follows (Intel Xeon, family 6 model 207: without it,
# packing in the tiles lost 4-6 points of the FMA peak to the pass of its own; 4, 8, 12 or 16
# ahead alike within the noise, and 16 or 32 no better where B comes from L3: 64 x 256 -> 6272);
# the last steps ask for rows past B's end, which a prefetch may: it never faults
PACK_AHEAD = 8
# The epilogue a finished tile applies as it is stored: (has_bias, activation, alpha), the bias
# an array beside it; of the activations, leaky ReLU (the others: epilogue.apply_epilogue).
EPILOGUE = numba.types.Tuple((boolean, int64, float32))
NO_BIAS = np.zeros(1, np.float32)


def micro_kernel_reference(a_sliver, b_sliver, c, row, col, accumulate):
    """The plain version: c[row:row+MR, col:col+NR] (+)= a_sliver.T @ b_sliver."""
    if accumulate:
        c[row:row + MR, col:col + NR] += a_sliver.T @ b_sliver
    else:
        c[row:row + MR, col:col + NR] = a_sliver.T @ b_sliver


@numba.njit(cache=True)
def zero_rows():
    """The accumulators of 6 rows: (row 0 left, row 0 right, row 1 left, ...)."""
    z = zeros()
    return (z, z, z, z, z, z, z, z, z, z, z, z)


@numba.njit(cache=True)
def fma_rows(a0, a1, a2, a3, a4, a5, b0, b1, acc):
    """acc (6 rows of 2 vectors) += (a0 .. a5, each one row's A float in every lane) x (b0, b1)."""
    return (fma(a0, b0, acc[0]), fma(a0, b1, acc[1]), fma(a1, b0, acc[2]), fma(a1, b1, acc[3]),
            fma(a2, b0, acc[4]), fma(a2, b1, acc[5]), fma(a3, b0, acc[6]), fma(a3, b1, acc[7]),
            fma(a4, b0, acc[8]), fma(a4, b1, acc[9]), fma(a5, b0, acc[10]), fma(a5, b1, acc[11]))


@numba.njit(cache=True)
def fma_six_rows_in_place(a, start, stride, b0, b1, acc):
    """acc += (a[start], a[start + stride], .. a[start + 5 stride]) x (b0, b1): six rows of A read
    where they lie (row-major, `stride` floats apart)."""
    return fma_rows(splat_at(a, start), splat_at(a, start + stride), splat_at(a, start + 2 * stride),
                    splat_at(a, start + 3 * stride), splat_at(a, start + 4 * stride),
                    splat_at(a, start + 5 * stride), b0, b1, acc)


@numba.njit(cache=True)
def fma_six_rows_at(rows, first, p, b0, b1, acc):
    """acc += (the floats at rows[first] + 4p, .. rows[first + 5] + 4p) x (b0, b1): six rows of A
    read at their addresses (simd.address), wherever they lie."""
    return fma_rows(splat_from(rows[first] + 4 * p), splat_from(rows[first + 1] + 4 * p),
                    splat_from(rows[first + 2] + 4 * p), splat_from(rows[first + 3] + 4 * p),
                    splat_from(rows[first + 4] + 4 * p), splat_from(rows[first + 5] + 4 * p), b0, b1, acc)


@numba.njit(cache=True)
def consecutive(row):
    """The C rows of a tile that starts at `row` (a tile's rows, as the writes below take them:
    12 row numbers, of which an MR = 6 tile uses the first 6)."""
    return (row, row + 1, row + 2, row + 3, row + 4, row + 5,
            row + 6, row + 7, row + 8, row + 9, row + 10, row + 11)


@numba.njit(cache=True)
def write_vector(c, row, col, vector, accumulate):
    """c[row, col:col + WIDTH] = vector, or += when accumulating."""
    start = row * c.shape[1] + col
    store(c, start, add(load(c, start), vector) if accumulate else vector)


@numba.njit(cache=True)
def write_row(c, row, col, left, right, accumulate):
    """c[row, col:col + NR] = (left, right), or += when accumulating."""
    write_vector(c, row, col, left, accumulate)
    write_vector(c, row, col + WIDTH, right, accumulate)


@numba.njit(cache=True)
def write_six_rows(c, rows, first, col, acc, accumulate):
    """The accumulators of 6 rows to C's rows rows[first] .. rows[first + 5]."""
    write_row(c, rows[first], col, acc[0], acc[1], accumulate)
    write_row(c, rows[first + 1], col, acc[2], acc[3], accumulate)
    write_row(c, rows[first + 2], col, acc[4], acc[5], accumulate)
    write_row(c, rows[first + 3], col, acc[6], acc[7], accumulate)
    write_row(c, rows[first + 4], col, acc[8], acc[9], accumulate)
    write_row(c, rows[first + 5], col, acc[10], acc[11], accumulate)


@numba.njit(cache=True)
def write_six_left(c, rows, first, col, acc, accumulate):
    """The left vectors of 6 rows' accumulators to C's rows rows[first] .. rows[first + 5]."""
    write_vector(c, rows[first], col, acc[0], accumulate)
    write_vector(c, rows[first + 1], col, acc[2], accumulate)
    write_vector(c, rows[first + 2], col, acc[4], accumulate)
    write_vector(c, rows[first + 3], col, acc[6], accumulate)
    write_vector(c, rows[first + 4], col, acc[8], accumulate)
    write_vector(c, rows[first + 5], col, acc[10], accumulate)


@numba.njit(inline="always", cache=True)
def write_left(c, rows, col, top, bottom, accumulate):
    """The left vector of each of the tile's MR rows to C's rows `rows`, columns col .. col +
    WIDTH: a narrow tile's (the right vectors are never stored, so their FMAs compile away)."""
    write_six_left(c, rows, 0, col, top, accumulate)
    if MR == 2 * ROWS_PER_GROUP:
        write_six_left(c, rows, ROWS_PER_GROUP, col, bottom, accumulate)


@numba.njit(cache=True)
def finish_row(c, row, col, left, right, accumulate, bias_left, bias_right, slope):
    """write_row, then + bias and leaky ReLU in registers before the store (simd.biased_leaky:
    the same float32 operations as epilogue.apply_epilogue's; a separate pass over the stored
    tile cost 4-8% of a 1024 x 128 x N linear on one core)."""
    start = row * c.shape[1] + col
    if accumulate:
        left = add(load(c, start), left)
        right = add(load(c, start + WIDTH), right)
    store(c, start, biased_leaky(left, bias_left, slope))
    store(c, start + WIDTH, biased_leaky(right, bias_right, slope))


@numba.njit(cache=True)
def finish_six_rows(c, rows, first, col, acc, accumulate, bias_left, bias_right, slope):
    finish_row(c, rows[first], col, acc[0], acc[1], accumulate, bias_left, bias_right, slope)
    finish_row(c, rows[first + 1], col, acc[2], acc[3], accumulate, bias_left, bias_right, slope)
    finish_row(c, rows[first + 2], col, acc[4], acc[5], accumulate, bias_left, bias_right, slope)
    finish_row(c, rows[first + 3], col, acc[6], acc[7], accumulate, bias_left, bias_right, slope)
    finish_row(c, rows[first + 4], col, acc[8], acc[9], accumulate, bias_left, bias_right, slope)
    finish_row(c, rows[first + 5], col, acc[10], acc[11], accumulate, bias_left, bias_right, slope)


@numba.njit(cache=True)
def grade_row(c, row, col, left, right, accumulate, y, slope):
    """write_row, then times the gradient of the leaky ReLU whose output y (C's shape, flat) lies
    at the same place, in registers (simd.times_leaky_gradient: the floats of
    epilogue.LEAKY_RELU_GRAD's pass over the stored tile)."""
    start = row * c.shape[1] + col
    if accumulate:
        left = add(load(c, start), left)
        right = add(load(c, start + WIDTH), right)
    store(c, start, times_leaky_gradient(left, load(y, start), slope))
    store(c, start + WIDTH, times_leaky_gradient(right, load(y, start + WIDTH), slope))


@numba.njit(cache=True)
def grade_six_rows(c, rows, first, col, acc, accumulate, y, slope):
    grade_row(c, rows[first], col, acc[0], acc[1], accumulate, y, slope)
    grade_row(c, rows[first + 1], col, acc[2], acc[3], accumulate, y, slope)
    grade_row(c, rows[first + 2], col, acc[4], acc[5], accumulate, y, slope)
    grade_row(c, rows[first + 3], col, acc[6], acc[7], accumulate, y, slope)
    grade_row(c, rows[first + 4], col, acc[8], acc[9], accumulate, y, slope)
    grade_row(c, rows[first + 5], col, acc[10], acc[11], accumulate, y, slope)


@numba.njit(cache=True)
def prefetch_tile(c, rows, col, count):
    """Ask for the lines of C's rows rows[0] .. rows[count - 1], columns col .. col + NR, to be
    written: they arrive while the k loop runs, so the stores at its end do not wait on C coming
    from L3."""
    for i in range(count):
        start = rows[i] * c.shape[1] + col
        prefetch_for_write(c, start)
        prefetch_for_write(c, start + NR - 1)


@numba.njit(cache=True)
def prefetch_row(c, row, col):
    """prefetch_tile for one row of the tile: the packed and in-place k loops ask for their tile's
    rows one a step over their first MR steps (lead_rows), not for its 24 lines at once before the
    loop. With C beyond L2, the burst had cost an Intel core 5-7% of a shallow product (a likely
    reason, not measured: this VM has no counters: 24 misses to L3 outnumber the L1's 16 fill
    buffers, and the loop's first loads wait behind them). Intel Xeon, family 6 model 207, 2
    threads, best % of the FMA peak, old and new alternating, the same floats: 2048 x 128 x 512
    79 -> 84, with a bias 77 -> 82, 2048 x 128 x 384 with a bias 77 -> 81, 6272 x 576 x 128 87 ->
    90, 12544 x 64 x 64 61 -> 68, 1024^3 84 -> 86. No prefetch at all ran as well as this there;
    the prefetch stays for the cores where C's lines arriving late had cost (README). Compiled for
    an AMD core (LEAD_STEPS 0), the tiles ask for the whole tile before the loop, as before: split
    in two, the k loop spilled an accumulator to the stack every step under LLVM's znver4 and
    znver5 schedules (test_simd's register test; not measured for speed there)."""
    start = row * c.shape[1] + col
    prefetch_for_write(c, start)
    prefetch_for_write(c, start + NR - 1)


@numba.njit(cache=True)
def lead_rows(c, rows, col, depth):
    """The k steps that ask for a row of the tile each (prefetch_row): LEAD_STEPS, or a loop shorter
    than that; the rows past them are asked for here, at once."""
    lead = min(depth, LEAD_STEPS) if LEAD_STEPS else 0
    for i in range(lead, MR):
        prefetch_row(c, rows[0] + i, col)
    return lead


@numba.njit(cache=True)
def prefetch_tile_to_read(y, width, rows, col):
    """Ask for the lines of y (rows `width` floats long, flat) that lie where the MR x NR tile at
    C's rows `rows`, column col, does, to be read as the tile is stored (grade_tile): they arrive
    while the k loop runs."""
    for i in range(MR):
        start = rows[i] * width + col
        prefetch(y, start)
        prefetch(y, start + NR - 1)


@numba.njit(inline="always", cache=True)
def write_eight_rows(c, rows, col, top, bottom, accumulate):
    """The tile's first 8 rows to C's rows rows[0] .. rows[7]: the top group and the bottom
    group's first 2 rows (its other 4 rows are never stored, so their FMAs compile away)."""
    write_six_rows(c, rows, 0, col, top, accumulate)
    write_row(c, rows[ROWS_PER_GROUP], col, bottom[0], bottom[1], accumulate)
    write_row(c, rows[ROWS_PER_GROUP + 1], col, bottom[2], bottom[3], accumulate)


@numba.njit(inline="always", cache=True)
def write_tile(c, rows, col, top, bottom, accumulate):
    """The MR x NR tile's accumulators to C's rows `rows` (consecutive or listed; top: its first
    6 rows, bottom: the next 6)."""
    write_six_rows(c, rows, 0, col, top, accumulate)
    if MR == 2 * ROWS_PER_GROUP:
        write_six_rows(c, rows, ROWS_PER_GROUP, col, bottom, accumulate)


@numba.njit(inline="always", cache=True)
def grade_tile(c, rows, col, top, bottom, accumulate, y, alpha):
    """write_tile, then times the gradient of a leaky ReLU of slope alpha whose output is y
    (grade_row): a layer's input gradient made the pre-activation gradient of the layer below."""
    slope = splat(alpha)
    grade_six_rows(c, rows, 0, col, top, accumulate, y, slope)
    if MR == 2 * ROWS_PER_GROUP:
        grade_six_rows(c, rows, ROWS_PER_GROUP, col, bottom, accumulate, y, slope)


@numba.njit(inline="always", cache=True)
def finish_tile(c, rows, col, top, bottom, accumulate, bias, epilogue):
    """write_tile with the epilogue's bias and leaky ReLU (epilogue: has_bias, activation,
    alpha): without a bias it adds -0.0, without leaky ReLU its slope is 1, both exact, so one
    branch-free path serves every case; bias[col:col + NR] is read once."""
    has_bias, activation, alpha = epilogue
    if has_bias:
        bias_left, bias_right = load(bias, col), load(bias, col + WIDTH)
    else:
        bias_left, bias_right = splat(np.float32(-0.0)), splat(np.float32(-0.0))
    slope = splat(alpha if activation == LEAKY_RELU else np.float32(1))
    finish_six_rows(c, rows, 0, col, top, accumulate, bias_left, bias_right, slope)
    if MR == 2 * ROWS_PER_GROUP:
        finish_six_rows(c, rows, ROWS_PER_GROUP, col, bottom, accumulate, bias_left, bias_right, slope)


@numba.njit(inline="always", cache=True)
def tile_product(a, a_start, depth, b, b_start, b_stride, c, rows, col):
    """The accumulators (top, bottom: 6 rows each) of A^T @ B for the tile in C's rows `rows`,
    columns col .. col + NR, over `depth` steps: A a packed sliver, its row p the MR floats from
    a[a_start + p * MR] (a flat, or a C-contiguous sliver with a_start 0), row p of B
    b[b_start + p * b_stride:][:NR]. Rows in groups of 6 (one group with AVX2, two with AVX-512:
    MR is a constant, so the second group compiles away where it is unused)."""
    top = zero_rows()
    bottom = zero_rows()
    lead = lead_rows(c, rows, col, depth)
    for p in range(lead):
        prefetch_row(c, rows[0] + p, col)
        top, bottom = packed_step(a, a_start, p, b, b_start, b_stride, top, bottom)
    for p in range(lead, depth):
        top, bottom = packed_step(a, a_start, p, b, b_start, b_stride, top, bottom)
    return top, bottom


@numba.njit(inline="always", cache=True)
def packed_step(a, a_start, p, b, b_start, b_stride, top, bottom):
    """One k step of tile_product."""
    b0 = load(b, b_start + p * b_stride)
    b1 = load(b, b_start + p * b_stride + WIDTH)
    top = fma_six_rows_in_place(a, a_start + p * MR, 1, b0, b1, top)
    if MR == 2 * ROWS_PER_GROUP:
        bottom = fma_six_rows_in_place(a, a_start + p * MR + ROWS_PER_GROUP, 1, b0, b1, bottom)
    return top, bottom


@numba.njit(inline="always", cache=True)
def in_place_steps(a, a_start, a_stride, a_step, first, depth, b, b_start, b_stride, c, rows, col):
    """in_place_product's loop, for a constant a_stride or a_step."""
    top = zero_rows()
    bottom = zero_rows()
    lead = lead_rows(c, rows, col, depth)
    for p in range(first, first + lead):
        prefetch_row(c, rows[0] + p - first, col)
        top, bottom = in_place_step(a, a_start, a_stride, a_step, first, p, b, b_start, b_stride, top, bottom)
    for p in range(first + lead, first + depth):
        top, bottom = in_place_step(a, a_start, a_stride, a_step, first, p, b, b_start, b_stride, top, bottom)
    return top, bottom


@numba.njit(inline="always", cache=True)
def in_place_step(a, a_start, a_stride, a_step, first, p, b, b_start, b_stride, top, bottom):
    """One k step of in_place_steps."""
    b0 = load(b, b_start + (p - first) * b_stride)
    b1 = load(b, b_start + (p - first) * b_stride + WIDTH)
    top = fma_six_rows_in_place(a, a_start + p * a_step, a_stride, b0, b1, top)
    if MR == 2 * ROWS_PER_GROUP:
        bottom = fma_six_rows_in_place(a, a_start + ROWS_PER_GROUP * a_stride + p * a_step, a_stride, b0, b1, bottom)
    return top, bottom


@numba.njit(inline="always", cache=True)
def packing_product(a, a_start, depth, b, b_start, b_stride, packed, packed_start, c, rows, col):
    """tile_product for a row-major B read where it lies (b_stride its row length), each row's NR
    floats stored as they are read at packed[packed_start + p * NR:]: the tile packs its B sliver
    (pack_b's rows, in pack_b's layout) for the tiles after it; the stores come after the FMAs,
    which read A: LLVM cannot tell the two arrays apart, and with the stores first its znver and
    skylake-avx512 schedules shuffled the accumulators through the stack every step."""
    top = zero_rows()
    bottom = zero_rows()
    lead = lead_rows(c, rows, col, depth)
    for p in range(lead):
        prefetch_row(c, rows[0] + p, col)
        top, bottom = packing_step(a, a_start, p, b, b_start, b_stride, packed, packed_start, top, bottom)
    for p in range(lead, depth):
        top, bottom = packing_step(a, a_start, p, b, b_start, b_stride, packed, packed_start, top, bottom)
    return top, bottom


@numba.njit(inline="always", cache=True)
def packing_step(a, a_start, p, b, b_start, b_stride, packed, packed_start, top, bottom):
    """One k step of packing_product."""
    ahead = b_start + (p + PACK_AHEAD) * b_stride
    prefetch(b, ahead)
    prefetch(b, ahead + WIDTH)
    prefetch(b, ahead + NR - 1)
    b0 = load(b, b_start + p * b_stride)
    b1 = load(b, b_start + p * b_stride + WIDTH)
    top = fma_six_rows_in_place(a, a_start + p * MR, 1, b0, b1, top)
    if MR == 2 * ROWS_PER_GROUP:
        bottom = fma_six_rows_in_place(a, a_start + p * MR + ROWS_PER_GROUP, 1, b0, b1, bottom)
    store(packed, packed_start + p * NR, b0)
    store(packed, packed_start + p * NR + WIDTH, b1)
    return top, bottom


@numba.njit(cache=True)
def row_addresses(a, start, stride):
    """The addresses (simd.address) of a[start + r * stride] for a 12-row tile's rows r, in
    consecutive's form, each through simd.opaque: LLVM cannot tell they are one stride apart, so
    it keeps each in a register of its own rather than walking them again every step."""
    return (opaque(address(a, start)), opaque(address(a, start + stride)), opaque(address(a, start + 2 * stride)),
            opaque(address(a, start + 3 * stride)), opaque(address(a, start + 4 * stride)),
            opaque(address(a, start + 5 * stride)), opaque(address(a, start + 6 * stride)),
            opaque(address(a, start + 7 * stride)), opaque(address(a, start + 8 * stride)),
            opaque(address(a, start + 9 * stride)), opaque(address(a, start + 10 * stride)),
            opaque(address(a, start + 11 * stride)))


@numba.njit(inline="always", cache=True)
def row_major_product(a, a_start, a_stride, first, depth, b, b_start, b_stride, c, rows, col):
    """in_place_product for a row-major A (a_step 1) and AVX-512's 12-row tile: the rows' addresses
    in registers, each stepped a float at a time, as matmul_gathered's tiles read an image's
    rows. in_place_steps's rows, found each step from one address and the stride, took a chain
    of adds, and the 24 accumulators, 2 B vectors and 6 broadcasts fill all 32 registers: under
    LLVM's znver4 and znver5 schedules one accumulator went to the stack and back every step (a
    test checks the tiles' loops for that). Its own kernels, micro_kernel_rows and finished_rows:
    inside micro_kernel_in_place, beside the transposed loop, it ran 25088 x 9 x 64 in 182-193
    us, alone in 143-151. AMD EPYC Zen 5, 2 threads, a process each, old and new alternating, best
    us, same floats: 2048 x 128 x 128 204 -> 163, 6272 x 576 x 128 2497-2571 -> 1929-1963,
    12544 x 64 x 64 312-318 -> 253, 25088 x 9 x 64 155-164 -> 143-151, 64 x 784 x 512 (few rows)
    181 -> 152; products that pack A unchanged. A narrow tile (12 accumulators, registers to
    spare) keeps in_place_steps: this loop ran 12544 x 64 x 9 at 147-169 us against 135. So does
    AVX2's 6-row tile, where it was 1-3% slower (PYAI_VECTOR_WIDTH=8, same core)."""
    at = row_addresses(a, a_start + first, a_stride)
    top = zero_rows()
    bottom = zero_rows()
    lead = lead_rows(c, rows, col, depth)
    for p in range(lead):
        prefetch_row(c, rows[0] + p, col)
        top, bottom = rows_step(at, p, b, b_start, b_stride, top, bottom)
    for p in range(lead, depth):
        top, bottom = rows_step(at, p, b, b_start, b_stride, top, bottom)
    return top, bottom


@numba.njit(inline="always", cache=True)
def rows_step(at, p, b, b_start, b_stride, top, bottom):
    """One k step of row_major_product."""
    b0 = load(b, b_start + p * b_stride)
    b1 = load(b, b_start + p * b_stride + WIDTH)
    top = fma_six_rows_at(at, 0, p, b0, b1, top)
    if MR == 2 * ROWS_PER_GROUP:
        bottom = fma_six_rows_at(at, ROWS_PER_GROUP, p, b0, b1, bottom)
    return top, bottom


@numba.njit(inline="always", cache=True)
def in_place_product(a, a_start, a_stride, a_step, first, depth, b, b_start, b_stride, c, rows, col):
    """tile_product with A unpacked, `depth` steps p from `first` on: the tile's A[r, p] is
    a[a_start + r * a_stride + p * a_step], a row-major A (a_step 1) or a transposed one
    (a_stride 1: a stored row holds every tile row's float p side by side). Each compiled with
    its 1 a constant: with both strides variables, LLVM walked the six rows' addresses as one
    chain of adds, 12 dependent adds a 24-FMA step pair (12544 x 576 x 64, row-major A: 3-5%
    slower, AMD EPYC Zen 3)."""
    if a_step == 1:
        return in_place_steps(a, a_start, a_stride, 1, first, depth, b, b_start, b_stride, c, rows, col)
    return in_place_steps(a, a_start, 1, a_step, first, depth, b, b_start, b_stride, c, rows, col)


def micro_kernel(a_sliver, b_sliver, c, row, col, accumulate):
    """c[row:row+MR, col:col+NR] = a_sliver.T @ b_sliver, or += when accumulating, for
    C-contiguous a_sliver (kc, MR), b_sliver (kc, NR) and c: B packed, NR floats a row."""
    rows = consecutive(row)
    top, bottom = tile_product(a_sliver, 0, a_sliver.shape[0], b_sliver, 0, NR, c, rows, col)
    write_tile(c, rows, col, top, bottom, accumulate)


# compiled into the attention kernels' loops, its callers (matmul uses the strided one), whose
# tiles run only D or a key tile's steps: no call a tile (AMD EPYC Zen 3, old and new alternating:
# the backward 0.87-0.98 of the time at 16 x 4 x 128 x 32, about 0.95 at 1 x 8 x 1024 x 64; the
# forward the same within the noise)
micro_kernel = numba.njit(inline="always", cache=True)(micro_kernel)

# Each tile kernel below comes twice: plain, and "finished" for a tile's last slice, which adds
# the bias and applies leaky ReLU (finish_tile) as it stores the tile; the bias is indexed by C's
# column. Two compiled functions rather than one with the epilogue as an argument: the plain one
# keeps its stores free of the epilogue (measured: 1-4% on a plain product).
# The tile kernels take their arrays whole, with offsets, never a view made for the tile: a view
# costs a reference count taken and dropped, two locked instructions, and a locked instruction
# waits for the tile's stores to C to reach the cache (a weight gradient of 1024 x 64 x 784 on
# one core of an AMD EPYC Zen 3 spent 8% of its time in them).
STRIDED = (float32[::1], int64, int64, READ_ONLY, int64, int64, float32[:, ::1], int64, int64, boolean)
IN_PLACE = (READ_ONLY, int64, int64, int64, int64, int64, READ_ONLY, int64, int64, float32[:, ::1], int64, int64,
            boolean)
ROW_MAJOR = IN_PLACE[:3] + IN_PLACE[4:]   # IN_PLACE without a_step, which is 1
PACKING = STRIDED[:6] + (float32[::1], int64) + STRIDED[6:]   # STRIDED and the sliver packed


@numba.njit(void(*STRIDED), cache=True)
def micro_kernel_strided(a, a_start, depth, b, b_start, b_stride, c, row, col, accumulate):
    """The same tile for `depth` steps, its packed A sliver at a[a_start:], with B read in place:
    row p of B is b[b_start + p * b_stride:][:NR], from a packed buffer (b_stride NR) or from a
    row-major matrix itself (b_stride its row length)."""
    rows = consecutive(row)
    top, bottom = tile_product(a, a_start, depth, b, b_start, b_stride, c, rows, col)
    write_tile(c, rows, col, top, bottom, accumulate)


@numba.njit(void(*STRIDED, READ_ONLY, EPILOGUE), cache=True)
def finished_strided(a, a_start, depth, b, b_start, b_stride, c, row, col, accumulate, bias, epilogue):
    rows = consecutive(row)
    top, bottom = tile_product(a, a_start, depth, b, b_start, b_stride, c, rows, col)
    finish_tile(c, rows, col, top, bottom, accumulate, bias, epilogue)


@numba.njit(void(*PACKING), cache=True)
def packing_kernel(a, a_start, depth, b, b_start, b_stride, packed, packed_start, c, row, col, accumulate):
    """micro_kernel_strided's tile of a row-major B read where it lies, packing the B sliver it
    reads into packed[packed_start:] as it goes (packing_product): the packing costs two stores a
    k step among the tile's FMAs, not a pass of its own."""
    rows = consecutive(row)
    top, bottom = packing_product(a, a_start, depth, b, b_start, b_stride, packed, packed_start, c, rows, col)
    write_tile(c, rows, col, top, bottom, accumulate)


@numba.njit(void(*PACKING, READ_ONLY, EPILOGUE), cache=True)
def finished_packing(a, a_start, depth, b, b_start, b_stride, packed, packed_start, c, row, col, accumulate, bias,
                     epilogue):
    rows = consecutive(row)
    top, bottom = packing_product(a, a_start, depth, b, b_start, b_stride, packed, packed_start, c, rows, col)
    finish_tile(c, rows, col, top, bottom, accumulate, bias, epilogue)


@numba.njit(void(*IN_PLACE), cache=True)
def micro_kernel_in_place(a, a_start, a_stride, a_step, first, depth, b, b_start, b_stride, c, row, col, accumulate):
    """micro_kernel_strided's tile with A unpacked: the tile's A[r, p] is
    a[a_start + r * a_stride + p * a_step], A row-major (a_step 1) or transposed (a_stride 1),
    for `depth` steps p from `first` on.
    The same FMAs in the same order as from a packed sliver, so the same floats; no packing,
    where few columns of B would reuse it little."""
    rows = consecutive(row)
    top, bottom = in_place_product(a, a_start, a_stride, a_step, first, depth, b, b_start, b_stride, c, rows, col)
    write_tile(c, rows, col, top, bottom, accumulate)


@numba.njit(void(*IN_PLACE), cache=True)
def narrow_kernel_in_place(a, a_start, a_stride, a_step, first, depth, b, b_start, b_stride, c, row, col, accumulate):
    """The left WIDTH columns of micro_kernel_in_place's tile (as narrow_kernel_strided's of
    micro_kernel_strided's)."""
    rows = consecutive(row)
    top, bottom = in_place_product(a, a_start, a_stride, a_step, first, depth, b, b_start, b_stride, c, rows, col)
    write_left(c, rows, col, top, bottom, accumulate)


@numba.njit(void(*IN_PLACE, READ_ONLY, EPILOGUE), cache=True)
def finished_in_place(a, a_start, a_stride, a_step, first, depth, b, b_start, b_stride, c, row, col, accumulate,
                      bias, epilogue):
    rows = consecutive(row)
    top, bottom = in_place_product(a, a_start, a_stride, a_step, first, depth, b, b_start, b_stride, c, rows, col)
    finish_tile(c, rows, col, top, bottom, accumulate, bias, epilogue)


@numba.njit(void(*ROW_MAJOR), cache=True)
def micro_kernel_rows(a, a_start, a_stride, first, depth, b, b_start, b_stride, c, row, col, accumulate):
    """micro_kernel_in_place's tile for a row-major A, its row r's float p at
    a[a_start + r * a_stride + p], on AVX-512 (row_major_product)."""
    rows = consecutive(row)
    top, bottom = row_major_product(a, a_start, a_stride, first, depth, b, b_start, b_stride, c, rows, col)
    write_tile(c, rows, col, top, bottom, accumulate)


@numba.njit(cache=True)
def clamped_row_addresses(a, start, stride, rows):
    """row_addresses for a last sliver of `rows` rows (fewer than MR): the rows past them read the
    last one again, where a row past A's end would be read (their sums are computed and never
    stored: the tile goes to the edge tile, whose first `rows` rows are added to C)."""
    last = rows - 1
    return (opaque(address(a, start)), opaque(address(a, start + min(1, last) * stride)),
            opaque(address(a, start + min(2, last) * stride)), opaque(address(a, start + min(3, last) * stride)),
            opaque(address(a, start + min(4, last) * stride)), opaque(address(a, start + min(5, last) * stride)),
            opaque(address(a, start + min(6, last) * stride)), opaque(address(a, start + min(7, last) * stride)),
            opaque(address(a, start + min(8, last) * stride)), opaque(address(a, start + min(9, last) * stride)),
            opaque(address(a, start + min(10, last) * stride)), opaque(address(a, start + min(11, last) * stride)))


@numba.njit(void(*ROW_MAJOR, int64), cache=True)
def ragged_kernel_rows(a, a_start, a_stride, first, depth, b, b_start, b_stride, c, row, col, accumulate, rows):
    """micro_kernel_rows's tile for a row-major A's last sliver of `rows` rows, 7 to 11, read
    where they lie (clamped_row_addresses), not packed first: the same FMAs in the same order as
    from a packed sliver, so the same floats."""
    at = clamped_row_addresses(a, a_start + first, a_stride, rows)
    top = zero_rows()
    bottom = zero_rows()
    for p in range(depth):
        top, bottom = rows_step(at, p, b, b_start, b_stride, top, bottom)
    write_tile(c, consecutive(row), col, top, bottom, accumulate)


@numba.njit(void(*ROW_MAJOR, int64), cache=True)
def half_kernel_rows(a, a_start, a_stride, first, depth, b, b_start, b_stride, c, row, col, accumulate, rows):
    """ragged_kernel_rows for a last sliver of at most ROWS_PER_GROUP rows: the first
    ROWS_PER_GROUP rows of the tile only (as half_kernel_strided's of a packed sliver)."""
    at = clamped_row_addresses(a, a_start + first, a_stride, rows)
    top = zero_rows()
    for p in range(depth):
        b0 = load(b, b_start + p * b_stride)
        b1 = load(b, b_start + p * b_stride + WIDTH)
        top = fma_six_rows_at(at, 0, p, b0, b1, top)
    write_six_rows(c, consecutive(row), 0, col, top, accumulate)


@numba.njit(void(*ROW_MAJOR, READ_ONLY, EPILOGUE), cache=True)
def finished_rows(a, a_start, a_stride, first, depth, b, b_start, b_stride, c, row, col, accumulate, bias, epilogue):
    rows = consecutive(row)
    top, bottom = row_major_product(a, a_start, a_stride, first, depth, b, b_start, b_stride, c, rows, col)
    finish_tile(c, rows, col, top, bottom, accumulate, bias, epilogue)


@numba.njit(void(*STRIDED), cache=True)
def narrow_kernel_strided(a, a_start, depth, b, b_start, b_stride, c, row, col, accumulate):
    """The left WIDTH columns of micro_kernel_strided's tile: for a last B sliver that holds no
    more columns, where the whole tile would spend half its FMAs or more on padding (N = 784:
    24 slivers and a half)."""
    rows = consecutive(row)
    top, bottom = tile_product(a, a_start, depth, b, b_start, b_stride, c, rows, col)
    write_left(c, rows, col, top, bottom, accumulate)


@numba.njit(void(*STRIDED), cache=True)
def eight_kernel_strided(a, a_start, depth, b, b_start, b_stride, c, row, col, accumulate):
    """The first 8 rows of micro_kernel_strided's tile (MR = 12 only): for a last A sliver that
    holds 7 or 8 rows (a head of D = 32 = 2 x 12 + 8 in chunks of 12), where the whole tile would
    spend a third of its FMAs on padding."""
    rows = consecutive(row)
    top, bottom = tile_product(a, a_start, depth, b, b_start, b_stride, c, rows, col)
    write_eight_rows(c, rows, col, top, bottom, accumulate)


@numba.njit(void(*STRIDED), cache=True)
def half_kernel_strided(a, a_start, depth, b, b_start, b_stride, c, row, col, accumulate):
    """The first ROWS_PER_GROUP rows of micro_kernel_strided's tile: for a last A sliver that
    holds no more rows, where the whole tile would spend most of its FMAs on padding."""
    rows = consecutive(row)
    prefetch_tile(c, rows, col, ROWS_PER_GROUP)
    top = zero_rows()
    for p in range(depth):
        b0 = load(b, b_start + p * b_stride)
        b1 = load(b, b_start + p * b_stride + WIDTH)
        top = fma_six_rows_in_place(a, a_start + p * MR, 1, b0, b1, top)
    write_six_rows(c, rows, 0, col, top, accumulate)


@numba.njit(inline="always", cache=True)
def short_kernel_strided(a, a_start, depth, b, b_start, b_stride, c, row, col, accumulate, held):
    """micro_kernel_strided's tile where only the A sliver's first `held` rows are stored: the
    half tile for up to ROWS_PER_GROUP, with MR = 12 the 8-row one for 7 or 8, else the whole."""
    if held <= ROWS_PER_GROUP:
        half_kernel_strided(a, a_start, depth, b, b_start, b_stride, c, row, col, accumulate)
    elif MR == 2 * ROWS_PER_GROUP and held <= ROWS_PER_GROUP + 2:
        eight_kernel_strided(a, a_start, depth, b, b_start, b_stride, c, row, col, accumulate)
    else:
        micro_kernel_strided(a, a_start, depth, b, b_start, b_stride, c, row, col, accumulate)
