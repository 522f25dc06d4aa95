"""Conv2D with few output channels (O <= DIRECT_MAX_OUT), forward and backward, computed directly.

Shapes and sums as in conv2d.py and conv2d_backward.py. With one output channel (a generator's
last layer, an image), the im2col product is a (rows, kh*kw*C) @ (kh*kw*C, 1) matrix-vector
product: the matmul's 32-column register tile would be 1/32 used and cols written and read for
nothing. Here each pass reads the image where it lies:
  forward:  y[n, oh, ow, o] = bias[o] + sum over the window's pixels of x[pixel, :] . wt[o, i, j, :]
            (dot products of contiguous floats); a run of output rows per task, then the
            epilogue on the whole run. A window inside the image across reads each of its rows
            as kw*C contiguous floats; PIXELS (8) such outputs go together, sharing w's loads, one
            chain of FMAs an output, and their lanes are summed together (simd.lane_sums: the
            eight vectors folded in pairs, 24 instructions where eight lane sums took ~64); the
            others one by one (two chains, then a lane sum). A kernel three columns wide at
            stride 1 over whole vectors of channels (3x3, the common case) loads each of the
            group's ten pixels once and multiplies it by the three kernel columns that read it
            (add_three_columns: 10 loads for 24 FMAs a vector of channels, where the eight dots
            load 24). Each group asks for the input rows below its windows, which the next output
            row adds (prefetch_rows_below)
  dx:       dx[n, h, w, :] = sum over the windows that read (h, w) of dy[n, oh, ow, o] * wt[o, i, j, :]
            (its C floats summed over the pixel's taps in registers, as conv2d_few_inputs sums a
            pixel's output channels: each dx float written once). At stride 1 a pixel's taps lie
            at fixed offsets from one corner of dy: a row's kernel rows that land in dy are listed
            once, the pixels that every kernel column reads go four at a time, then two (their
            neighbours' taps an output pixel on: eight chains of FMAs for C = 2 vectors), the few
            at a row's ends take a list of their own (no division); at other strides each pixel's taps are
            listed. Each of ROW_PARTS tasks takes a run of rows, its lists made once; each row
            then takes the leaky ReLU gradient of the layer below (times_row_gradient) while in L1
  dw:       dw[i, j, :, o] = sum over every window of dy[n, oh, ow, o] * x[window pixel (i, j), :],
            each of PARTS tasks summing its share of the output rows into its own partial (a
            row's outputs summed in registers, four chains of FMAs, then added), the partials
            added in a fixed order at the end; each output row asks for the input rows the next
            one adds. A kernel three columns wide at stride 1 walks each input row's pixels once
            for its three columns' sums (three_column_sums: one load and three FMAs a pixel, the
            three outputs that read it rolling by in registers; two vectors of channels at once,
            three_column_pair_sums), where the row sums load each pixel three times, with a
            broadcast of dy beside each FMA
Cost: 2*N*OH*OW*kh*kw*C*O FLOPs a pass; each reads x (or dx) and dy once from memory.
wt is w as (O, kh, kw, C), so every inner loop runs over C contiguous floats. Sums in the forward
and in dw's rows are in a fixed order other than a serial one: the result differs from a serial
sum only by rounding; infinities and NaN propagate as ever. dx's sums are a serial one's.
The DCGAN's last layer (3x3, 28x28x32 -> 1), AMD EPYC Zen 5, 2 threads, best of 60, before and
after the lane sums, the row lists and pairs, the prefetches, the runs of rows and the
four-chain dw, each from cache / after a 200 MB pass had flushed it, ms:
  forward 128 images, tanh:              0.63-0.64 / 0.93-1.07   ->  0.63-0.65 / 0.68-0.73
  dx 64 images, leaky ReLU gradient:      0.49-0.57 / 0.55-0.62   ->  0.22-0.25 / 0.30-0.35
  dw with db, 64 images:                  0.53 / 0.66-0.67        ->  0.33 / 0.37 (db: bias_grad.py)
and then with the three kernel columns' shared loads, the forward 0.66-0.69 / 0.75 -> 0.38-0.44 / 0.49-0.52,
dw with db 0.33 / 0.38-0.40 -> 0.25-0.26 / 0.30-0.31; in a DCGAN step (medians of 40) the forward
0.57-0.61 -> 0.38, dw 0.30 -> 0.23.
On 2 cores of an Intel Xeon, family 6 model 167 (AVX-512), the DCGAN's last layer, 64 images,
the new kernel and the one before alternating in one process, medians of 30 bests of 5, the
same floats: dx four pixels at a time (pixel_quad_gradient) 0.499 -> 0.418 ms, dw two vectors of
channels at once 0.390 -> 0.338.
Before, on 2 cores of an Intel Xeon (AVX-512), the ops against the scalar loops before them:
forward with tanh 1.47 -> 1.05-1.14 ms, dx 1.08-1.17 -> 0.82-0.84, dw with db 1.58-1.61 -> 0.74.
"""

import numba
import numpy as np

from pyai.kernels.numba_cpu.conv2d_few_inputs import pixel_channels, pixel_pair_channels
from pyai.kernels.numba_cpu.epilogue import LEAKY_RELU_GRAD, NONE
from pyai.kernels.numba_cpu.matmul import apply_epilogue
from pyai.kernels.numba_cpu.matmul_micro import NO_BIAS
from pyai.kernels.numba_cpu.simd import (SUMS, WIDTH, add, fma, lane, lane_sum, lane_sums, load, opaque, prefetch_run,
                                         splat, splat_at, store, times_leaky_gradient, zeros)

DIRECT_MAX_OUT = 4
PARTS = 16   # the weight gradient's partial sums: enough tasks to spread over the threads
ROW_PARTS = 64   # the forward's and the input gradient's tasks, each a run of rows


PIXELS = SUMS   # interior outputs of a row computed together: their FMA chains overlap, w's loads are shared


@numba.njit(inline="always", cache=True)
def add_dot(a, a_start, b, b_start, length, even, odd, total):
    """(even, odd, total) plus the dot of a[a_start:][:length] and b[b_start:][:length]: its whole
    vectors into the two chains of FMAs, the rest into total."""
    whole = length // WIDTH * WIDTH
    for c in range(0, whole, WIDTH):
        even, odd = odd, fma(load(a, a_start + c), load(b, b_start + c), even)
    for c in range(whole, length):
        total += a[a_start + c] * b[b_start + c]
    return even, odd, total


@numba.njit(inline="always", cache=True)
def window_dot(x, wt, g, n, oh, ow, o):
    """Output (n, oh, ow, o) before the bias: the dots of the window's pixels inside the image
    with w's taps, a vector at a time in two chains of FMAs, their lanes summed at the end."""
    (height, width, channels, _, _, kh, kw, sh, sw, pt, pl) = g
    even, odd = zeros(), zeros()
    total = np.float32(0.0)
    for i in range(kh):
        h = oh * sh - pt + i
        if 0 <= h < height:
            for j in range(kw):
                w = ow * sw - pl + j
                if 0 <= w < width:
                    even, odd, total = add_dot(x, ((n * height + h) * width + w) * channels, wt,
                                               ((o * kh + i) * kw + j) * channels, channels, even, odd, total)
    return total + lane_sum(add(even, odd))


@numba.njit(inline="always", cache=True)
def add_eight_dots(x, at, step, w, tap, length, a0, a1, a2, a3, a4, a5, a6, a7):
    """(a0, ..., a7) plus, for p < 8, the products of x[at + p * step:][:length] and w[tap:][:length]
    (length a whole number of vectors), a vector at a time: w's vector loaded once for the eight."""
    for c in range(0, length, WIDTH):
        wv, s = load(w, tap + c), at + c
        a0, a1 = fma(load(x, s), wv, a0), fma(load(x, s + step), wv, a1)
        a2, a3 = fma(load(x, s + 2 * step), wv, a2), fma(load(x, s + 3 * step), wv, a3)
        a4, a5 = fma(load(x, s + 4 * step), wv, a4), fma(load(x, s + 5 * step), wv, a5)
        a6, a7 = fma(load(x, s + 6 * step), wv, a6), fma(load(x, s + 7 * step), wv, a7)
    return a0, a1, a2, a3, a4, a5, a6, a7


@numba.njit(inline="always", cache=True)
def interior_dots(x, wt, g, n, oh, ow, o, bias, has_bias, y_rows, row):
    """y_rows[row + p, o] (+ bias[o]) for the PIXELS outputs ow .. ow + PIXELS - 1 of row (n, oh), whose
    windows lie inside the image across: a window's row i is kw*C contiguous floats of x, dotted
    with w's kw*C floats of that row, which the outputs share (one load of w, eight of x, eight
    FMAs, one chain an output); the eight outputs' lanes summed together (simd.lane_sums), then
    the floats past the whole vectors added one at a time."""
    (height, width, channels, _, _, kh, kw, sh, sw, pt, pl) = g
    length = kw * channels
    whole = length // WIDTH * WIDTH
    step = sw * channels
    a0, a1, a2, a3, a4, a5, a6, a7 = zeros(), zeros(), zeros(), zeros(), zeros(), zeros(), zeros(), zeros()
    for i in range(kh):
        h = oh * sh - pt + i
        if 0 <= h < height:
            base = ((n * height + h) * width + ow * sw - pl) * channels
            tap = (o * kh + i) * length
            a0, a1, a2, a3, a4, a5, a6, a7 = add_eight_dots(x, base, step, wt, tap, whole,
                                                            a0, a1, a2, a3, a4, a5, a6, a7)
    sums = lane_sums(a0, a1, a2, a3, a4, a5, a6, a7)
    for p in range(PIXELS):
        rest = np.float32(0.0) if whole == length else rest_dot(x, wt, g, n, oh, ow + p, o, whole)
        y = lane(sums, p) + rest
        y_rows[row + p, o] = y + bias[o] if has_bias else y


@numba.njit(inline="always", cache=True)
def add_to_three(v, w0, w1, w2, left, middle, right):
    """A pixel's vector v into the three windows that read it, as their last, middle and first
    kernel column: (left + v * w2, middle + v * w1, right + v * w0)."""
    return fma(v, w2, left), fma(v, w1, middle), fma(v, w0, right)


@numba.njit(inline="always", cache=True)
def add_three_columns(x, at, step, w0, w1, w2, a0, a1, a2, a3, a4, a5, a6, a7):
    """(a0, ..., a7) plus, for p < 8 and j < 3, x's vector at + (p + j) * step times wj: each of
    the ten pixels' vectors loaded once and multiplied by every kernel column that reads it."""
    v = load(x, at)
    a0 = fma(v, w0, a0)
    v = load(x, at + step)
    a0, a1 = fma(v, w1, a0), fma(v, w0, a1)
    a0, a1, a2 = add_to_three(load(x, at + 2 * step), w0, w1, w2, a0, a1, a2)
    a1, a2, a3 = add_to_three(load(x, at + 3 * step), w0, w1, w2, a1, a2, a3)
    a2, a3, a4 = add_to_three(load(x, at + 4 * step), w0, w1, w2, a2, a3, a4)
    a3, a4, a5 = add_to_three(load(x, at + 5 * step), w0, w1, w2, a3, a4, a5)
    a4, a5, a6 = add_to_three(load(x, at + 6 * step), w0, w1, w2, a4, a5, a6)
    a5, a6, a7 = add_to_three(load(x, at + 7 * step), w0, w1, w2, a5, a6, a7)
    v = load(x, at + 8 * step)
    a6, a7 = fma(v, w2, a6), fma(v, w1, a7)
    return a0, a1, a2, a3, a4, a5, a6, fma(load(x, at + 9 * step), w2, a7)


@numba.njit(inline="always", cache=True)
def interior_three_column_dots(x, wt, g, n, oh, ow, o, bias, has_bias, y_rows, row):
    """interior_dots for a kernel three columns wide at stride 1 over whole vectors of channels:
    the eight windows of a kernel row read ten pixels, loaded once each (add_three_columns), where
    interior_dots loads each of them once for each window that reads it (24 loads, not 10, for
    24 FMAs)."""
    (height, width, channels, _, _, kh, kw, sh, sw, pt, pl) = g
    a0, a1, a2, a3, a4, a5, a6, a7 = zeros(), zeros(), zeros(), zeros(), zeros(), zeros(), zeros(), zeros()
    for i in range(kh):
        h = oh * sh - pt + i
        if 0 <= h < height:
            base = ((n * height + h) * width + ow - pl) * channels
            tap = (o * kh + i) * 3 * channels
            for c in range(0, channels, WIDTH):
                a0, a1, a2, a3, a4, a5, a6, a7 = add_three_columns(
                    x, base + c, channels, load(wt, tap + c), load(wt, tap + channels + c),
                    load(wt, tap + 2 * channels + c), a0, a1, a2, a3, a4, a5, a6, a7)
    sums = lane_sums(a0, a1, a2, a3, a4, a5, a6, a7)
    for p in range(PIXELS):
        y_rows[row + p, o] = lane(sums, p) + bias[o] if has_bias else lane(sums, p)


@numba.njit(inline="always", cache=True)
def prefetch_rows_below(x, g, n, oh, ow):
    """Ask for the input rows that the next output row's windows add (its task follows on this
    thread), under the PIXELS windows from output (n, oh, ow): x read from memory, a line at a time
    as each window needs it, had doubled the layer's time (the DCGAN's last, 128 x 28x28x32 -> 1,
    AMD EPYC Zen 5: 0.62 ms with x in cache, 1.04 from memory)."""
    (height, width, channels, _, _, kh, kw, sh, sw, pt, pl) = g
    left = max(0, ow * sw - pl)
    floats = (min(width, (ow + PIXELS - 1) * sw - pl + kw) - left) * channels
    for r in range(sh):
        h = oh * sh - pt + kh + r
        if h < height:
            prefetch_run(x, ((n * height + h) * width + left) * channels, floats)


@numba.njit(inline="always", cache=True)
def rest_dot(x, wt, g, n, oh, ow, o, whole):
    """Output (n, oh, ow, o)'s products past the whole vectors of its window's rows (inside the
    image across), one float at a time."""
    (height, width, channels, _, _, kh, kw, sh, sw, pt, pl) = g
    length = kw * channels
    total = np.float32(0.0)
    for i in range(kh):
        h = oh * sh - pt + i
        if 0 <= h < height:
            base = ((n * height + h) * width + ow * sw - pl) * channels
            tap = (o * kh + i) * length
            for c in range(whole, length):
                total += x[base + c] * wt[tap + c]
    return total


@numba.njit(parallel=True, fastmath={"contract", "reassoc"}, cache=True)
def forward_kernel(x, wt, g, bias, has_bias, activation, alpha, y_rows):
    """x and wt flat; each of `parts` tasks a run of output rows, the bias added as each output
    is stored, then the activation on all of them at once (a call a row had cost as much as the
    tanh: 0.08 of a 0.7 ms layer). The bias in that pass, a float a row for one channel, had
    taken 10% of the layer (perf): 128 x 28x28x32 -> 1 with tanh 0.71-0.73 -> 0.65-0.71 ms (AMD
    EPYC Zen 5, 2 threads, best of 60, old and new in turn, the same floats). Outputs whose
    windows lie inside the image across go PIXELS at a time (interior_dots), the others one by
    one (window_dot)."""
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    out_channels = y_rows.shape[1]
    first = min(out_width, -(-pl // sw))                               # the interior outputs of a row
    end = max(first, min(out_width, (width + pl - kw) // sw + 1))
    rows = len(y_rows) // out_width
    parts = min(rows, ROW_PARTS)
    three_columns = kw == 3 and sw == 1 and channels % WIDTH == 0
    for part in numba.prange(parts):
        for task in range(part * rows // parts, (part + 1) * rows // parts):
            n, oh = task // out_height, task % out_height
            row = task * out_width
            for o in range(out_channels):
                ow = 0
                while ow < out_width:
                    if first <= ow < end and end - first >= PIXELS:
                        ow = min(ow, end - PIXELS)   # the last group ends at `end`, redoing a few outputs
                        if three_columns:
                            interior_three_column_dots(x, wt, g, n, oh, ow, o, bias, has_bias, y_rows, row + ow)
                        else:
                            interior_dots(x, wt, g, n, oh, ow, o, bias, has_bias, y_rows, row + ow)
                        prefetch_rows_below(x, g, n, oh, ow)
                        ow += PIXELS
                    else:
                        y = window_dot(x, wt, g, n, oh, ow, o)
                        y_rows[row + ow, o] = y + bias[o] if has_bias else y
                        ow += 1
        first_row = part * rows // parts * out_width
        apply_epilogue(y_rows, first_row, 0, (part + 1) * rows // parts * out_width - first_row, out_channels, bias,
                       False, activation, alpha)


@numba.njit(inline="always", cache=True)
def pixel_taps(dy, g, n, h, w, out_channels, values, rows):
    """values[t], rows[t]: the t-th output gradient dy[n, oh, ow, o] of the windows that read
    input pixel (n, h, w), and the start of its tap's row of wt (flat), in the order (i, j, o);
    returns their number."""
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    count = 0
    for i in range(kh):
        t = h + pt - i
        if t < 0 or t % sh != 0 or t // sh >= out_height:
            continue
        oh = t // sh
        for j in range(kw):
            u = w + pl - j
            if u < 0 or u % sw != 0 or u // sw >= out_width:
                continue
            ow = u // sw
            for o in range(out_channels):
                values[count] = dy[((n * out_height + oh) * out_width + ow) * out_channels + o]
                rows[count] = ((o * kh + i) * kw + j) * channels
                count += 1
    return count


@numba.njit(parallel=True, fastmath={"contract"}, cache=True)
def input_gradient_kernel(dy, wt, g, images, factors, activation, alpha, dx_rows):
    """dx_rows (N*H*W, C); dy and wt flat. Each of `parts` tasks takes a run of input rows
    (unit_stride_row, or strided_row); each row then takes the epilogue: none, or (activation
    LEAKY_RELU_GRAD) times the gradient of the leaky ReLU whose output `factors` (dx's shape,
    flat) was the input, while the row is in L1."""
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    dx = dx_rows.reshape(-1)
    out_channels = wt.size // (kh * kw * channels)
    depth = kh * kw * out_channels
    taps = np.empty((2, depth), dtype=np.int64)   # tap t's dy offset from tap (0, 0)'s at stride 1, its row of wt
    for i in range(kh):
        for j in range(kw):
            for o in range(out_channels):
                t = (i * kw + j) * out_channels + o
                taps[0, t] = -(i * out_width + j) * out_channels + o
                taps[1, t] = ((o * kh + i) * kw + j) * channels
    rows = images * height
    parts = min(rows, ROW_PARTS)
    lists = np.empty((parts, 4, depth), dtype=np.int64)   # a task's tap lists (unit_stride_row, strided_row)
    values = np.empty((parts, depth), dtype=np.float32)
    for part in numba.prange(parts):
        for task in range(part * rows // parts, (part + 1) * rows // parts):
            if sh == 1 and sw == 1:
                unit_stride_row(dy, wt, g, task, taps, lists[part], dx)
            else:
                strided_row(dy, wt, g, task, out_channels, lists[part], values[part], dx)
            if activation == LEAKY_RELU_GRAD:
                times_row_gradient(dx, factors, task * width * channels, width * channels, alpha)


@numba.njit(inline="always", cache=True)
def times_row_gradient(dx, factors, start, length, alpha):
    """dx[start:][:length] times the gradient of the leaky ReLU whose output is factors[start:][:length],
    the floats of epilogue.expensive_activation's LEAKY_RELU_GRAD: whole vectors, then the rest."""
    slope = splat(alpha)
    whole = length // WIDTH * WIDTH
    for f in range(start, start + whole, WIDTH):
        store(dx, opaque(f), times_leaky_gradient(load(dx, f), load(factors, f), slope))   # whole (simd.opaque)
    for f in range(start + whole, start + length):
        dx[f] = dx[f] * (np.float32(1.0) if factors[f] > 0 else alpha)


@numba.njit(inline="always", cache=True)
def select_taps(taps, kw, out_channels, i_lo, i_hi, j_lo, j_hi, chosen):
    """chosen[0], chosen[1] = taps' columns for kernel rows i_lo .. i_hi - 1 and columns
    j_lo .. j_hi - 1 (in the order (i, j, o)); returns their number."""
    count = 0
    for i in range(i_lo, i_hi):
        for j in range(j_lo, j_hi):
            for o in range(out_channels):
                t = (i * kw + j) * out_channels + o
                chosen[0, count], chosen[1, count] = taps[0, t], taps[1, t]
                count += 1
    return count


@numba.njit(inline="always", cache=True)
def unit_stride_row(dy, wt, g, task, taps, lists, dx):
    """Input row `task` of dx at stride 1: pixel (h, w) reads dy[oh = h + pt - i, ow = w + pl - j]
    for the taps (i, j) that land in dy, fixed offsets from one corner of dy. The row's kernel rows
    are listed once; a pixel that every kernel column's window reads takes that list, two pixels
    at a time (pixel_pair_channels: its neighbour's taps one output pixel on), the few at the
    row's ends a list of their own."""
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    out_channels = taps.shape[1] // (kh * kw)
    whole = channels // WIDTH * WIDTH
    n, h = task // height, task % height
    i_lo, i_hi = max(0, h + pt - out_height + 1), min(kh, h + pt + 1)
    row_count = select_taps(taps, kw, out_channels, i_lo, i_hi, 0, kw, lists[:2])
    w = 0
    while w < width:
        j_lo, j_hi = max(0, w + pl - out_width + 1), min(kw, w + pl + 1)
        pixel = (task * width + w) * channels
        corner = ((n * out_height + h + pt) * out_width + w + pl) * out_channels   # tap (0, 0)'s, in dy or not
        if j_lo == 0 and j_hi == kw:
            if w + 3 < width and w + 3 + pl < out_width and whole == channels:
                pixel_quad_gradient(dy, corner, out_channels, lists[0], lists[1], row_count, wt, channels, dx, pixel)
                w += 4
                continue
            if w + 1 < width and w + 1 + pl < out_width and whole == channels:
                pixel_pair_channels(dy, corner, out_channels, lists[0], lists[1], row_count, wt, NO_BIAS, False,
                                    channels, splat(np.float32(-0.0)), splat(np.float32(1.0)), dx, pixel)
                w += 2
                continue
            pixel_gradient(dy, corner, lists[0], lists[1], row_count, wt, whole, channels, dx, pixel)
        else:
            count = select_taps(taps, kw, out_channels, i_lo, i_hi, j_lo, j_hi, lists[2:])
            pixel_gradient(dy, corner, lists[2], lists[3], count, wt, whole, channels, dx, pixel)
        w += 1


@numba.njit(inline="always", cache=True)
def pixel_quad_gradient(dy, corner, step, taps, tap_rows, count, wt, channels, dx, pixel):
    """dx of four pixels side by side (from dx[pixel]), whose windows read dy at the same taps,
    `step` floats apart: each wt vector loaded once for the four, eight chains of FMAs for two
    vectors of channels (pixel_pair_channels's four had waited out the FMA's latency: a tap list
    of 9 is a chain of 9 FMAs), four for a last single vector; each pixel's sums those of
    pixel_pair_channels, tap by tap in the list's order."""
    c0 = 0
    while c0 < channels:
        pair = c0 + 2 * WIDTH <= channels
        a0, a1, b0, b1 = zeros(), zeros(), zeros(), zeros()
        e0, e1, f0, f1 = zeros(), zeros(), zeros(), zeros()
        for t in range(count):
            at, row = corner + taps[t], tap_rows[t] + c0
            v0, v1 = splat_at(dy, at), splat_at(dy, at + step)
            v2, v3 = splat_at(dy, at + 2 * step), splat_at(dy, at + 3 * step)
            w0 = load(wt, row)
            a0, b0, e0, f0 = fma(v0, w0, a0), fma(v1, w0, b0), fma(v2, w0, e0), fma(v3, w0, f0)
            if pair:
                w1 = load(wt, row + WIDTH)
                a1, b1, e1, f1 = fma(v0, w1, a1), fma(v1, w1, b1), fma(v2, w1, e1), fma(v3, w1, f1)
        for p, (first, second) in enumerate(((a0, a1), (b0, b1), (e0, e1), (f0, f1))):
            store(dx, pixel + p * channels + c0, first)
            if pair:
                store(dx, pixel + p * channels + c0 + WIDTH, second)
        c0 += 2 * WIDTH if pair else WIDTH


@numba.njit(inline="always", cache=True)
def strided_row(dy, wt, g, task, out_channels, lists, values, dx):
    """Input row `task` of dx at a stride over 1: each pixel's taps listed (pixel_taps)."""
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    whole = channels // WIDTH * WIDTH
    n, h = task // height, task % height
    for t in range(lists.shape[1]):
        lists[0, t] = t
    for w in range(width):
        count = pixel_taps(dy, g, n, h, w, out_channels, values, lists[1])
        pixel_gradient(values, 0, lists[0], lists[1], count, wt, whole, channels, dx, (task * width + w) * channels)


@numba.njit(inline="always", cache=True)
def pixel_gradient(source, start, taps, tap_rows, count, wt, whole, channels, dx, pixel):
    """dx[pixel:pixel + C] = sum over t < count of source[start + taps[t]] * wt[tap_rows[t]:][:C]:
    the whole vectors by pixel_channels, the rest one float at a time."""
    pixel_channels(source, start, taps, tap_rows, count, wt, NO_BIAS, False, whole, splat(np.float32(-0.0)),
                   splat(np.float32(1.0)), dx, pixel)
    for c in range(whole, channels):
        total = np.float32(0.0)
        for t in range(count):
            total += source[start + taps[t]] * wt[tap_rows[t] + c]
        dx[pixel + c] = total


@numba.njit(parallel=True, fastmath={"contract", "reassoc"}, cache=True)
def transposed_kernel(small, w, g, images, bias, has_bias, activation, alpha, big_rows):
    """big_rows (N*H*W, C) = epilogue(the transpose of Geometry g's convolution applied to small),
    for few big channels C: each big float the sum, over the taps whose windows read its pixel,
    of a dot of small's O contiguous floats there with w[i, j, c, :] (w flat, (kh, kw, C, O)).
    A task's input row h lists its kernel rows once. The pixels of a row that lie sw apart (a
    phase) have the same taps, j = first_j, first_j + sw, ..., at small pixels one apart: those
    whose every tap lands in small go PIXELS at a time (phase_dots, as the forward's
    interior_dots), the others one by one (pixel_dot). Taken for one big channel
    (conv2d_transpose.transposed_conv), where it replaces a product of 9 columns and col2im: the
    DCGAN discriminator's first layer's dx, 128 x 14x14x64 -> 28x28x1 at stride 2, AMD EPYC Zen 3,
    2 threads, old and new alternating, 3.70-3.81 -> 2.84-3.03 ms; a pixel at a time, two chains
    of FMAs and a lane sum each, 64 x 14x14x64 on an AMD EPYC Zen 5 took 0.30 ms in a DCGAN step.
    Into 3 channels it was slower (64 x 16x16x64 -> 32x32x3: 3.21-3.32 -> 4.32-4.45 ms): each
    channel walks the taps again; sharing small's loads over the channels is not tried."""
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    small_channels = w.size // (kh * kw * channels)
    rows = images * height
    parts = min(rows, ROW_PARTS)
    for part in numba.prange(parts):
        kernel_rows = np.empty((2, kh), dtype=np.int64)
        for task in range(part * rows // parts, (part + 1) * rows // parts):
            n, h = task // height, task % height
            ahead = (h + 1 + pt) // sh   # the last row of small the next big row reads, asked for ahead
            if (h + 1 + pt) % sh == 0 and ahead < out_height:
                prefetch_run(small, (n * out_height + ahead) * out_width * small_channels, out_width * small_channels)
            row_count = 0
            for i in range(kh):          # the kernel rows whose windows read row h, and their output rows
                t = h + pt - i
                if t >= 0 and t % sh == 0 and t // sh < out_height:
                    kernel_rows[0, row_count], kernel_rows[1, row_count] = i, t // sh
                    row_count += 1
            for c in range(channels):
                for phase in range(min(sw, width)):
                    first_j, first_ow = (phase + pl) % sw, (phase + pl) // sw   # pixel phase + sw * q: ow first_ow + q
                    pixels = (width - phase + sw - 1) // sw
                    reach = (kw - 1 - first_j) // sw          # taps j = first_j + sw * k, k <= reach, at ow - k
                    lo, hi = max(0, reach - first_ow), min(pixels, out_width - first_ow)   # every tap in small
                    q = 0
                    while q < pixels:
                        if lo <= q < hi and hi - lo >= PIXELS:
                            q = min(q, hi - PIXELS)   # the last group ends at hi, redoing a few pixels
                            phase_dots(small, w, g, n, kernel_rows, row_count, first_j, first_ow + q, c, big_rows,
                                       task * width + phase + sw * q)
                            q += PIXELS
                        else:
                            big_rows[task * width + phase + sw * q, c] = pixel_dot(
                                small, w, g, n, kernel_rows, row_count, first_j, first_ow + q, c)
                            q += 1
        first_row = part * rows // parts * width
        apply_epilogue(big_rows, first_row, 0, (part + 1) * rows // parts * width - first_row, channels, bias,
                       has_bias, activation, alpha)


@numba.njit(inline="always", cache=True)
def pixel_dot(small, w, g, n, kernel_rows, row_count, first_j, first_ow, c):
    """Big channel c at one pixel: over its kernel rows and taps j = first_j + sw * k at small
    pixel first_ow - k, those inside small, the dots of small's floats with w's, a vector at a time
    in two chains of FMAs, their lanes summed at the end."""
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    small_channels = w.size // (kh * kw * channels)
    even, odd = zeros(), zeros()
    total = np.float32(0.0)
    for r in range(row_count):
        i, oh = kernel_rows[0, r], kernel_rows[1, r]
        j, ow = first_j, first_ow
        while j < kw:
            if 0 <= ow < out_width:
                even, odd, total = add_dot(small, ((n * out_height + oh) * out_width + ow) * small_channels,
                                           w, ((i * kw + j) * channels + c) * small_channels,
                                           small_channels, even, odd, total)
            j += sw
            ow -= 1
    return total + lane_sum(add(even, odd))


@numba.njit(inline="always", cache=True)
def phase_dots(small, w, g, n, kernel_rows, row_count, first_j, first_ow, c, big_rows, x):
    """pixel_dot for PIXELS pixels of a phase, sw apart from big row x, whose every tap lands in
    small (at small pixels one apart): w's loads shared, one chain of FMAs a pixel, their lanes
    summed together (simd.lane_sums), then the floats past the whole vectors one at a time."""
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    step = w.size // (kh * kw * channels)       # small's channels
    whole = step // WIDTH * WIDTH
    a0, a1, a2, a3, a4, a5, a6, a7 = zeros(), zeros(), zeros(), zeros(), zeros(), zeros(), zeros(), zeros()
    for r in range(row_count):
        i, oh = kernel_rows[0, r], kernel_rows[1, r]
        for j in range(first_j, kw, sw):
            at = ((n * out_height + oh) * out_width + first_ow - (j - first_j) // sw) * step
            tap = ((i * kw + j) * channels + c) * step
            a0, a1, a2, a3, a4, a5, a6, a7 = add_eight_dots(small, at, step, w, tap, whole,
                                                            a0, a1, a2, a3, a4, a5, a6, a7)
    sums = lane_sums(a0, a1, a2, a3, a4, a5, a6, a7)
    for p in range(PIXELS):
        total = lane(sums, p)
        if whole < step:
            for r in range(row_count):
                i, oh = kernel_rows[0, r], kernel_rows[1, r]
                for j in range(first_j, kw, sw):
                    at = ((n * out_height + oh) * out_width + first_ow + p - (j - first_j) // sw) * step
                    tap = ((i * kw + j) * channels + c) * step
                    for v in range(whole, step):
                        total += small[at + v] * w[tap + v]
        big_rows[x + p * sw, c] = total


@numba.njit(parallel=True, fastmath={"contract"}, cache=True)
def weight_gradient_kernel(dy, x, g, partials):
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    parts, out_channels = partials.shape[0], partials.shape[1]
    rows = x.shape[0] * out_height
    whole = channels // WIDTH * WIDTH
    three_columns = kw == 3 and sw == 1
    for part in numba.prange(parts):
        partial = partials[part]
        partial[:] = 0.0
        for task in range(part * rows // parts, (part + 1) * rows // parts):
            n, oh = task // out_height, task % out_height
            for r in range(sh):   # the input rows the next output row adds, asked for ahead
                h = oh * sh - pt + kh + r
                if h < height:
                    prefetch_run(x, (n * height + h) * width * channels, width * channels)
            for i in range(kh):
                h = oh * sh - pt + i
                if h < 0 or h >= height:
                    continue
                if three_columns:   # the row's pixels loaded once for the three kernel columns
                    for o in range(out_channels):
                        tap = (o * kh + i) * kw * channels
                        d = task * out_width * out_channels + o
                        at = (n * height + h) * width * channels
                        for c in range(0, whole - WIDTH, 2 * WIDTH):
                            t0, t1, t2, u0, u1, u2 = three_column_pair_sums(dy, d, out_channels, out_width, x, at + c,
                                                                            channels, width, pl)
                            add_three_taps(partial, tap, channels, c, t0, t1, t2)
                            add_three_taps(partial, tap, channels, c + WIDTH, u0, u1, u2)
                        if whole // WIDTH % 2:
                            c = whole - WIDTH
                            t0, t1, t2 = three_column_sums(dy, d, out_channels, out_width, x, at + c, channels,
                                                           width, pl)
                            add_three_taps(partial, tap, channels, c, t0, t1, t2)
                for j in range(kw):
                    # the outputs of this row whose tap (i, j) lies in the image: a row's sum in
                    # registers (four chains of FMAs), then added to the partial
                    first = max(0, -((j - pl) // sw))
                    last = min(out_width, (width - 1 + pl - j) // sw + 1)
                    row = (n * height + h) * width - pl + j
                    for o in range(out_channels):
                        tap = ((o * kh + i) * kw + j) * channels
                        d = task * out_width * out_channels + o    # dy[n, oh, 0, o], flat
                        for c in range(0, 0 if three_columns else whole, WIDTH):
                            total = row_sum(dy, d, out_channels, x, row * channels + c, sw * channels, first, last)
                            store(partial, tap + c, add(load(partial, tap + c), total))
                        for c in range(whole, channels):
                            total = np.float32(0.0)
                            for ow in range(first, last):
                                total += dy[n, oh, ow, o] * x[n, h, ow * sw - pl + j, c]
                            partial[o, i, j, c] += total


@numba.njit(inline="always", cache=True)
def splat_or_zero(dy, d, dy_step, ow, out_width):
    """dy[d + ow * dy_step] in every lane, or 0 for an output past the row's ends."""
    return splat_at(dy, d + ow * dy_step) if 0 <= ow < out_width else zeros()


@numba.njit(inline="always", cache=True)
def add_edge_pixel(dy, d, dy_step, out_width, x, at, x_step, q, pl, a0, a1, a2):
    """(a0, a1, a2) plus pixel q's vector times dy of output q + pl - j, for each j < 3 whose
    output is in the row (only those: an infinity no output reads stays out of the sums)."""
    v = load(x, at + q * x_step)
    if 0 <= q + pl < out_width:
        a0 = fma(splat_at(dy, d + (q + pl) * dy_step), v, a0)
    if 0 <= q + pl - 1 < out_width:
        a1 = fma(splat_at(dy, d + (q + pl - 1) * dy_step), v, a1)
    if 0 <= q + pl - 2 < out_width:
        a2 = fma(splat_at(dy, d + (q + pl - 2) * dy_step), v, a2)
    return a0, a1, a2


@numba.njit(inline="always", cache=True)
def three_column_sums(dy, d, dy_step, out_width, x, at, x_step, width, pl):
    """For j < 3, the sum over the row's outputs ow of dy[d + ow * dy_step] times the vector of
    x's pixel ow - pl + j (at + that * x_step, flat; stride 1): pixel by pixel q, each loaded
    once for the three outputs that read it (q + pl - j), their dy in registers as they roll by,
    even and odd pixels in chains of their own (six chains of FMAs); the pixels at the row's
    ends, which fewer than three outputs read, one at a time (add_edge_pixel)."""
    a0, a1, a2, b0, b1, b2 = zeros(), zeros(), zeros(), zeros(), zeros(), zeros()
    middle = min(width, max(0, 2 - pl))               # from here on three outputs read each pixel ...
    end = max(middle, min(width, out_width - pl))     # ... up to here
    for q in range(middle):
        a0, a1, a2 = add_edge_pixel(dy, d, dy_step, out_width, x, at, x_step, q, pl, a0, a1, a2)
    for q in range(end, width):
        b0, b1, b2 = add_edge_pixel(dy, d, dy_step, out_width, x, at, x_step, q, pl, b0, b1, b2)
    d0 = splat_or_zero(dy, d, dy_step, middle + pl, out_width)
    d1 = splat_or_zero(dy, d, dy_step, middle + pl - 1, out_width)
    d2 = splat_or_zero(dy, d, dy_step, middle + pl - 2, out_width)
    q = middle
    while q + 2 <= end:
        v = load(x, at + q * x_step)
        a0, a1, a2 = fma(d0, v, a0), fma(d1, v, a1), fma(d2, v, a2)
        d0, d1, d2 = splat_or_zero(dy, d, dy_step, q + 1 + pl, out_width), d0, d1
        v = load(x, at + (q + 1) * x_step)
        b0, b1, b2 = fma(d0, v, b0), fma(d1, v, b1), fma(d2, v, b2)
        d0, d1, d2 = splat_or_zero(dy, d, dy_step, q + 2 + pl, out_width), d0, d1
        q += 2
    if q < end:
        v = load(x, at + q * x_step)
        a0, a1, a2 = fma(d0, v, a0), fma(d1, v, a1), fma(d2, v, a2)
    return add(a0, b0), add(a1, b1), add(a2, b2)


@numba.njit(inline="always", cache=True)
def three_column_pair_sums(dy, d, dy_step, out_width, x, at, x_step, width, pl):
    """three_column_sums for two vectors of channels side by side (at and at + WIDTH): each
    pixel's two vectors against the same three dy, twelve chains of FMAs; the same sums."""
    a0, a1, a2, b0, b1, b2 = zeros(), zeros(), zeros(), zeros(), zeros(), zeros()
    e0, e1, e2, f0, f1, f2 = zeros(), zeros(), zeros(), zeros(), zeros(), zeros()
    middle = min(width, max(0, 2 - pl))
    end = max(middle, min(width, out_width - pl))
    for q in range(middle):
        a0, a1, a2 = add_edge_pixel(dy, d, dy_step, out_width, x, at, x_step, q, pl, a0, a1, a2)
        e0, e1, e2 = add_edge_pixel(dy, d, dy_step, out_width, x, at + WIDTH, x_step, q, pl, e0, e1, e2)
    for q in range(end, width):
        b0, b1, b2 = add_edge_pixel(dy, d, dy_step, out_width, x, at, x_step, q, pl, b0, b1, b2)
        f0, f1, f2 = add_edge_pixel(dy, d, dy_step, out_width, x, at + WIDTH, x_step, q, pl, f0, f1, f2)
    d0 = splat_or_zero(dy, d, dy_step, middle + pl, out_width)
    d1 = splat_or_zero(dy, d, dy_step, middle + pl - 1, out_width)
    d2 = splat_or_zero(dy, d, dy_step, middle + pl - 2, out_width)
    q = middle
    while q + 2 <= end:
        v, u = load(x, at + q * x_step), load(x, at + WIDTH + q * x_step)
        a0, a1, a2 = fma(d0, v, a0), fma(d1, v, a1), fma(d2, v, a2)
        e0, e1, e2 = fma(d0, u, e0), fma(d1, u, e1), fma(d2, u, e2)
        d0, d1, d2 = splat_or_zero(dy, d, dy_step, q + 1 + pl, out_width), d0, d1
        v, u = load(x, at + (q + 1) * x_step), load(x, at + WIDTH + (q + 1) * x_step)
        b0, b1, b2 = fma(d0, v, b0), fma(d1, v, b1), fma(d2, v, b2)
        f0, f1, f2 = fma(d0, u, f0), fma(d1, u, f1), fma(d2, u, f2)
        d0, d1, d2 = splat_or_zero(dy, d, dy_step, q + 2 + pl, out_width), d0, d1
        q += 2
    if q < end:
        v, u = load(x, at + q * x_step), load(x, at + WIDTH + q * x_step)
        a0, a1, a2 = fma(d0, v, a0), fma(d1, v, a1), fma(d2, v, a2)
        e0, e1, e2 = fma(d0, u, e0), fma(d1, u, e1), fma(d2, u, e2)
    return add(a0, b0), add(a1, b1), add(a2, b2), add(e0, f0), add(e1, f1), add(e2, f2)


@numba.njit(inline="always", cache=True)
def add_three_taps(partial, tap, channels, c, t0, t1, t2):
    """partial's three kernel columns from `tap` (channels floats apart), channels c .. c + WIDTH,
    plus t0, t1, t2 (one vector a column)."""
    store(partial, tap + c, add(load(partial, tap + c), t0))
    store(partial, tap + channels + c, add(load(partial, tap + channels + c), t1))
    store(partial, tap + 2 * channels + c, add(load(partial, tap + 2 * channels + c), t2))


@numba.njit(inline="always", cache=True)
def row_sum(dy, d, dy_step, x, at, x_step, first, last):
    """The sum over ow in first .. last - 1 of dy[d + ow * dy_step] times the vector
    x[at + ow * x_step:][:WIDTH] (dy and x flat): four chains of FMAs, ow, ow + 1, ow + 2 and
    ow + 3 one in each."""
    a0, a1, a2, a3 = zeros(), zeros(), zeros(), zeros()
    ow = first
    while ow + 4 <= last:
        a0 = fma(splat_at(dy, d + ow * dy_step), load(x, at + ow * x_step), a0)
        a1 = fma(splat_at(dy, d + (ow + 1) * dy_step), load(x, at + (ow + 1) * x_step), a1)
        a2 = fma(splat_at(dy, d + (ow + 2) * dy_step), load(x, at + (ow + 2) * x_step), a2)
        a3 = fma(splat_at(dy, d + (ow + 3) * dy_step), load(x, at + (ow + 3) * x_step), a3)
        ow += 4
    while ow < last:
        a0 = fma(splat_at(dy, d + ow * dy_step), load(x, at + ow * x_step), a0)
        ow += 1
    return add(add(a0, a1), add(a2, a3))


def transposed(w):
    """w (kh, kw, C, O) as (O, kh, kw, C), C-contiguous."""
    return np.ascontiguousarray(w.transpose(3, 0, 1, 2))


def direct_forward(x, w, bias, g, activation_code, alpha, y):
    forward_kernel(x.reshape(-1), transposed(w).reshape(-1), g, NO_BIAS if bias is None else bias,
                   bias is not None, activation_code, np.float32(alpha), y.reshape(-1, w.shape[3]))


def direct_input_gradient(dy, w, g, dx, leaky_relu_output=None, alpha=0.0):
    """dx (N, H, W, C), or dx times the leaky ReLU gradient of leaky_relu_output (dx's shape)."""
    factors, code = (NO_BIAS, NONE) if leaky_relu_output is None else (leaky_relu_output.reshape(-1), LEAKY_RELU_GRAD)
    input_gradient_kernel(dy.reshape(-1), transposed(w).reshape(-1), g, dx.shape[0], factors, code, np.float32(alpha),
                          dx.reshape(-1, g.channels))


def direct_weight_gradient(dy, x, g, w_shape):
    """dw (kh, kw, C, O)."""
    partials = np.empty((PARTS, w_shape[3], *w_shape[:3]), dtype=np.float32)
    weight_gradient_kernel(dy, x, g, partials)
    total = partials[0].copy()
    for part in partials[1:]:
        total += part
    return np.ascontiguousarray(total.transpose(1, 2, 3, 0))


def direct_transposed(small, w, g, bias, activation_code, alpha, big):
    """big (N, H, W, C) = epilogue(the transpose of g's convolution applied to small (N, OH, OW, O)),
    w (kh, kw, C, O): a Conv2DTranspose into one channel, or a Conv2D's input gradient into one."""
    transposed_kernel(small.reshape(-1), w.reshape(-1), g, small.shape[0], NO_BIAS if bias is None else bias,
                      bias is not None, activation_code, np.float32(alpha), big.reshape(-1, g.channels))
