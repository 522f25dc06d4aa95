"""Conv2D with few output channels (O <= DIRECT_MAX_OUT), forward and backward, computed directly.

Shapes and sums as in conv2d.py and conv2d_backward.py. With one output channel (a generator's
last layer, an image), the im2col product is a (rows, kh*kw*C) @ (kh*kw*C, 1) matrix-vector
product: the matmul's 32-column register tile would be 1/32 used and cols written and read for
nothing. Here each pass reads the image where it lies:
  forward:  y[n, oh, ow, o] = bias[o] + sum over the window's pixels of x[pixel, :] . wt[o, i, j, :]
            (dot products of C contiguous floats), then the epilogue; one output row per task
  dx:       dx[n, h, w, :] = sum over the windows that read (h, w) of dy[n, oh, ow, o] * wt[o, i, j, :]
            (axpys of C floats, gathered as in col2im); one input row per task
  dw:       dw[i, j, :, o] = sum over every window of dy[n, oh, ow, o] * x[window pixel (i, j), :],
            each of PARTS tasks summing its share of the output rows into its own partial,
            the partials added in a fixed order at the end
Cost: 2*N*OH*OW*kh*kw*C*O FLOPs a pass; each reads x (or dx) and dy once from memory.
wt is w as (O, kh, kw, C), so every inner loop runs over C contiguous floats. The forward's dot
products may be summed in any order (fastmath "reassoc", so that they vectorize): the result
differs from a serial sum only by rounding; infinities and NaN propagate as ever.
"""

import numba
import numpy as np

from pyai.kernels.numba_cpu.matmul import apply_epilogue

DIRECT_MAX_OUT = 4
PARTS = 16   # the weight gradient's partial sums: enough tasks to spread over the threads


@numba.njit(parallel=True, fastmath={"contract", "reassoc"}, cache=True)
def forward_kernel(x, wt, g, bias, has_bias, activation, alpha, y_rows):
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    out_channels = wt.shape[0]
    for task in numba.prange(x.shape[0] * out_height):
        n, oh = task // out_height, task % out_height
        for ow in range(out_width):
            for o in range(out_channels):
                total = np.float32(0.0)
                for i in range(kh):
                    h = oh * sh - pt + i
                    if 0 <= h < height:
                        for j in range(kw):
                            w = ow * sw - pl + j
                            if 0 <= w < width:
                                for c in range(channels):
                                    total += x[n, h, w, c] * wt[o, i, j, c]
                y_rows[task * out_width + ow, o] = total
        apply_epilogue(y_rows, task * out_width, 0, out_width, out_channels, bias, has_bias, activation, alpha)


@numba.njit(parallel=True, fastmath={"contract"}, cache=True)
def input_gradient_kernel(dy, wt, g, dx):
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    out_channels = wt.shape[0]
    for task in numba.prange(dx.shape[0] * height):
        n, h = task // height, task % height
        dx[n, h] = 0.0
        for i in range(kh):
            t = h + pt - i
            if t < 0 or t % sh != 0 or t // sh >= out_height:
                continue
            oh = t // sh
            for w in range(width):
                for j in range(kw):
                    u = w + pl - j
                    if u < 0 or u % sw != 0 or u // sw >= out_width:
                        continue
                    for o in range(out_channels):
                        d = dy[n, oh, u // sw, o]
                        for c in range(channels):
                            dx[n, h, w, c] += d * wt[o, i, j, c]


@numba.njit(parallel=True, fastmath={"contract"}, cache=True)
def weight_gradient_kernel(dy, x, g, partials):
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    parts = partials.shape[0]
    rows = x.shape[0] * out_height
    for part in numba.prange(parts):
        partial = partials[part]
        partial[:] = 0.0
        for task in range(part * rows // parts, (part + 1) * rows // parts):
            n, oh = task // out_height, task % out_height
            for i in range(kh):
                h = oh * sh - pt + i
                if h < 0 or h >= height:
                    continue
                for ow in range(out_width):
                    for j in range(kw):
                        w = ow * sw - pl + j
                        if w < 0 or w >= width:
                            continue
                        for o in range(partial.shape[0]):
                            d = dy[n, oh, ow, o]
                            for c in range(channels):
                                partial[o, i, j, c] += d * x[n, h, w, c]


NO_BIAS = np.zeros(1, dtype=np.float32)


def transposed(w):
    """w (kh, kw, C, O) as (O, kh, kw, C), C-contiguous."""
    return np.ascontiguousarray(w.transpose(3, 0, 1, 2))


def direct_forward(x, w, bias, g, activation_code, alpha, y):
    forward_kernel(x, transposed(w), g, NO_BIAS if bias is None else bias, bias is not None,
                   activation_code, np.float32(alpha), y.reshape(-1, w.shape[3]))


def direct_input_gradient(dy, w, g, dx):
    input_gradient_kernel(dy, transposed(w), g, dx)


def direct_weight_gradient(dy, x, g, w_shape):
    """dw (kh, kw, C, O)."""
    partials = np.empty((PARTS, w_shape[3], *w_shape[:3]), dtype=np.float32)
    weight_gradient_kernel(dy, x, g, partials)
    total = partials[0].copy()
    for part in partials[1:]:
        total += part
    return np.ascontiguousarray(total.transpose(1, 2, 3, 0))
