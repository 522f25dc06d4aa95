"""Implicit GEMM: the products of a convolution on the blocked matmul, with its windows read from
the image while the matmul packs them, never stored as an im2col matrix.

An image (N, H, W, C), NHWC, seen through a grid of GH x GW windows per image, each window a set
of taps at row offsets tap_rows[k] and column offsets tap_cols[l] from the window's corner
(a*step_h, b*step_w):
    windows[(n, a, b), (k, l, c)] = image[n, a*step_h + tap_rows[k], b*step_w + tap_cols[l], c]
                                    (0 outside the image)
a (N*GH*GW, taps*C) matrix. A Conv2D's windows have its stride as the step and the kernel's
rows less the padding as the offsets (conv2d.py); a stride-1 transposed convolution's have step
1 and the padding less the kernel's rows (conv2d_transpose.py). Two products use it:
    window_product:          C = epilogue(windows @ B)    B (taps*C, N) row-major, C (N*GH*GW, N)
    window_weight_product:   C = D^T @ windows            D (N*GH*GW, M) row-major, C (M, taps*C)
Both run the matmul's own loop nest (gemm_rectangle in matmul.py: blocking, thread rectangles,
multiply_block) with an operand of windows on one side, (image, shape, taps, ...), whose packing
this file registers for the loop's two hooks (pack_a_operand, pack_b_operand, chosen by the
operand's type as Numba compiles the loop): pack_windows fills the A side's MR-row slivers
(packed[s, p, r] = windows[row0 + s*MR + r, depth0 + p]), turning WIDTH x WIDTH squares in
registers, and pack_windows_b the B side's NR-column slivers (packed[t, p, c] =
windows[depth0 + p, col0 + t*NR + c]) as runs of contiguous channels, both straight from the
image: the packed panels, which stay in L2, are all there is of the windows.
Cost: 2*rows*N*taps*C FLOPs (2*M*rows*taps*C); the image is read once per NC-column panel of C
(from cache for the taps after the first), B or D once per thread part, C written once.
"""

import numba
import numba.extending
import numpy as np
from numba import float32, int64, void

from pyai.kernels.common import ACTIVATIONS
from pyai.kernels.numba_cpu.blocking import MC, NC
from pyai.kernels.numba_cpu.matmul import (DEEPEST, FASTMATH, FLAT, NO_BIAS, MATRIX, PANEL, gemm_rectangle,
                                           pack_a_operand, pack_b_operand, rows_in_place, slp_vectorize,
                                           thread_count, thread_grid)
from pyai.kernels.numba_cpu.matmul_micro import MR, NR, READ_ONLY
from pyai.kernels.numba_cpu.simd import WIDTH, aligned_floats, load, store, transpose_square, zeros

# Fewer channels than a vector: the packing would copy a float at a time, and an im2col matrix
# made by whole-pixel copies (im2col.py) is faster; the conv ops choose by this
PACKED_MIN_CHANNELS = WIDTH
assert MR <= WIDTH, "pack_windows turns a sliver's MR rows in one WIDTH x WIDTH square"


class Windows:
    """The window grid of an image: (H, W, C, GH, GW, step_h, step_w) and the tap offsets."""

    def __init__(self, height, width, channels, grid_height, grid_width, step, tap_rows, tap_cols):
        self.shape = (height, width, channels, grid_height, grid_width, *step)
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
    height, width, channels, grid_height, grid_width, step_h, step_w = windows.shape
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


def window_corners(shape, row0, rows, first, count, corner_image, corner_top, corner_left):
    """The image and corner of windows row0 + first .. + count - 1 (image -1 past the last row)."""
    (_, _, _, grid_height, grid_width, step_h, step_w) = shape
    per_image = grid_height * grid_width
    for r in range(count):
        row = first + r
        if row < rows:
            q = (row0 + row) % per_image
            corner_image[r] = (row0 + row) // per_image
            corner_top[r] = q // grid_width * step_h
            corner_left[r] = q % grid_width * step_w
        else:
            corner_image[r] = -1


def source(shape, image_index, h, w):
    """Where pixel (h, w) of an image starts in the flat image, or -1 for padding (or no image)."""
    (height, width, channels, _, _, _, _) = shape
    if image_index < 0 or h < 0 or h >= height or w < 0 or w >= width:
        return -1
    return ((image_index * height + h) * width + w) * channels


def pack_windows(image, shape, tap_rows, tap_cols, row0, rows, depth0, depth, packed, corners, scratch):
    """packed[s, p, r] = windows[row0 + s*MR + r, depth0 + p], zero past the last row. For each
    tap, WIDTH channels of the sliver's MR pixels are gathered into a square (a vector load and
    store a pixel, zeros for padding) and turned in registers (simd.transpose_square), then
    written as WIDTH packed rows of MR floats: a vector store each, in order, so that each
    store's tail past MR is overwritten by the next row (the last row is copied a float at a
    time). Channels past the last whole WIDTH are copied a float at a time."""
    channels = shape[2]
    taps_w = tap_cols.shape[0]
    starts = corners[3]
    gathered = scratch[:WIDTH * WIDTH]
    turned = scratch[WIDTH * WIDTH:2 * WIDTH * WIDTH]
    work = scratch[2 * WIDTH * WIDTH:]
    flat = packed.reshape(-1)
    depth_total = packed.shape[1]
    for s in range(packed.shape[0]):
        window_corners(shape, row0, rows, s * MR, MR, corners[0], corners[1], corners[2])
        for tap in range(depth0 // channels, (depth0 + depth - 1) // channels + 1):
            c0 = max(depth0, tap * channels) - tap * channels
            c1 = min(depth0 + depth, (tap + 1) * channels) - tap * channels
            p0 = tap * channels + c0 - depth0
            row_offset, col_offset = tap_rows[tap // taps_w], tap_cols[tap % taps_w]
            for r in range(MR):
                starts[r] = source(shape, corners[0, r], corners[1, r] + row_offset, corners[2, r] + col_offset)
            whole = (c1 - c0) // WIDTH * WIDTH
            for c in range(0, whole, WIDTH):
                for r in range(MR):
                    if starts[r] >= 0:
                        store(gathered, r * WIDTH, load(image, starts[r] + c0 + c))
                    else:
                        store(gathered, r * WIDTH, zeros())
                transpose_square(gathered, 0, WIDTH, turned, 0, WIDTH, work)
                out = (s * depth_total + p0 + c) * MR
                for i in range(WIDTH - 1):
                    store(flat, out + i * MR, load(turned, i * WIDTH))
                for r in range(MR):
                    flat[out + (WIDTH - 1) * MR + r] = turned[(WIDTH - 1) * WIDTH + r]
            for c in range(whole, c1 - c0):
                for r in range(MR):
                    # padding reads a pixel that is there and keeps zero: no branch in the loop
                    value = image[max(starts[r], 0) + c0 + c]
                    packed[s, p0 + c, r] = value if starts[r] >= 0 else float32(0.0)


def pack_windows_b(image, shape, tap_rows, tap_cols, depth0, depth, col0, cols, packed, corners):
    """packed[t, p, c] = windows[depth0 + p, col0 + t*NR + c], zero past the last column: tap by
    tap, each window's run of contiguous channels, cut where a sliver ends (a whole sliver row,
    NR channels, as two vectors)."""
    channels = shape[2]
    taps_w = tap_cols.shape[0]
    slivers = packed.shape[0]
    flat = packed.reshape(-1)
    window_corners(shape, depth0, depth, 0, depth, corners[0], corners[1], corners[2])
    for tap in range(col0 // channels, (col0 + cols - 1) // channels + 1):
        row_offset, col_offset = tap_rows[tap // taps_w], tap_cols[tap % taps_w]
        run_start = max(col0, tap * channels) - col0
        run_end = min(col0 + cols, (tap + 1) * channels) - col0
        for p in range(depth):
            start = source(shape, corners[0, p], corners[1, p] + row_offset, corners[2, p] + col_offset)
            inside = start >= 0
            j = run_start
            while j < run_end:
                piece_end = min(run_end, (j // NR + 1) * NR)
                out = (j // NR * depth + p) * NR + j % NR
                first = start + j + col0 - tap * channels
                if piece_end - j == NR:     # a whole sliver row: two vectors
                    for v in range(0, NR, WIDTH):
                        store(flat, out + v, load(image, first + v) if inside else zeros())
                elif not inside:
                    flat[out:out + piece_end - j] = 0.0
                else:
                    flat[out:out + piece_end - j] = image[first:first + piece_end - j]
                j = piece_end
    for p in range(depth):
        for j in range(cols, slivers * NR):
            flat[((slivers - 1) * depth + p) * NR + j % NR] = 0.0


def is_windows(operand, length):
    """Whether a loop-nest operand is an image's windows: (image, shape, tap rows, tap columns,
    corners[, scratch]), `length` items."""
    return (isinstance(operand, numba.types.BaseTuple) and len(operand) == length
            and isinstance(operand[1], numba.types.UniTuple))


@numba.extending.overload(pack_a_operand)
def pack_windows_a(a, row0, rows, depth0, depth, packed):
    if is_windows(a, 6):
        return lambda a, row0, rows, depth0, depth, packed: pack_windows(a[0], a[1], a[2], a[3], row0, rows,
                                                                         depth0, depth, packed, a[4], a[5])


@numba.extending.overload(rows_in_place)
def windows_are_packed(a, cols):
    if is_windows(a, 6):
        return lambda a, cols: (a[0], 0)


@numba.extending.overload(pack_b_operand)
def pack_windows_as_b(b, depth0, depth, col0, cols, packed):
    if is_windows(b, 5):
        return lambda b, depth0, depth, col0, cols, packed: pack_windows_b(b[0], b[1], b[2], b[3], depth0, depth,
                                                                           col0, cols, packed, b[4])


def split(part, parts, slivers, tile, size):
    """The part-th of `parts` runs of whole tiles: (first, count) of `size` items."""
    first = part * slivers // parts * tile
    return first, min(size, (part + 1) * slivers // parts * tile) - first


def window_gemm(image, shape, tap_rows, tap_cols, other, windows_are_a, c, k, bias, has_bias,
                activation, alpha, row_parts, col_parts, mc, nc):
    """c = epilogue(windows @ other) (windows_are_a; other is B, row-major (k, N)) or
    other^T @ windows (other is D, row-major (k, M)), by the matmul's loop nest (gemm_rectangle),
    one rectangle of c per thread, with the windows' blocks or panels packed from the image."""
    m, n = c.shape
    for part in numba.prange(row_parts * col_parts):
        row0, rows = split(part // col_parts, row_parts, -(-m // MR), MR, m)
        col0, cols = split(part % col_parts, col_parts, -(-n // NR), NR, n)
        if rows > 0 and cols > 0:
            corners = np.empty((4, max(MR, DEEPEST)), dtype=np.int64)   # a slice's rows, or a sliver's
            if windows_are_a:
                gemm_rectangle((image, shape, tap_rows, tap_cols, corners, aligned_floats(4 * WIDTH * WIDTH)),
                               (other, n, 1), c, k, bias, has_bias, activation, alpha, row0, rows, col0, cols,
                               mc, nc)
            else:
                gemm_rectangle((other, 1, m), (image, shape, tap_rows, tap_cols, corners), c, k, bias,
                               has_bias, activation, alpha, row0, rows, col0, cols, mc, nc)


SHAPE = numba.types.UniTuple(int64, 7)
TAPS = int64[::1]
CORNERS = int64[:, ::1]
with slp_vectorize():
    window_corners = numba.njit(void(SHAPE, int64, int64, int64, int64, TAPS, TAPS, TAPS),
                                cache=True)(window_corners)
    source = numba.njit(int64(SHAPE, int64, int64, int64), cache=True)(source)
    pack_windows = numba.njit(void(READ_ONLY, SHAPE, TAPS, TAPS, int64, int64, int64, int64, PANEL, CORNERS,
                                   FLAT), cache=True)(pack_windows)
    pack_windows_b = numba.njit(void(READ_ONLY, SHAPE, TAPS, TAPS, int64, int64, int64, int64, PANEL,
                                     CORNERS), cache=True)(pack_windows_b)
    split = numba.njit(numba.types.UniTuple(int64, 2)(int64, int64, int64, int64, int64), cache=True)(split)
    window_gemm = numba.njit(
        void(READ_ONLY, SHAPE, TAPS, TAPS, READ_ONLY, numba.boolean, MATRIX, int64, READ_ONLY, numba.boolean,
             int64, float32, int64, int64, int64, int64), parallel=True, fastmath=FASTMATH, cache=True)(window_gemm)


def run_threads(threads, kernel, *args):
    """kernel(*args) on `threads` threads (one for a small product, as the matmul decides), Numba's
    thread count restored after."""
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        kernel(*args)
    finally:
        numba.set_num_threads(previous)


def run_windows(image, windows, other, windows_are_a, c, k, bias, activation, alpha):
    m, n = c.shape
    threads = thread_count(m, n, k)
    has_bias = bias is not None
    run_threads(threads, window_gemm, image.reshape(-1), windows.shape, windows.tap_rows, windows.tap_cols,
                other.reshape(-1), windows_are_a, c, k, bias if has_bias else NO_BIAS, has_bias,
                ACTIVATIONS[activation], float32(alpha), *thread_grid(m, n, threads), MC, NC)
    return c


def window_product(image, windows, b, bias=None, activation=None, alpha=0.0, out=None):
    """epilogue(windows(image) @ b) into out (rows, N), or a new array of whole-line rows where
    N is a multiple of 16; image and b (depth, N) C-contiguous float32."""
    m, n = image.shape[0] * windows.per_image, b.shape[1]
    c = aligned_floats(m * n).reshape((m, n)) if out is None else out
    return run_windows(image, windows, b, True, c, windows.depth, bias, activation, alpha)


def window_weight_product(d_rows, image, windows):
    """d_rows^T @ windows(image): (M, depth), for d_rows (windows' rows, M) C-contiguous."""
    c = np.empty((d_rows.shape[1], windows.depth), dtype=np.float32)
    return run_windows(image, windows, d_rows, False, c, d_rows.shape[0], None, None, 0.0)
