"""Implicit GEMM: the products of a convolution on the blocked matmul, with its windows read from
the image while the matmul packs them, never stored as an im2col matrix.

An image (N, H, W, C), NHWC, seen through a grid of GH x GW windows per image, each window a set
of taps at row offsets tap_rows[k] and column offsets tap_cols[l] from the window's corner
(a*step_h, b*step_w):
    windows[(n, a, b), (k, l, c)] = image[n, a*step_h + tap_rows[k], b*step_w + tap_cols[l], c]
                                    (0 outside the image)
a (N*GH*GW, taps*C) matrix. Row (n, a, b) of a product over the windows goes to row
    (n*OH + h0 + a*sh)*OW + w0 + b*sw
of C: row (n, a, b) itself by default (an OH x OW grid of OH = GH, OW = GW, h0 = w0 = 0, steps 1),
or a stride phase's pixel of a transposed convolution's output (conv2d_transpose.py). A
Conv2D's windows have its stride as the step and the kernel's rows less the padding as the
offsets (conv2d.py); a stride-1 transposed convolution's have step 1 and the padding less the
kernel's rows (conv2d_transpose.py). Two products use it:
    window_product:          C = epilogue(windows @ B)    B (taps*C, N) row-major, C (N*GH*GW, N)
    window_weight_product:   C = D^T @ windows            D (N*GH*GW, M) row-major, C (M, taps*C)
Both run the matmul's own loop nest (gemm_rectangle in matmul.py: blocking, thread rectangles, the
packed B slices) with an operand of windows on one side, (image, shape, taps, ...), for which this
file registers the loop's hooks (multiply_a_block, pack_b_operand: chosen by the operand's type as
Numba compiles the loop). The A side is never packed: for each block of windows and slice of depth
(WINDOW_KC deep, below), window_addresses writes where each window's run of channels for each tap
of the slice starts (in the image, or in a buffer of zeros for padding), and the tiles read the
rows there (matmul_gathered.micro_kernel_gathered: the same k loop as a packed sliver's, twelve row
addresses in registers). The B side's NR-column slivers
(packed[t, p, c] = windows[depth0 + p, col0 + t*NR + c]) are packed by pack_windows_b as runs of
contiguous channels; the packed panels, which stay in L2, are all there is of the windows. Except
in a weight product whose channels are whole NR slivers (each sliver's columns one run of a pixel's
channels): its threads read B's rows where they lie too (weight_rectangle): for each slice, a table
of each window's address for each tap (window_rows), from which the tiles load a sliver's row p
(matmul_gathered.micro_kernel_b_gathered), and, on AMD cores, the A side's, D's rows too
(PACKS_D). Packing B had taken 9-14% of such a product (AMD EPYC Zen 4, 2 threads, old and new
alternating, medians of best ms: a DCGAN's Conv2DTranspose weight gradients, 128 x 3136 x 1024
4.99 -> 4.55 and 64 x 12544 x 512 5.49 -> 4.71; a 3x3 conv's, 64 x 50176 x 576, 22.05 -> 19.81).
Cost: 2*rows*N*taps*C FLOPs (2*M*rows*taps*C); the image is read once per NC-column panel of C
(from cache for the taps after the first), B or D once per thread part, C written once; a deep
weight product is cut along K among the threads (DEPTH_SPLIT_SLICES), each part's C then added.
"""

import collections

import numba
import numba.extending
import numpy as np
from numba import float32, int64, void

from pyai.kernels.common import ACTIVATIONS
from pyai.kernels.numba_cpu import memory
from pyai.kernels.numba_cpu.blocking import MC, NC
from pyai.kernels.numba_cpu.epilogue import LEAKY_RELU_GRAD
from pyai.kernels.numba_cpu.matmul import (DEEPEST, FASTMATH, FLAT, KC, NO_BIAS, MATRIX, PANEL, add_edge, block_end,
                                           edge_tile, gemm_rectangle, multiply_a_block, pack_a, pack_b_operand,
                                           numba_threads, packed_rows, slp_vectorize, thread_count,
                                           thread_grid)
from pyai.kernels.numba_cpu.matmul_gathered import half_kernel_b_gathered, micro_kernel_b_gathered, multiply_gathered
from pyai.kernels.numba_cpu.matmul_micro import MR, NR, READ_ONLY, ROWS_PER_GROUP, TARGET_CPU
from pyai.kernels.numba_cpu.simd import WIDTH, address, aligned_floats, load, store, zeros

# Fewer channels than a vector: a tile would start a run of A's rows every few FMAs and the B
# side's packing would copy a float at a time, and an im2col matrix made by whole-pixel copies
# (im2col.py) is faster; the conv ops choose by this
PACKED_MIN_CHANNELS = WIDTH
# The depth of a window product's slices (A read in place): KC is what keeps a packed A sliver
# in L1, and these A rows are never packed, so a slice may take a 3x3 layer's whole 576: each
# tile then runs the whole depth in one chain and stores C once, with its epilogue, where three
# slices (256, 256 and a short 64) had stored and reloaded it twice. Old and new alternating,
# best of 40-60 calls (AMD EPYC Zen 5, 2 threads): a 14x14x64 -> 7x7x128 stride-2 conv, 128
# images, 1.96-1.99 -> 1.89-1.91 ms; 16 x 56x56x64 -> 64, 8.43-8.49 -> 7.57-7.72; a
# 7x7x128 -> 14x14x64 Conv2DTranspose (512 deep a phase), 3.50-3.62 -> 3.44-3.55. 1024 was as
# fast but for 2% on a 1024-deep input gradient, with an A block twice as big in L2.
WINDOW_KC = 512
# A block of windows (the A side's rows, each block's table of addresses made at once) is this many
# times the matmul's MC rows: each block starts cold (its first sliver's rows not asked for
# ahead), makes its corners and calls its tiles' loop. Old and new in turn, best of 40-60 (AMD
# EPYC Zen 5, 2 threads, MC 120): a Conv2DTranspose 128 x 14x14x64 -> 28x28x32 3.68 -> 3.575 ms,
# a 4x4 stride-2 input gradient 64 x 28x28x32 -> 14x14x64 1.66 -> 1.647, the discriminator's
# 3x3 stride-2 one (128 images) 2.04 -> 2.01, 16 x 56x56x64 -> 64 7.44 -> 7.38, the rest the same;
# 8 times was no faster, and slower for 16 x 14x14x256 -> 512 (14.87 -> 15.05) with its K slices
# 640 deep.
WINDOW_BLOCK_MC = 4
# A weight product read in place (weight_rectangle) at least this many KC slices deep a thread is
# cut along K, a run of slices a thread, each summed into its own C and the partials added at the
# end (weight_gemm_by_depth): cut by columns, every thread had read all of D and most of the
# image from memory. Old and new in turn (AMD EPYC Zen 5, 2 threads, best of 5-40): 64 x
# 56x56x64 -> 64 3x3 dw (200704 deep) 40.3-43.1 -> 34.7-35.1 ms; 64 x 14x14x64 -> 28x28x32
# ConvT dw (12544 deep) 2.09-2.28 -> 2.00-2.01; 128 x 14x14x64 -> 7x7x128 stride-2 dw (6272 deep,
# 12 slices a thread) 2.21-2.25 -> 2.12 alone, 2.35-2.40 -> 2.13-2.14 in a DCGAN step (medians of
# 40, where its operands come from memory); 64 x 7x7x128 -> 14x14x64 ConvT dw (3136 deep, 6
# slices a thread) slower cut by depth, 1.93 -> 2.07. The sums then differ from the column cut's
# by the order the partials are added in.
DEPTH_SPLIT_SLICES = 12
# Whether a weight product packs D's rows, its A side, a block and slice at a time (weight_rectangle)
# rather than have its tiles read them where they lie: a row of D holds step p of every row of A
# side by side, so in place a tile's step reads 48 bytes of a line 4 m bytes past the last step's.
# Packed on Intel cores, in place on AMD's (LLVM's znver names), where packing had cost 6% (see
# weight_rectangle). Intel Xeon, family 6 model 167, the two alternating in one process, median
# of 9-15 rounds' best of 5, in place -> packed, ms, the same floats: on 2 threads 128 x
# 14x14x64 -> 7x7x128 stride-2 dw 3.56-3.67 -> 3.39-3.49, 64 x 14x14x64 -> 28x28x32 ConvT dw
# 2.90-3.27 -> 2.76-3.18, 64 x 7x7x128 -> 14x14x64 ConvT dw 2.96-3.17 -> 2.73-3.02, 16 x
# 56x56x64 -> 64 3x3 dw 14.53-14.69 -> 14.12-14.29, 32 x 28x28x32 -> 64 3.42-3.59 -> 3.39; on one
# thread 0.94-0.99 of the time; the DCGAN step 0.985.
PACKS_D = not TARGET_CPU.startswith("znver")


class Windows:
    """The window grid of an image: shape (H, W, C, GH, GW, step_h, step_w, then where its
    products' rows go: OH, OW, h0, w0, sh, sw) and the tap offsets."""

    def __init__(self, height, width, channels, grid_height, grid_width, step, tap_rows, tap_cols, placed=None):
        placed = (grid_height, grid_width, 0, 0, 1, 1) if placed is None else placed
        self.shape = tuple(int(size) for size in (height, width, channels, grid_height, grid_width, *step, *placed))
        self.tap_rows = np.asarray(tap_rows, dtype=np.int64)
        self.tap_cols = np.asarray(tap_cols, dtype=np.int64)

    @property
    def depth(self):
        return len(self.tap_rows) * len(self.tap_cols) * self.shape[2]

    @property
    def per_image(self):
        return self.shape[3] * self.shape[4]


def windows_reference(image, windows):
    """The windows matrix of every image, in float64."""
    height, width, channels, grid_height, grid_width, step_h, step_w = windows.shape[:7]
    n = image.shape[0]
    out = np.zeros((n, grid_height, grid_width, len(windows.tap_rows), len(windows.tap_cols), channels))
    for a in range(grid_height):
        for b in range(grid_width):
            for k, row in enumerate(windows.tap_rows):
                for l, col in enumerate(windows.tap_cols):
                    h, w = a * step_h + row, b * step_w + col
                    if 0 <= h < height and 0 <= w < width:
                        out[:, a, b, k, l] = image[:, h, w]
    return out.reshape(n * windows.per_image, windows.depth)


def window_corners(shape, row0, count, corners):
    """corners[:, i] = (image, top row, left column, row of C) of window row0 + i, for i < count:
    the grid walked in order, with one division for the first."""
    (_, _, _, grid_height, grid_width, step_h, step_w, out_height, out_width, h0, w0, out_step_h, out_step_w) = shape
    n, q = row0 // (grid_height * grid_width), row0 % (grid_height * grid_width)
    a, b = q // grid_width, q % grid_width
    for i in range(count):
        corners[0, i] = n
        corners[1, i] = a * step_h
        corners[2, i] = b * step_w
        corners[3, i] = (n * out_height + h0 + a * out_step_h) * out_width + w0 + b * out_step_w
        b += 1
        if b == grid_width:
            b = 0
            a += 1
            if a == grid_height:
                a = 0
                n += 1


def window_addresses(image, shape, tap_rows, tap_cols, row0, rows, depth0, depth, rows_at, runs_at, corners, zero):
    """rows_at[s, j, r] = the address (simd.address) of windows[row0 + s*MR + r, the start of run
    j], the runs being the slice's taps, runs_at[0, j] floats each (their channels in depth0 ..
    + depth): a pixel's channels in the image, or `zero`'s for padding and rows past the last.
    Returns the number of runs. Each window's corner address first (in corners[0], in place of its
    image), then run by run with the run's offsets in registers: 12% of a window product's time
    when run by row (AMD EPYC Zen 3, one core, 64 x 14x14x64 windows of 2 x 2 taps, 32 columns)."""
    height, width, channels = shape[0], shape[1], shape[2]
    taps_w = tap_cols.shape[0]
    first = depth0 // channels
    runs = (depth0 + depth - 1) // channels + 1 - first
    for j in range(runs):
        tap = first + j
        c0 = max(depth0, tap * channels) - tap * channels
        runs_at[0, j] = min(depth0 + depth, (tap + 1) * channels) - tap * channels - c0
        runs_at[1, j] = tap_rows[tap // taps_w]
        runs_at[2, j] = tap_cols[tap % taps_w]
        runs_at[3, j] = 4 * ((runs_at[1, j] * width + runs_at[2, j]) * channels + c0)   # bytes from the corner
    nowhere = address(zero, 0)
    origin = address(image, 0)
    window_corners(shape, row0, rows, corners)
    for i in range(rows):
        corners[0, i] = origin + 4 * ((corners[0, i] * height + corners[1, i]) * width + corners[2, i]) * channels
    slivers = -(-rows // MR)
    for j in range(runs):
        tap_row, tap_col, offset = runs_at[1, j], runs_at[2, j], runs_at[3, j]
        for s in range(slivers):
            for r in range(MR):
                i = s * MR + r
                h, w = corners[1, i] + tap_row, corners[2, i] + tap_col
                inside = i < rows and h >= 0 and h < height and w >= 0 and w < width
                rows_at[s, j, r] = corners[0, i] + offset if inside else nowhere
    return runs


def pack_windows_b(image, shape, tap_rows, tap_cols, depth0, depth, col0, cols, packed, corners):
    """packed[t, p, c] = windows[depth0 + p, col0 + t*NR + c], zero past the last column (packed
    has matmul.packed_rows(depth) rows a sliver, as pack_b's, the last not written): tap by
    tap, each window's run of contiguous channels copied into the slivers it crosses (a whole
    sliver row, NR channels, as two vectors), zeros for padding."""
    height, width, channels = shape[0], shape[1], shape[2]
    taps_w = tap_cols.shape[0]
    slivers, sliver_rows = packed.shape[0], packed.shape[1]   # sliver_rows: packed_rows(depth)
    flat = packed.reshape(-1)
    window_corners(shape, depth0, depth, corners)
    for tap in range(col0 // channels, (col0 + cols - 1) // channels + 1):
        row_offset, col_offset = tap_rows[tap // taps_w], tap_cols[tap % taps_w]
        run_start = max(col0, tap * channels) - col0        # the tap's columns in the panel
        run_end = min(col0 + cols, (tap + 1) * channels) - col0
        whole = run_start % NR == 0 and run_end % NR == 0     # whole sliver rows only
        for p in range(depth):
            h, w = corners[1, p] + row_offset, corners[2, p] + col_offset
            inside = h >= 0 and h < height and w >= 0 and w < width
            # the image offset of the panel's column 0 as seen through this tap (columns run_start
            # .. run_end of the panel are its channels)
            base = ((corners[0, p] * height + h) * width + w) * channels + col0 - tap * channels
            if whole:
                for j in range(run_start, run_end, NR):
                    out = (j // NR * sliver_rows + p) * NR
                    for v in range(0, NR, WIDTH):
                        store(flat, out + v, load(image, base + j + v) if inside else zeros())
                continue
            j = run_start
            while j < run_end:
                piece_end = min(run_end, (j // NR + 1) * NR)
                out = (j // NR * sliver_rows + p) * NR + j % NR
                if inside:
                    flat[out:out + piece_end - j] = image[base + j:base + piece_end]
                else:
                    flat[out:out + piece_end - j] = 0.0
                j = piece_end
    for p in range(depth):
        for j in range(cols, slivers * NR):
            flat[((slivers - 1) * sliver_rows + p) * NR + j % NR] = 0.0


def window_rows(image, shape, tap_rows, tap_cols, depth0, depth, first_tap, taps, b_rows, corners, zero):
    """b_rows[j, p] = the address (simd.address) of windows[depth0 + p, the start of tap
    first_tap + j]: a pixel's channels in the image, or `zero`'s (as many zeros) for padding."""
    height, width, channels = shape[0], shape[1], shape[2]
    taps_w = tap_cols.shape[0]
    nowhere = address(zero, 0)
    origin = address(image, 0)
    window_corners(shape, depth0, depth, corners)
    for j in range(taps):
        row_offset, col_offset = tap_rows[(first_tap + j) // taps_w], tap_cols[(first_tap + j) % taps_w]
        for p in range(depth):
            h, w = corners[1, p] + row_offset, corners[2, p] + col_offset
            inside = h >= 0 and h < height and w >= 0 and w < width
            b_rows[j, p] = origin + 4 * ((corners[0, p] * height + h) * width + w) * channels if inside else nowhere


def weight_rectangle(d, m, image, shape, tap_rows, tap_cols, c, k0, k, row0, rows, col0, cols, mc, pack_d):
    """One thread's rectangle, rows row0 .. row0 + rows and columns col0 .. col0 + cols (whole NR
    slivers, each within one tap's channels), of c = D^T @ windows(image) over windows k0 .. k - 1
    (D's rows, D row-major with m columns), with the windows' rows read where they lie
    (matmul_gathered.micro_kernel_b_gathered): no packed B. A, D^T, is packed a block at a time
    (matmul.pack_a) with pack_d (PACKS_D), else only a block's ragged last sliver: a row of D
    holds step p of all of A's rows side by side, as a packed sliver does, so the tiles can read
    A^T's rows where they lie: packing them had taken 6% of a 3x3 convolution's weight gradient
    (AMD EPYC Zen 5, perf), as much as the FMAs it fed were few (M = 64 rows of C). Both threads'
    copies and the reference counts gone (multiply_windows_b), medians of 30-60 calls, old and
    new alternating: 16 x 56x56x64 -> 64 10.29-10.45 -> 9.84-9.92 ms, 64 x 14x14x64 -> 128
    (stride 2) 4.56-4.94 -> 4.24-4.29. Slices, blocks of mc rows and the tiles' KC-deep parts as
    the packed loop nest cuts them, so the same sums in the same order, the same floats."""
    channels = shape[2]
    first_tap = col0 // channels
    taps = (col0 + cols - 1) // channels + 1 - first_tap
    most_slivers = -(-min(rows, mc + mc // 4) // MR) if pack_d else 1   # a block's, packed
    a_buffer = aligned_floats(most_slivers * DEEPEST * MR)
    b_rows = np.empty((taps, DEEPEST), dtype=np.int64)
    b_table = b_rows.reshape(-1)
    corners = np.empty((4, DEEPEST), dtype=np.int64)
    zero = aligned_floats(channels)
    zero[:] = 0.0
    edge = edge_tile()
    depth0 = k0
    while depth0 < k:
        depth = block_end(depth0, k, KC) - depth0
        window_rows(image, shape, tap_rows, tap_cols, depth0, depth, first_tap, taps, b_rows, corners, zero)
        block0 = row0
        while block0 < row0 + rows:
            block_rows = block_end(block0, row0 + rows, mc) - block0
            in_place = 0 if pack_d else block_rows // MR   # slivers the tiles read where they lie
            if in_place * MR < block_rows:
                packed = -(-block_rows // MR) - in_place
                pack_a(d, 1, m, block0 + in_place * MR, block_rows - in_place * MR, depth0, depth,
                       a_buffer[:packed * depth * MR].reshape((packed, depth, MR)), False)
            multiply_windows_b(d, m, a_buffer, in_place, depth0, depth, depth0 == k0, b_table, c, block0, block_rows,
                               col0, cols, channels, first_tap, edge)
            block0 += block_rows
        depth0 += depth


def multiply_windows_b(d, m, a_packed, in_place, depth0, depth, first_slice, b_table, c, row0, rows, col0, cols,
                       channels, first_tap, edge):
    """C[row0:row0+rows, col0:col0+cols] (+)= the A block (= where first_slice: the first slice
    of the thread's sum), rows row0 .. row0 + rows of D^T (D (k, m) row-major; its first in_place
    slivers read there, the rest packed in a_packed, `depth` deep) times the slice's windows, B's
    row p of tap first_tap + j at address b_table[j * DEEPEST + p] (window_rows), sliver by sliver as
    matmul.multiply_block: a half tile for a last A sliver of at most ROWS_PER_GROUP rows, a
    ragged tile computed whole in `edge`, then added. The tiles take the arrays whole, with
    offsets (matmul_micro.py)."""
    for t in range(cols // NR):
        col = col0 + t * NR
        tap = col // channels
        b_first, b_offset = (tap - first_tap) * DEEPEST, 4 * (col - tap * channels)
        for s in range(-(-rows // MR)):
            row = row0 + s * MR
            tile_rows = min(MR, row0 + rows - row)
            half = MR > ROWS_PER_GROUP and tile_rows <= ROWS_PER_GROUP
            for part0 in range(0, depth, KC):
                accumulate = not first_slice or part0 > 0
                part_depth = min(depth, part0 + KC) - part0
                if s < in_place:
                    micro_kernel_b_gathered(d, (depth0 + part0) * m + row, m, part_depth, b_table, b_first + part0,
                                            b_offset, c, row, col, accumulate)
                    continue
                sliver = ((s - in_place) * depth + part0) * MR
                if tile_rows == MR:
                    micro_kernel_b_gathered(a_packed, sliver, MR, part_depth, b_table, b_first + part0, b_offset, c,
                                            row, col, accumulate)
                    continue
                whole = half and tile_rows == ROWS_PER_GROUP
                target, at_row, at_col = (c, row, col) if whole else (edge, 0, 0)
                if half:
                    half_kernel_b_gathered(a_packed, sliver, MR, part_depth, b_table, b_first + part0, b_offset,
                                           target, at_row, at_col, accumulate and whole)
                else:
                    micro_kernel_b_gathered(a_packed, sliver, MR, part_depth, b_table, b_first + part0, b_offset,
                                            edge, 0, 0, False)
                if not whole:
                    add_edge(c, edge, row, col, tile_rows, NR, accumulate)


def reads_windows_in_place(channels):
    """Whether a weight gradient's windows (as B) are read where they lie (weight_rectangle):
    where every NR-column sliver lies within one tap's channels."""
    return channels % NR == 0


def is_windows(operand, length):
    """Whether a loop-nest operand is an image's windows, `length` items: (image, shape, tap rows,
    tap columns, then the A side's address table, runs, corners and zeros, or the B side's
    corners)."""
    return (isinstance(operand, numba.types.BaseTuple) and len(operand) == length
            and isinstance(operand[1], numba.types.UniTuple))


@numba.extending.overload(multiply_a_block)
def multiply_windows(a, a_buffer, b_buffer, b_start, c, k, depth0, depth, row0, rows, col0, cols, bias, has_bias,
                     activation, alpha):
    if is_windows(a, 8):
        def multiply(a, a_buffer, b_buffer, b_start, c, k, depth0, depth, row0, rows, col0, cols, bias, has_bias,
                     activation, alpha):
            runs = window_addresses(a[0], a[1], a[2], a[3], row0, rows, depth0, depth, a[4], a[5], a[6], a[7])
            multiply_gathered(a[4], a[5][0], runs, b_buffer, b_start, packed_rows(depth) * NR, NR, c, a[6][3], rows,
                              col0, cols, depth0 == 0, depth0 + depth == k, bias, has_bias, activation, alpha,
                              edge_tile(), np.arange(MR))
        return multiply


@numba.extending.overload(pack_b_operand)
def pack_windows_as_b(b, depth0, depth, col0, cols, packed):
    if is_windows(b, 5):
        return lambda b, depth0, depth, col0, cols, packed: pack_windows_b(b[0], b[1], b[2], b[3], depth0, depth,
                                                                           col0, cols, packed, b[4])


def split(part, parts, slivers, tile, size):
    """The part-th of `parts` runs of whole tiles: (first, count) of `size` items."""
    first = part * slivers // parts * tile
    return first, min(size, (part + 1) * slivers // parts * tile) - first


def window_gemm(image, shape, tap_rows, tap_cols, other, windows_are_a, c, m, k, bias, has_bias,
                activation, alpha, row_parts, col_parts, mc, nc):
    """c = epilogue(windows @ other) (windows_are_a; other is B, row-major (k, N); the M windows'
    rows go to c's rows as the shape places them) or other^T @ windows (other is D, row-major (k,
    M)), by the matmul's loop nest (gemm_rectangle), one M x N rectangle of the product per thread,
    the windows read from the image: in place on the A side, packed panels on the B side."""
    n = c.shape[1]
    for part in numba.prange(row_parts * col_parts):
        row0, rows = split(part // col_parts, row_parts, -(-m // MR), MR, m)
        col0, cols = split(part % col_parts, col_parts, -(-n // NR), NR, n)
        if rows > 0 and cols > 0:
            if windows_are_a:
                windows_rectangle(image, shape, tap_rows, tap_cols, other, k, 0, c, k, bias, has_bias, activation,
                                  alpha, row0, rows, col0, cols, mc, nc)
            elif reads_windows_in_place(shape[2]):
                weight_rectangle(other, m, image, shape, tap_rows, tap_cols, c, 0, k, row0, rows, col0, cols, mc,
                                 PACKS_D)
            else:
                corners = np.empty((4, DEEPEST), dtype=np.int64)   # a slice's windows
                gemm_rectangle((other, 1, m, m), (image, shape, tap_rows, tap_cols, corners), c, k, bias,
                               has_bias, activation, alpha, row0, rows, col0, cols, mc, nc, KC)


def windows_rectangle(image, shape, tap_rows, tap_cols, b, run_rows, run_stride, c, k, bias, has_bias, activation,
                      alpha, row0, rows, col0, cols, mc, nc):
    """One thread's rectangle of c = epilogue(windows @ b), B row-major (k, N) in runs of
    run_rows rows run_stride floats apart (matmul.pack_b_runs; one run of k: B itself): the A
    side's address tables for a block of windows, then the matmul's loop nest."""
    deepest = min(k, WINDOW_KC + WINDOW_KC // 4)   # block_end's deepest slice
    runs = min(tap_rows.size * tap_cols.size, deepest // shape[2] + 2)   # taps a slice meets
    block = WINDOW_BLOCK_MC * mc
    slivers = -(-min(rows, block + block // 4) // MR)
    zero = aligned_floats(deepest)
    zero[:] = 0.0
    windows = (image, shape, tap_rows, tap_cols, np.empty((slivers, runs, MR), dtype=np.int64),
               np.empty((4, runs), dtype=np.int64), np.empty((4, slivers * MR), dtype=np.int64), zero)
    gemm_rectangle(windows, (b, c.shape[1], run_rows, run_stride), c, k, bias, has_bias, activation, alpha, row0,
                   rows, col0, cols, block, nc, WINDOW_KC)


def grids_gemm(image, shapes, tap_rows, tap_cols, taps, b, b_starts, run_rows, run_stride, c, images, bias, has_bias,
               activation, alpha, row_parts, col_parts, mc, nc):
    """window_gemm's c = epilogue(windows @ B) for several window grids over one image, in one
    parallel region (a strided transposed convolution's phases, conv2d_transpose.py): grid j has
    the shape shapes[j], the tap rows tap_rows[j, :taps[j, 0]] and columns tap_cols[j, :taps[j, 1]],
    and its B (row-major, N columns) at b[b_starts[j]:], in runs of run_rows[j] rows run_stride
    floats apart (windows_rectangle). Part p of every grid's rows goes to the
    same thread (tasks p * grids .. (p + 1) * grids - 1 of Numba's even split), so grids of unequal
    work still leave the threads even."""
    grids, n = shapes.shape[0], c.shape[1]
    for task in numba.prange(row_parts * col_parts * grids):
        part, j = task // grids, task % grids
        s = shapes[j]
        shape = (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10], s[11], s[12])
        m = images * s[3] * s[4]
        k = taps[j, 0] * taps[j, 1] * s[2]
        row0, rows = split(part // col_parts, row_parts, -(-m // MR), MR, m)
        col0, cols = split(part % col_parts, col_parts, -(-n // NR), NR, n)
        if rows > 0 and cols > 0:
            windows_rectangle(image, shape, tap_rows[j, :taps[j, 0]], tap_cols[j, :taps[j, 1]],
                              b[b_starts[j]:], run_rows[j], run_stride, c, k, bias, has_bias, activation, alpha, row0,
                              rows, col0, cols, mc, nc)


def weight_gemm_by_depth(d, m, image, shape, tap_rows, tap_cols, c, partials, k, mc):
    """c = D^T @ windows(image) (D (k, m) row-major, the windows read in place: weight_rectangle)
    as a sum over parts of the windows, one a thread, each KC slices: part 0 into c, part j into
    partials[j - 1], then the partials added to c in order (a row band of c a thread)."""
    parts = partials.shape[0] + 1
    slices = -(-k // KC)
    n = c.shape[1]
    for part in numba.prange(parts):
        k0 = min(k, part * slices // parts * KC)
        k1 = min(k, (part + 1) * slices // parts * KC)
        target = c if part == 0 else partials[part - 1]
        if k1 > k0:
            weight_rectangle(d, m, image, shape, tap_rows, tap_cols, target, k0, k1, 0, m, 0, n, mc, PACKS_D)
        else:
            target[:, :] = 0.0
    for part in numba.prange(parts):
        for i in range(part * m // parts, (part + 1) * m // parts):
            for j in range(partials.shape[0]):
                c[i] += partials[j, i]


SHAPE = numba.types.UniTuple(int64, 13)
TAPS = int64[::1]
CORNERS = int64[:, ::1]
with slp_vectorize():
    window_corners = numba.njit(void(SHAPE, int64, int64, CORNERS), cache=True)(window_corners)
    window_addresses = numba.njit(int64(READ_ONLY, SHAPE, TAPS, TAPS, int64, int64, int64, int64,
                                        numba.types.Array(int64, 3, "C"), CORNERS, CORNERS, FLAT),
                                  cache=True)(window_addresses)
    pack_windows_b = numba.njit(void(READ_ONLY, SHAPE, TAPS, TAPS, int64, int64, int64, int64, PANEL,
                                     CORNERS), cache=True)(pack_windows_b)
    reads_windows_in_place = numba.njit(inline="always", cache=True)(reads_windows_in_place)
    window_rows = numba.njit(void(READ_ONLY, SHAPE, TAPS, TAPS, int64, int64, int64, int64, CORNERS, CORNERS, FLAT),
                             cache=True)(window_rows)
    # without reference counts, as matmul.multiply_block (matmul.py says why): they had taken 5%
    # of a 3x3 convolution's weight gradient (AMD EPYC Zen 5, perf)
    multiply_windows_b = numba.njit(void(READ_ONLY, int64, FLAT, int64, int64, int64, numba.boolean, int64[::1], MATRIX,
                                         int64, int64, int64, int64, int64, int64, MATRIX), fastmath=FASTMATH,
                                    cache=True, _nrt=False)(multiply_windows_b)
    weight_rectangle = numba.njit(void(READ_ONLY, int64, READ_ONLY, SHAPE, TAPS, TAPS, MATRIX, int64, int64, int64,
                                       int64, int64, int64, int64, numba.boolean), fastmath=FASTMATH,
                                  cache=True)(weight_rectangle)
    split = numba.njit(numba.types.UniTuple(int64, 2)(int64, int64, int64, int64, int64), cache=True)(split)
    windows_rectangle = numba.njit(fastmath=FASTMATH, cache=True)(windows_rectangle)
    window_gemm = numba.njit(
        void(READ_ONLY, SHAPE, TAPS, TAPS, READ_ONLY, numba.boolean, MATRIX, int64, int64, READ_ONLY, numba.boolean,
             int64, float32, int64, int64, int64, int64), parallel=True, fastmath=FASTMATH, cache=True)(window_gemm)
    weight_gemm_by_depth = numba.njit(void(READ_ONLY, int64, READ_ONLY, SHAPE, TAPS, TAPS, MATRIX, numba.types.Array(
        float32, 3, "C"), int64, int64), parallel=True, fastmath=FASTMATH, cache=True)(weight_gemm_by_depth)
    grids_gemm = numba.njit(
        void(READ_ONLY, CORNERS, CORNERS, CORNERS, CORNERS, READ_ONLY, TAPS, TAPS, int64, MATRIX, int64, READ_ONLY,
             numba.boolean, int64, float32, int64, int64, int64, int64), parallel=True, fastmath=FASTMATH,
        cache=True)(grids_gemm)


def run_threads(threads, kernel, *args):
    """kernel(*args) on `threads` threads (matmul.thread_count's: Numba's own count, or one for a
    small product, for which Numba's count is set and restored after)."""
    previous = numba_threads() if threads == 1 else threads
    if threads != previous:
        numba.set_num_threads(threads)
    try:
        kernel(*args)
    finally:
        if threads != previous:
            numba.set_num_threads(previous)


def epilogue_operands(bias, activation, leaky_relu_output):
    """(floats, has_bias, code) of the loops' epilogue: the bias and activation, or, with a leaky
    ReLU's output y (C's shape, C-contiguous) and neither, LEAKY_RELU_GRAD with y in the bias's
    place (matmul.fused_matmul's leaky_relu_output): a convolution's input gradient times the
    gradient of the leaky ReLU whose output was that input."""
    if leaky_relu_output is not None:
        return leaky_relu_output.reshape(-1), False, LEAKY_RELU_GRAD
    return (NO_BIAS if bias is None else bias), bias is not None, ACTIVATIONS[activation]


def run_windows(image, windows, other, windows_are_a, c, m, k, bias, activation, alpha, leaky_relu_output=None):
    n = c.shape[1]
    threads = thread_count(m, n, k)
    if (not windows_are_a and threads > 1 and reads_windows_in_place.py_func(windows.shape[2])
            and k >= threads * DEPTH_SPLIT_SLICES * KC):
        partials = memory.empty((threads - 1, m, n))
        run_threads(threads, weight_gemm_by_depth, other.reshape(-1), m, image.reshape(-1), windows.shape,
                    windows.tap_rows, windows.tap_cols, c, partials, k, MC)
        return c
    run_threads(threads, window_gemm, image.reshape(-1), windows.shape, windows.tap_rows, windows.tap_cols,
                other.reshape(-1), windows_are_a, c, m, k, *epilogue_operands(bias, activation, leaky_relu_output),
                alpha, *thread_grid(m, n, threads, k), MC, NC)
    return c


def window_product(image, windows, b, bias=None, activation=None, alpha=0.0, out=None, leaky_relu_output=None):
    """epilogue(windows(image) @ b) into out (its rows where the windows place them), or a new
    array (rows, N) of whole-line rows where N is a multiple of 16; image and b (depth, N)
    C-contiguous float32. With leaky_relu_output y (C's shape), the product times y's leaky
    ReLU gradient (epilogue_operands)."""
    m, n = image.shape[0] * windows.per_image, b.shape[1]
    c = memory.empty((m, n)) if out is None else out
    return run_windows(image, windows, b, True, c, m, windows.depth, bias, activation, alpha, leaky_relu_output)


GridsLayout = collections.namedtuple("GridsLayout", "shapes tap_rows tap_cols taps depths windows most_windows depth")


def grids_layout(grids):
    """What grids_gemm reads for several Windows over one image: the arrays (shapes, tap rows,
    tap columns, tap counts), a row a grid, and the windows of an image in all grids, in the
    largest one, and the deepest grid's depth (ints, so that a product does no numpy arithmetic
    on them: a grids_product call took 12 us of Python)."""
    shapes = np.array([windows.shape for windows in grids], dtype=np.int64)
    taps = np.array([(len(windows.tap_rows), len(windows.tap_cols)) for windows in grids], dtype=np.int64)
    tap_rows = np.zeros((len(grids), taps[:, 0].max()), dtype=np.int64)
    tap_cols = np.zeros((len(grids), taps[:, 1].max()), dtype=np.int64)
    for j, windows in enumerate(grids):
        tap_rows[j, :taps[j, 0]] = windows.tap_rows
        tap_cols[j, :taps[j, 1]] = windows.tap_cols
    per_image = [windows.per_image for windows in grids]
    depths = np.array([windows.depth for windows in grids], dtype=np.int64)
    return GridsLayout(shapes, tap_rows, tap_cols, taps, depths, sum(per_image), max(per_image), int(depths.max()))


def grids_product(image, layout, b, b_starts, c, bias=None, activation=None, alpha=0.0, leaky_relu_output=None,
                  runs=None):
    """window_product for each of several window grids over one image (grids_layout's arrays),
    all placing their rows in c, grid j's B (taps*C, N) row-major at b[b_starts[j]:] (or, with
    runs = (run_rows, run_stride), in runs of run_rows[j] rows run_stride floats apart), in one
    parallel region (grids_gemm): 7-10% faster than a region a grid (four 12544 x 256 x 32
    products, AMD EPYC Zen 3, 2 threads)."""
    images, n = image.shape[0], c.shape[1]
    threads = thread_count(images * layout.windows, n, layout.depth)
    run_rows, run_stride = (layout.depths, 0) if runs is None else runs
    run_threads(threads, grids_gemm, image.reshape(-1), layout.shapes, layout.tap_rows, layout.tap_cols, layout.taps,
                b.reshape(-1), b_starts, run_rows, run_stride, c, images,
                *epilogue_operands(bias, activation, leaky_relu_output), alpha,
                *thread_grid(images * layout.most_windows, n, threads, layout.depth), MC, NC)
    return c


def window_weight_product(d_rows, image, windows):
    """d_rows^T @ windows(image): (M, depth), for d_rows (windows' rows, M) C-contiguous."""
    c = memory.empty((d_rows.shape[1], windows.depth))
    return run_windows(image, windows, d_rows, False, c, c.shape[0], d_rows.shape[0], None, None, 0.0)
