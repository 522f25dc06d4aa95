"""Conv2D of an image with few channels (kh*kw*C <= FEW_INPUTS_MAX_DEPTH: a grayscale or RGB first
layer) into a whole number of vectors of output channels (O % WIDTH == 0), its forward and weight
gradient, computed directly, output channels a vector at a time.

Shapes and sums as in conv2d.py and conv2d_backward.py; w is (kh, kw, C, O), so w's rows,
wr[(i, j, c)] = w[i, j, c, :], are O contiguous floats. With a depth of kh*kw*C = 9 (3x3, one
channel) the im2col product would run the matmul's 12 x 32 register tile for 9 steps between
stores of its 24 vectors, and write and read an im2col matrix 9 times the image. Here:
  forward:  y[n, oh, ow, :] = bias + sum over the window's taps (i, j, c) inside the image of
            x[n, h, w, c] * wr[(i, j, c)]: a window inside the image reads its taps at fixed
            offsets from its corner, one across the border lists its taps inside first; then
            FOUR vectors of output channels summed in registers over them (four independent
            FMA chains), then single vectors; two windows inside side by side at once (eight
            chains, each w vector loaded once for both); leaky ReLU in registers as stored
            (simd.biased_leaky: + -0.0, then the select; slope 1 without it: exact), any other
            activation on the whole output row; one output row per task, which asks for the
            lines of the row ROWS_AHEAD on, to be written: in a training step the output often
            lands in memory out of cache, and a task's short row of stores (14 pixels x 64
            channels, 3.5 KB) is over before the hardware's prefetchers follow it (a DCGAN step's
            64 x 28x28x1 -> 14x14x64 on the G pass, in processes where its output comes out of
            cache, AMD EPYC Zen 5, 2 threads, medians of 30 steps: 0.40-0.43 -> 0.28-0.30 ms;
            0.10-0.11 ms either way where it is in cache)
  dw:       dw[(i, j, c), :] = sum over every window of x[n, h, w, c] * dy[n, oh, ow, :]: for each
            tap, four vectors of it summed in registers over a row of output pixels, two pixels
            at a time into two sets of four chains (group_sums; one set of four had waited out
            the FMA's latency: 128 x 28x28x1 -> 14x14x64, stride 2, AMD EPYC Zen 5, 2 threads,
            old and new in turn, best of 100, 0.36-0.37 -> 0.26-0.30 ms), then added to the task's
            partial (that row of dy stays in L1, the next row's asked for ahead: from memory
            0.48-0.55 -> 0.33-0.35 ms); a kernel three columns wide sums its three taps of a
            kernel row at once (three_tap_sums: each output's dy vectors loaded once for three
            taps, twelve chains; 128 x 28x28x1 -> 14x14x64, stride 2, two cores of an Intel Xeon,
            family 6 model 167, old and new alternating, medians of 30 bests of 5: 0.400-0.410 ->
            0.311-0.314 ms); each of PARTS tasks sums its share of the output rows,
            the partials added in a fixed order at the end (the same sums whatever the threads)
Listing every window's taps had cost the forward as much as the FMAs and stores (a 3x3 window
over one channel, 9 taps: ~60 of ~90 ns a pixel, one core); the windows inside the image now
skip it. AMD EPYC Zen 3, 2 threads, old and new alternating, 8 rounds, ms (the same floats):
128 x 28x28x1 -> 14x14x64 (3x3, stride 2, a DCGAN's first) 1.34-1.41 -> 1.12-1.21;
64 x 32x32x3 -> 64 (3x3) 7.06-7.34 -> 5.30-5.46; 64 x 28x28x1 -> 32 (5x5) 4.78-6.08 -> 2.56-3.28.
One window's four chains of 9 FMAs (3x3, one channel) waited out the FMA's latency: ~70 cycles
a window, not the 36 of its FMAs; two windows at a time (AMD EPYC Zen 4, 2 threads, old and new
in turn, best of 300, ms, the same floats): 128 x 28x28x1 -> 14x14x64 (stride 2) 0.52-0.54 ->
0.32-0.33 (PyTorch 0.57); 64 x 32x32x3 -> 64 2.35-2.99 -> 1.50-1.52.
Cost: 2*N*OH*OW*kh*kw*C*O FLOPs a pass; the forward reads x and writes y once, the weight
gradient reads x and dy once. The input gradient is conv2d_backward's (the transposed
convolution of dy, whose channels are the layer's many outputs).
"""

import numba
import numpy as np

from pyai.kernels.numba_cpu.epilogue import LEAKY_RELU, NONE
from pyai.kernels.numba_cpu.matmul import apply_epilogue
from pyai.kernels.numba_cpu.matmul_micro import NO_BIAS
from pyai.kernels.numba_cpu.simd import (WIDTH, add, biased_leaky, fma, load, prefetch_run, prefetch_run_for_write,
                                         splat, splat_at, store, zeros)

FEW_INPUTS_MAX_DEPTH = 32   # kh*kw*C up to this: a 3x3 or 5x5 kernel over 1 channel, 3x3 over RGB
PARTS = 16                  # the weight gradient's partial sums: enough tasks to spread over the threads
ROWS_AHEAD = 2              # the output row whose lines a task asks for, this many rows on
GROUP = 4 * WIDTH           # output channels summed together: four FMA chains


def few_inputs(g, out_channels):
    """Whether these kernels serve a Conv2D of Geometry g and out_channels."""
    return g.depth <= FEW_INPUTS_MAX_DEPTH and out_channels % WIDTH == 0


@numba.njit(inline="always", cache=True)
def window_taps(x, g, n, oh, ow, values, rows, out_channels):
    """values[t], rows[t]: the t-th tap of window (n, oh, ow) inside the image and the start of
    its row of w (flat); returns the number of taps."""
    (height, width, channels, _, _, kh, kw, sh, sw, pt, pl) = g
    count = 0
    for i in range(kh):
        h = oh * sh - pt + i
        if 0 <= h < height:
            for j in range(kw):
                w = ow * sw - pl + j
                if 0 <= w < width:
                    for c in range(channels):
                        values[count] = x[((n * height + h) * width + w) * channels + c]
                        rows[count] = ((i * kw + j) * channels + c) * out_channels
                        count += 1
    return count


@numba.njit(inline="always", cache=True)
def pixel_channels(source, start, taps, tap_rows, count, w, bias, has_bias, out_channels, minus_zero, slope, y, out):
    """y[out:out + O] = bias + sum over t < count of source[start + taps[t]] * w[tap_rows[t]:][:O],
    leaky ReLU (or slope 1) in registers as it is stored: four vectors of output channels at a
    time (four FMA chains), then single vectors."""
    o0 = 0
    while o0 + GROUP <= out_channels:
        acc0, acc1, acc2, acc3 = zeros(), zeros(), zeros(), zeros()
        if has_bias:
            acc0, acc1 = load(bias, o0), load(bias, o0 + WIDTH)
            acc2, acc3 = load(bias, o0 + 2 * WIDTH), load(bias, o0 + 3 * WIDTH)
        for t in range(count):
            v, row = splat_at(source, start + taps[t]), tap_rows[t] + o0
            acc0 = fma(v, load(w, row), acc0)
            acc1 = fma(v, load(w, row + WIDTH), acc1)
            acc2 = fma(v, load(w, row + 2 * WIDTH), acc2)
            acc3 = fma(v, load(w, row + 3 * WIDTH), acc3)
        store(y, out + o0, biased_leaky(acc0, minus_zero, slope))
        store(y, out + o0 + WIDTH, biased_leaky(acc1, minus_zero, slope))
        store(y, out + o0 + 2 * WIDTH, biased_leaky(acc2, minus_zero, slope))
        store(y, out + o0 + 3 * WIDTH, biased_leaky(acc3, minus_zero, slope))
        o0 += GROUP
    while o0 + WIDTH <= out_channels:
        acc = load(bias, o0) if has_bias else zeros()
        for t in range(count):
            acc = fma(splat_at(source, start + taps[t]), load(w, tap_rows[t] + o0), acc)
        store(y, out + o0, biased_leaky(acc, minus_zero, slope))
        o0 += WIDTH


@numba.njit(inline="always", cache=True)
def start_values(bias, has_bias, o0):
    return load(bias, o0) if has_bias else zeros()


@numba.njit(inline="always", cache=True)
def pixel_pair_channels(source, start, step, taps, tap_rows, count, w, bias, has_bias, out_channels, minus_zero,
                        slope, y, out):
    """pixel_channels for two windows inside the image, `step` floats of source apart, their
    outputs side by side from y[out]: each w vector loaded once for both, eight FMA chains (four,
    one pixel's, wait out the FMA's latency: a 3x3 window over one channel is 9 FMAs a chain)."""
    o0 = 0
    while o0 + GROUP <= out_channels:
        acc0, acc1 = start_values(bias, has_bias, o0), start_values(bias, has_bias, o0 + WIDTH)
        acc2, acc3 = start_values(bias, has_bias, o0 + 2 * WIDTH), start_values(bias, has_bias, o0 + 3 * WIDTH)
        nxt0, nxt1, nxt2, nxt3 = acc0, acc1, acc2, acc3
        for t in range(count):
            v, u, row = splat_at(source, start + taps[t]), splat_at(source, start + step + taps[t]), tap_rows[t] + o0
            w0, w1, w2, w3 = load(w, row), load(w, row + WIDTH), load(w, row + 2 * WIDTH), load(w, row + 3 * WIDTH)
            acc0, acc1, acc2, acc3 = fma(v, w0, acc0), fma(v, w1, acc1), fma(v, w2, acc2), fma(v, w3, acc3)
            nxt0, nxt1, nxt2, nxt3 = fma(u, w0, nxt0), fma(u, w1, nxt1), fma(u, w2, nxt2), fma(u, w3, nxt3)
        for i, (a, b) in enumerate(((acc0, nxt0), (acc1, nxt1), (acc2, nxt2), (acc3, nxt3))):
            store(y, out + o0 + i * WIDTH, biased_leaky(a, minus_zero, slope))
            store(y, out + out_channels + o0 + i * WIDTH, biased_leaky(b, minus_zero, slope))
        o0 += GROUP
    while o0 + 2 * WIDTH <= out_channels:   # two vectors: four chains
        acc0, acc1 = start_values(bias, has_bias, o0), start_values(bias, has_bias, o0 + WIDTH)
        nxt0, nxt1 = acc0, acc1
        for t in range(count):
            v, u, row = splat_at(source, start + taps[t]), splat_at(source, start + step + taps[t]), tap_rows[t] + o0
            w0, w1 = load(w, row), load(w, row + WIDTH)
            acc0, acc1, nxt0, nxt1 = fma(v, w0, acc0), fma(v, w1, acc1), fma(u, w0, nxt0), fma(u, w1, nxt1)
        for i, (a, b) in enumerate(((acc0, nxt0), (acc1, nxt1))):
            store(y, out + o0 + i * WIDTH, biased_leaky(a, minus_zero, slope))
            store(y, out + out_channels + o0 + i * WIDTH, biased_leaky(b, minus_zero, slope))
        o0 += 2 * WIDTH
    while o0 + WIDTH <= out_channels:
        acc = nxt = start_values(bias, has_bias, o0)
        for t in range(count):
            w0 = load(w, tap_rows[t] + o0)
            acc = fma(splat_at(source, start + taps[t]), w0, acc)
            nxt = fma(splat_at(source, start + step + taps[t]), w0, nxt)
        store(y, out + o0, biased_leaky(acc, minus_zero, slope))
        store(y, out + out_channels + o0, biased_leaky(nxt, minus_zero, slope))
        o0 += WIDTH


@numba.njit(parallel=True, fastmath={"contract"}, cache=True)
def forward_kernel(x, w, g, images, out_channels, bias, has_bias, activation, alpha, y):
    """y (flat, N*OH*OW*O) = epilogue(conv(x, w)); x and w flat. A window inside the image reads
    its taps at fixed offsets from its corner; one that crosses the border lists the taps inside
    (window_taps) and reads them from that list."""
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    depth = kh * kw * channels
    offsets = np.empty(depth, dtype=np.int64)     # tap t of a window inside: x[corner + offsets[t]]
    tap_rows = np.empty(depth, dtype=np.int64)    # ... times w's row t
    listed = np.arange(depth)
    for i in range(kh):
        for j in range(kw):
            for c in range(channels):
                t = (i * kw + j) * channels + c
                offsets[t], tap_rows[t] = (i * width + j) * channels + c, t * out_channels
    # leaky ReLU in registers; without it, slope 1 (and -0.0 added) leaves every float as it is
    minus_zero, slope = splat(np.float32(-0.0)), splat(alpha if activation == LEAKY_RELU else np.float32(1.0))
    for task in numba.prange(images * out_height):
        n, oh = task // out_height, task % out_height
        values = np.empty(depth, dtype=np.float32)
        rows = np.empty(depth, dtype=np.int64)
        top = oh * sh - pt
        rows_inside = 0 <= top and top + kh <= height
        if task + ROWS_AHEAD < images * out_height:
            row_floats = out_width * out_channels
            prefetch_run_for_write(y, (task + ROWS_AHEAD) * row_floats, row_floats)
        ow = 0
        while ow < out_width:
            left = ow * sw - pl
            out = (task * out_width + ow) * out_channels
            corner = ((n * height + top) * width + left) * channels
            if rows_inside and 0 <= left and left + sw + kw <= width and ow + 1 < out_width:
                pixel_pair_channels(x, corner, sw * channels, offsets, tap_rows, depth, w, bias, has_bias,
                                    out_channels, minus_zero, slope, y, out)
                ow += 2
                continue
            if rows_inside and 0 <= left and left + kw <= width:
                pixel_channels(x, corner, offsets, tap_rows, depth, w, bias, has_bias, out_channels, minus_zero,
                               slope, y, out)
            else:
                count = window_taps(x, g, n, oh, ow, values, rows, out_channels)
                pixel_channels(values, 0, listed, rows, count, w, bias, has_bias, out_channels, minus_zero, slope,
                               y, out)
            ow += 1
        if activation != NONE and activation != LEAKY_RELU:
            apply_epilogue(y.reshape(-1, out_width * out_channels), task, 0, 1, out_width * out_channels,
                           bias, False, activation, alpha)


@numba.njit(inline="always", cache=True)
def group_sums(x, x_at, x_step, dy, d, d_step, first, end):
    """For k < 4, the sum over ow in first .. end - 1 of x[x_at + ow * x_step] times the vector
    dy[d + ow * d_step + k * WIDTH:][:WIDTH]: two pixels at a time into two sets of four FMA chains."""
    a0, a1, a2, a3 = zeros(), zeros(), zeros(), zeros()
    b0, b1, b2, b3 = zeros(), zeros(), zeros(), zeros()
    for ow in range(first, end - 1, 2):
        v, u, at = splat_at(x, x_at + ow * x_step), splat_at(x, x_at + (ow + 1) * x_step), d + ow * d_step
        a0, a1 = fma(v, load(dy, at), a0), fma(v, load(dy, at + WIDTH), a1)
        a2, a3 = fma(v, load(dy, at + 2 * WIDTH), a2), fma(v, load(dy, at + 3 * WIDTH), a3)
        at += d_step
        b0, b1 = fma(u, load(dy, at), b0), fma(u, load(dy, at + WIDTH), b1)
        b2, b3 = fma(u, load(dy, at + 2 * WIDTH), b2), fma(u, load(dy, at + 3 * WIDTH), b3)
    if end > first and (end - first) % 2 == 1:
        v, at = splat_at(x, x_at + (end - 1) * x_step), d + (end - 1) * d_step
        a0, a1 = fma(v, load(dy, at), a0), fma(v, load(dy, at + WIDTH), a1)
        a2, a3 = fma(v, load(dy, at + 2 * WIDTH), a2), fma(v, load(dy, at + 3 * WIDTH), a3)
    return add(a0, b0), add(a1, b1), add(a2, b2), add(a3, b3)


@numba.njit(inline="always", cache=True)
def add_pixel(v, dy, at, a0, a1, a2, a3):
    """(a0, a1, a2, a3) plus v times the four vectors dy[at:][:4 WIDTH]."""
    return (fma(v, load(dy, at), a0), fma(v, load(dy, at + WIDTH), a1), fma(v, load(dy, at + 2 * WIDTH), a2),
            fma(v, load(dy, at + 3 * WIDTH), a3))


@numba.njit(inline="always", cache=True)
def three_tap_sums(x, x_at, x_step, tap_step, dy, d, d_step, ends):
    """group_sums for three taps side by side, tap j's pixel of output ow at x[x_at + ow * x_step
    + j * tap_step], over its outputs ends[2 j] .. ends[2 j + 1] - 1: each output's four dy
    vectors loaded once for the three taps (twelve FMA chains) where all three read the image,
    tap by tap at the ends. Returns the twelve sums, tap by tap."""
    a0, a1, a2, a3 = zeros(), zeros(), zeros(), zeros()
    b0, b1, b2, b3 = zeros(), zeros(), zeros(), zeros()
    e0, e1, e2, e3 = zeros(), zeros(), zeros(), zeros()
    first = max(ends[0], ends[2], ends[4])
    end = max(first, min(ends[1], ends[3], ends[5]))   # [first, end): outputs all three taps read
    for ow in range(ends[0], min(first, ends[1])):
        a0, a1, a2, a3 = add_pixel(splat_at(x, x_at + ow * x_step), dy, d + ow * d_step, a0, a1, a2, a3)
    for ow in range(ends[2], min(first, ends[3])):
        b0, b1, b2, b3 = add_pixel(splat_at(x, x_at + ow * x_step + tap_step), dy, d + ow * d_step, b0, b1, b2, b3)
    for ow in range(ends[4], min(first, ends[5])):
        e0, e1, e2, e3 = add_pixel(splat_at(x, x_at + ow * x_step + 2 * tap_step), dy, d + ow * d_step,
                                   e0, e1, e2, e3)
    for ow in range(first, end):
        at, pixel = d + ow * d_step, x_at + ow * x_step
        y0, y1, y2, y3 = load(dy, at), load(dy, at + WIDTH), load(dy, at + 2 * WIDTH), load(dy, at + 3 * WIDTH)
        v = splat_at(x, pixel)
        a0, a1, a2, a3 = fma(v, y0, a0), fma(v, y1, a1), fma(v, y2, a2), fma(v, y3, a3)
        v = splat_at(x, pixel + tap_step)
        b0, b1, b2, b3 = fma(v, y0, b0), fma(v, y1, b1), fma(v, y2, b2), fma(v, y3, b3)
        v = splat_at(x, pixel + 2 * tap_step)
        e0, e1, e2, e3 = fma(v, y0, e0), fma(v, y1, e1), fma(v, y2, e2), fma(v, y3, e3)
    for ow in range(max(end, ends[0]), ends[1]):
        a0, a1, a2, a3 = add_pixel(splat_at(x, x_at + ow * x_step), dy, d + ow * d_step, a0, a1, a2, a3)
    for ow in range(max(end, ends[2]), ends[3]):
        b0, b1, b2, b3 = add_pixel(splat_at(x, x_at + ow * x_step + tap_step), dy, d + ow * d_step, b0, b1, b2, b3)
    for ow in range(max(end, ends[4]), ends[5]):
        e0, e1, e2, e3 = add_pixel(splat_at(x, x_at + ow * x_step + 2 * tap_step), dy, d + ow * d_step,
                                   e0, e1, e2, e3)
    return a0, a1, a2, a3, b0, b1, b2, b3, e0, e1, e2, e3


@numba.njit(inline="always", cache=True)
def add_group(partial, at, s0, s1, s2, s3):
    """partial[at:][:GROUP] += (s0, s1, s2, s3)."""
    store(partial, at, add(load(partial, at), s0))
    store(partial, at + WIDTH, add(load(partial, at + WIDTH), s1))
    store(partial, at + 2 * WIDTH, add(load(partial, at + 2 * WIDTH), s2))
    store(partial, at + 3 * WIDTH, add(load(partial, at + 3 * WIDTH), s3))


@numba.njit(parallel=True, fastmath={"contract"}, cache=True)
def weight_gradient_kernel(dy, x, g, images, out_channels, partials):
    """partials[part] (flat, kh*kw*C*O) = the part-th share of the output rows' windows(x)^T @ dy;
    dy and x flat."""
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    parts = partials.shape[0]
    tasks = images * out_height
    for part in numba.prange(parts):
        partial = partials[part]
        partial[:] = 0.0
        ends = np.empty(6, dtype=np.int64)   # three_tap_sums's ranges of outputs, tap by tap
        for task in range(part * tasks // parts, (part + 1) * tasks // parts):
            n, oh = task // out_height, task % out_height
            dy_row = task * out_width * out_channels
            prefetch_run(dy, dy_row + out_width * out_channels, out_width * out_channels)   # the next row's
            for i in range(kh):
                h = oh * sh - pt + i
                if h < 0 or h >= height:
                    continue
                grouped = 0   # output channels summed three taps at a time: a kernel three columns wide
                if kw == 3:
                    grouped = out_channels // GROUP * GROUP
                    for j in range(3):
                        ends[2 * j] = max(0, -((j - pl) // sw))
                        ends[2 * j + 1] = min(out_width, (width - 1 + pl - j) // sw + 1)
                    for c in range(channels):
                        row = (i * kw * channels + c) * out_channels
                        pixel0 = (n * height + h) * width * channels - pl * channels + c
                        for o0 in range(0, grouped, GROUP):
                            sums = three_tap_sums(x, pixel0, sw * channels, channels, dy, dy_row + o0, out_channels,
                                                  ends)
                            add_group(partial, row + o0, sums[0], sums[1], sums[2], sums[3])
                            add_group(partial, row + channels * out_channels + o0, sums[4], sums[5], sums[6],
                                      sums[7])
                            add_group(partial, row + 2 * channels * out_channels + o0, sums[8], sums[9], sums[10],
                                      sums[11])
                for j in range(kw):
                    # the output pixels whose tap (i, j) is inside the image
                    first, end = max(0, -((j - pl) // sw)), min(out_width, (width - 1 + pl - j) // sw + 1)
                    for c in range(channels):
                        row = ((i * kw + j) * channels + c) * out_channels
                        pixel0 = (n * height + h) * width * channels + (j - pl) * channels + c
                        o0 = grouped
                        while o0 + GROUP <= out_channels:
                            sums = group_sums(x, pixel0, sw * channels, dy, dy_row + o0, out_channels, first, end)
                            for k in range(4):
                                at = row + o0 + k * WIDTH
                                store(partial, at, add(load(partial, at), sums[k]))
                            o0 += GROUP
                        while o0 + WIDTH <= out_channels:
                            acc = zeros()
                            for ow in range(first, end):
                                acc = fma(splat(x[pixel0 + ow * sw * channels]),
                                          load(dy, dy_row + ow * out_channels + o0), acc)
                            store(partial, row + o0, add(load(partial, row + o0), acc))
                            o0 += WIDTH


def few_inputs_forward(x, w, bias, g, activation_code, alpha, y):
    """y (N, OH, OW, O) = epilogue(conv2d(x, w) + bias), in place."""
    forward_kernel(x.reshape(-1), w.reshape(-1), g, x.shape[0], w.shape[3], NO_BIAS if bias is None else bias,
                   bias is not None, activation_code, np.float32(alpha), y.reshape(-1))


def few_inputs_weight_gradient(dy, x, g, w_shape):
    """dw (kh, kw, C, O)."""
    partials = np.empty((PARTS, g.depth * w_shape[3]), dtype=np.float32)
    weight_gradient_kernel(dy.reshape(-1), x.reshape(-1), g, x.shape[0], w_shape[3], partials)
    total = partials[0].copy()
    for part in partials[1:]:
        total += part
    return total.reshape(w_shape)
