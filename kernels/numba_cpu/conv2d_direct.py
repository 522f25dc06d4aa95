"""Conv2D with few output channels (O <= DIRECT_MAX_OUT), forward and backward, computed directly.

Shapes and sums as in conv2d.py and conv2d_backward.py. With one output channel (a generator's
last layer, an image), the im2col product is a (rows, kh*kw*C) @ (kh*kw*C, 1) matrix-vector
product: the matmul's 32-column register tile would be 1/32 used and cols written and read for
nothing. Here each pass reads the image where it lies:
  forward:  y[n, oh, ow, o] = bias[o] + sum over the window's pixels of x[pixel, :] . wt[o, i, j, :]
            (dot products of contiguous floats, a vector at a time in two chains of FMAs whose
            lanes are summed once an output), then the epilogue; one output row per task. A
            window inside the image across reads each of its rows as kw*C contiguous floats;
            PIXELS such outputs go together, sharing w's loads, their chains overlapping (the
            DCGAN's last layer, 64 x 28x28x32 -> 1 with tanh, AMD EPYC Zen 3, 2 threads, old and
            new alternating: 0.58-0.83 of the time, the same floats)
  dx:       dx[n, h, w, :] = sum over the windows that read (h, w) of dy[n, oh, ow, o] * wt[o, i, j, :]
            (a pixel's taps listed, then its C floats summed over them in registers, four
            vectors at a time, as conv2d_few_inputs sums a pixel's output channels; each dx
            float written once where it had been read and written again a tap at a time: the
            same sums in the same order). At stride 1 a pixel that every tap's window reads
            finds its taps at fixed offsets from one corner of dy, unlisted (listing had cost
            most of the time: the DCGAN's last layer's dx, 64 x 28x28x32, 2 threads, old and new
            alternating: 2.17-2.28 -> 0.96-1.08 ms, the same floats); one input row per task
  dw:       dw[i, j, :, o] = sum over every window of dy[n, oh, ow, o] * x[window pixel (i, j), :],
            each of PARTS tasks summing its share of the output rows into its own partial (a
            row's outputs summed in registers, then added), the partials added in a fixed order
            at the end
Cost: 2*N*OH*OW*kh*kw*C*O FLOPs a pass; each reads x (or dx) and dy once from memory.
wt is w as (O, kh, kw, C), so every inner loop runs over C contiguous floats. Sums in the forward
and in dw's rows are in a fixed order other than a serial one: the result differs from a serial
sum only by rounding; infinities and NaN propagate as ever.
The DCGAN's last layer (64 x 28x28x32 -> 1, 3x3) on 2 cores of an Intel Xeon (AVX-512), the ops
against the scalar loops before: forward with tanh 1.47 -> 1.05-1.14 ms, dx 1.08-1.17 -> 0.82-0.84,
dw with db 1.58-1.61 -> 0.74.
"""

import numba
import numpy as np

from pyai.kernels.numba_cpu.conv2d_few_inputs import pixel_channels
from pyai.kernels.numba_cpu.epilogue import LEAKY_RELU_GRAD, NONE
from pyai.kernels.numba_cpu.matmul import apply_epilogue
from pyai.kernels.numba_cpu.matmul_micro import NO_BIAS
from pyai.kernels.numba_cpu.simd import WIDTH, add, fma, lane_sum, load, splat, store, zeros

DIRECT_MAX_OUT = 4
PARTS = 16   # the weight gradient's partial sums: enough tasks to spread over the threads


PIXELS = 4   # interior outputs of a row computed together: their FMA chains overlap, w's loads are shared


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
def interior_dots(x, wt, g, n, oh, ow, o, y_rows, row):
    """y_rows[row + p, o] for the PIXELS outputs ow .. ow + PIXELS - 1 of row (n, oh), whose
    windows lie inside the image across: a window's row i is kw*C contiguous floats of x, dotted
    with w's kw*C floats of that row, which the outputs share (one load of w, four of x, four
    FMAs; two chains an output)."""
    (height, width, channels, _, _, kh, kw, sh, sw, pt, pl) = g
    length = kw * channels
    whole = length // WIDTH * WIDTH
    step = sw * channels
    e0, e1, e2, e3, o0, o1, o2, o3 = zeros(), zeros(), zeros(), zeros(), zeros(), zeros(), zeros(), zeros()
    t0, t1, t2, t3 = np.float32(0.0), np.float32(0.0), np.float32(0.0), np.float32(0.0)
    for i in range(kh):
        h = oh * sh - pt + i
        if 0 <= h < height:
            base = ((n * height + h) * width + ow * sw - pl) * channels
            tap = (o * kh + i) * length
            for c in range(0, whole, WIDTH):
                wv = load(wt, tap + c)
                e0, o0 = o0, fma(load(x, base + c), wv, e0)
                e1, o1 = o1, fma(load(x, base + step + c), wv, e1)
                e2, o2 = o2, fma(load(x, base + 2 * step + c), wv, e2)
                e3, o3 = o3, fma(load(x, base + 3 * step + c), wv, e3)
            for c in range(whole, length):
                t0 += x[base + c] * wt[tap + c]
                t1 += x[base + step + c] * wt[tap + c]
                t2 += x[base + 2 * step + c] * wt[tap + c]
                t3 += x[base + 3 * step + c] * wt[tap + c]
    y_rows[row, o] = t0 + lane_sum(add(e0, o0))
    y_rows[row + 1, o] = t1 + lane_sum(add(e1, o1))
    y_rows[row + 2, o] = t2 + lane_sum(add(e2, o2))
    y_rows[row + 3, o] = t3 + lane_sum(add(e3, o3))


@numba.njit(parallel=True, fastmath={"contract", "reassoc"}, cache=True)
def forward_kernel(x, wt, g, bias, has_bias, activation, alpha, y_rows):
    """x and wt flat; one output row per task. Outputs whose windows lie inside the image across
    go PIXELS at a time (interior_dots), the others one by one (window_dot)."""
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    out_channels = y_rows.shape[1]
    first = min(out_width, -(-pl // sw))                               # the interior outputs of a row
    end = max(first, min(out_width, (width + pl - kw) // sw + 1))
    for task in numba.prange(len(y_rows) // out_width):
        n, oh = task // out_height, task % out_height
        row = task * out_width
        for o in range(out_channels):
            ow = 0
            while ow < out_width:
                if first <= ow < end and end - first >= PIXELS:
                    ow = min(ow, end - PIXELS)   # the last group ends at `end`, redoing a few outputs
                    interior_dots(x, wt, g, n, oh, ow, o, y_rows, row + ow)
                    ow += PIXELS
                else:
                    y_rows[row + ow, o] = window_dot(x, wt, g, n, oh, ow, o)
                    ow += 1
        apply_epilogue(y_rows, row, 0, out_width, out_channels, bias, has_bias, activation, alpha)


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
    """dx_rows (N*H*W, C); dy and wt flat. A pixel's taps are listed (pixel_taps), or at stride
    1 for a pixel that every tap's window reads, found at fixed offsets from one corner of dy;
    then its channels are summed over them in registers, four vectors at a time
    (pixel_channels), the rest one float at a time: each dx float written once, the taps in the
    order (i, j, o) either way. Each input row then takes the epilogue: none, or (activation
    LEAKY_RELU_GRAD) times the gradient of the leaky ReLU whose output `factors` (dx's shape,
    flat) was the input, while the row is in L1."""
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    dx = dx_rows.reshape(-1)
    out_channels = wt.size // (kh * kw * channels)
    depth = kh * kw * out_channels
    offsets, tap_rows = np.empty(depth, dtype=np.int64), np.empty(depth, dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            for o in range(out_channels):
                t = (i * kw + j) * out_channels + o
                offsets[t] = -(i * out_width + j) * out_channels + o    # from tap (0, 0)'s dy, at stride 1
                tap_rows[t] = ((o * kh + i) * kw + j) * channels
    unit_stride = sh == 1 and sw == 1
    whole = channels // WIDTH * WIDTH
    for task in numba.prange(images * height):
        n, h = task // height, task % height
        values = np.empty(depth, dtype=np.float32)
        rows = np.empty(depth, dtype=np.int64)
        listed = np.arange(depth)
        rows_inside = unit_stride and h + pt - (kh - 1) >= 0 and h + pt < out_height
        for w in range(width):
            pixel = ((n * height + h) * width + w) * channels
            if rows_inside and w + pl - (kw - 1) >= 0 and w + pl < out_width:
                corner = ((n * out_height + h + pt) * out_width + w + pl) * out_channels   # tap (0, 0)'s
                pixel_gradient(dy, corner, offsets, tap_rows, depth, wt, whole, channels, dx, pixel)
            else:
                count = pixel_taps(dy, g, n, h, w, out_channels, values, rows)
                pixel_gradient(values, 0, listed, rows, count, wt, whole, channels, dx, pixel)
        apply_epilogue(dx_rows, task * width, 0, width, channels, factors, False, activation, alpha)


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
    of a dot of small's O contiguous floats there with w[i, j, c, :] (w flat, (kh, kw, C, O)), a
    vector at a time in two chains of FMAs. A task's input row h lists its kernel rows once; a
    pixel's columns step from its first tap j = (w + pl) % sw by sw, one division a pixel.
    Taken for one big channel (conv2d_transpose.transposed_conv), where it replaces a product
    of 9 columns and col2im: the DCGAN discriminator's first layer's dx, 128 x 14x14x64 -> 28x28x1
    at stride 2, AMD EPYC Zen 3, 2 threads, old and new alternating, 3.70-3.81 -> 2.84-3.03 ms.
    Into 3 channels it was slower (64 x 16x16x64 -> 32x32x3: 3.21-3.32 -> 4.32-4.45 ms): each
    channel walks the taps again; sharing small's loads over the channels is not tried."""
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    small_channels = w.size // (kh * kw * channels)
    for task in numba.prange(images * height):
        n, h = task // height, task % height
        kernel_rows, out_rows = np.empty(kh, dtype=np.int64), np.empty(kh, dtype=np.int64)
        row_count = 0
        for i in range(kh):          # the kernel rows whose windows read row h
            t = h + pt - i
            if t >= 0 and t % sh == 0 and t // sh < out_height:
                kernel_rows[row_count], out_rows[row_count] = i, t // sh
                row_count += 1
        for x in range(width):
            first_ow, first_j = (x + pl) // sw, (x + pl) % sw
            for c in range(channels):
                even, odd = zeros(), zeros()
                total = np.float32(0.0)
                for r in range(row_count):
                    i, oh = kernel_rows[r], out_rows[r]
                    j, ow = first_j, first_ow
                    while j < kw:
                        if 0 <= ow < out_width:
                            even, odd, total = add_dot(small, ((n * out_height + oh) * out_width + ow) * small_channels,
                                                       w, ((i * kw + j) * channels + c) * small_channels,
                                                       small_channels, even, odd, total)
                        j += sw
                        ow -= 1
                big_rows[task * width + x, c] = total + lane_sum(add(even, odd))
        apply_epilogue(big_rows, task * width, 0, width, channels, bias, has_bias, activation, alpha)


@numba.njit(parallel=True, fastmath={"contract"}, cache=True)
def weight_gradient_kernel(dy, x, g, partials):
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    parts = partials.shape[0]
    rows = x.shape[0] * out_height
    whole = channels // WIDTH * WIDTH
    for part in numba.prange(parts):
        partial = partials[part]
        partial[:] = 0.0
        for task in range(part * rows // parts, (part + 1) * rows // parts):
            n, oh = task // out_height, task % out_height
            for i in range(kh):
                h = oh * sh - pt + i
                if h < 0 or h >= height:
                    continue
                for j in range(kw):
                    # the outputs of this row whose tap (i, j) lies in the image: a row's sum in
                    # registers (two chains of FMAs), then added to the partial
                    first = max(0, -((j - pl) // sw))
                    last = min(out_width, (width - 1 + pl - j) // sw + 1)
                    row = (n * height + h) * width - pl + j
                    for o in range(partial.shape[0]):
                        tap = ((o * kh + i) * kw + j) * channels
                        for c in range(0, whole, WIDTH):
                            even, odd = zeros(), zeros()
                            for ow in range(first, last):
                                even, odd = odd, fma(splat(dy[n, oh, ow, o]), load(x, (row + ow * sw) * channels + c),
                                                     even)
                            store(partial, tap + c, add(load(partial, tap + c), add(even, odd)))
                        for c in range(whole, channels):
                            total = np.float32(0.0)
                            for ow in range(first, last):
                                total += dy[n, oh, ow, o] * x[n, h, ow * sw - pl + j, c]
                            partial[o, i, j, c] += total


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
