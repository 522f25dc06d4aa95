"""Conv2DTranspose forward: y = activation(conv_transpose(x, w) + bias), NHWC, float32, on the CPU.

Shapes (Keras's layouts): x is (N, H, W, I), w is (kh, kw, O, I), bias is (O,), y is
(N, OH, OW, O) with OH = H*sh ('same') or H*sh + max(kh - sh, 0) ('valid'), as Keras computes it
(kernels/common.py). The op is the transpose (the input gradient) of the Conv2D that maps y's
shape back to x's with the same kernel, stride and padding: every input pixel spreads
x[n, h, w, :] @ w[i, j].T over the output window it would have been computed from:
    y[n, h*sh - pt + i, w*sw - pl + j, o] += sum over c of x[n, h, w, c] w[i, j, o, c]
Cost: 2*N*H*W*kh*kw*O*I FLOPs, plus N*H*W*kh*kw*O adds in col2im; at least
4*(N*H*W*I + kh*kw*O*I + N*OH*OW*O) bytes.

At stride 1 the op is itself a convolution: y[n, h, w] = sum over i, j of x[n, h + pt - i,
w + pl - j] @ w[i, j].T, an implicit GEMM over x's windows (implicit_gemm.py) with the bias +
activation epilogue fused, written straight into y's rows.
At a larger stride (s, a kernel of k rows), y's rows fall into s phases: row h = s*a + h0 + p
(phase p < s, h0 = -pt mod s) reads the input rows a + c - m + 1 .. a + c (m = ceil(k / s),
c = (h0 + pt) / s) through kernel rows p + s*(m - 1 - t), t < m. So the s x s output pixels of
block (a, b) all read the same m x m input pixels, and one implicit GEMM over x's windows (step 1,
one window per block, blocks from the one holding y's first pixel to the one holding its last)
computes every phase at once:
    phases[(n, a, b), (p, q, o)] = windows(x)[(n, a, b), (t, u, c)] @ P[(t, u, c), (p, q, o)]
    P[(t, u, c), (p, q, o)] = w[p + s*(mh - 1 - t), q + s*(mw - 1 - u), o, c]   (0 past the kernel)
a product of s*s*O columns and depth m*m*I, every output element computed once (no sums to
gather). interleave_phases then moves each pixel's O channels to their place in y (the blocks
at the edges hold a few pixels outside y, dropped) and applies the epilogue to each row of y.
Cost: 2*N*GH*GW*m*m*I*s*s*O FLOPs (GH = H + 1 for 'same' at s = 2: the edge blocks add
(H + 1)^2 / H^2), then a copy of y. Where s does not divide k, that product would multiply zeros
(9 of the 16 taps of a 3x3 kernel at stride 2 are real): each phase is then an implicit GEMM of its
own over the taps it has (split_phase_conv: 2x2, 2x1, 1x2 and 1x1 for 3x3 at stride 2), into a
buffer a phase, and interleave_phases places them: the FLOPs of the plain product, no sums to
gather (the DCGAN discriminator's input gradient, 128 x 7x7x128 -> 14x14x64, 5.8 -> 5.1-5.3 ms;
64 x 28x28x64 -> 56x56x64 33-35 -> 26-27 ms, against matmul + col2im), where y has
PACKED_MIN_CHANNELS channels or more: a phase's product has y's channels as its columns (the
backward of the DCGAN discriminator's one-channel first layer, 128 x 28x28x1 -> 14x14x64, dx, dw
and db, took 6.8 ms with its dx that way and 2.6-2.8 with col2im, whose dx alone is 1.6 ms). Such a y and images of fewer than PACKED_MIN_CHANNELS
channels (which pack a float at a time) take the route measured faster for them, a chunk of
whole images at a time (im2col.py): one blocked matmul makes every pixel's contributions,
cols = x.reshape(N*H*W, I) @ w.reshape(kh*kw*O, I)^T, into a workspace, then col2im gathers each
output pixel's sum and applies the epilogue to the pixel row it has just written.
The same routine computes a Conv2D's input gradient (conv2d_backward.py).
"""

import numba
import numpy as np

from pyai.kernels.common import ACTIVATIONS, activation_reference, conv_transpose_output_size
from pyai.kernels.numba_cpu import memory
from pyai.kernels.numba_cpu.im2col import col2im, col2im_reference, geometry, image_chunks, workspace
from pyai.kernels.numba_cpu.implicit_gemm import PACKED_MIN_CHANNELS, Windows, window_product
from pyai.kernels.numba_cpu.matmul import apply_epilogue, fused_matmul
from pyai.kernels.numba_cpu.matmul_micro import NO_BIAS


def transpose_geometry(x_shape, w_shape, stride, padding):
    """The Geometry of the Conv2D whose transpose this is: from y's (OH, OW, O) to x's (H, W)."""
    (_, height, width, _), (kh, kw, out_channels, _) = x_shape, w_shape
    big = (conv_transpose_output_size(height, kh, stride[0], padding),
           conv_transpose_output_size(width, kw, stride[1], padding), out_channels)
    g = geometry(big, (kh, kw), stride, padding)
    assert (g.out_height, g.out_width) == (height, width), (g, x_shape)
    return g


def conv2d_transpose_reference(x, w, bias, stride, padding, activation=None, alpha=0.2):
    """The plain version the kernel is tested against (float64)."""
    g = transpose_geometry(x.shape, w.shape, stride, padding)
    cols = x.astype(np.float64).reshape(-1, w.shape[3]) @ w.reshape(g.depth, -1).T.astype(np.float64)
    y = col2im_reference(cols, g, x.shape[0])
    return activation_reference(y if bias is None else y + bias, activation, alpha)


def transpose_windows(g, small_channels):
    """At stride 1, the windows of the small image that the big image's pixels read: tap (i, j)
    of big pixel (h, w) is small pixel (h + pt - i, w + pl - j)."""
    return Windows(g.out_height, g.out_width, small_channels, g.height, g.width, (1, 1),
                   g.pad_top - np.arange(g.kernel_height), g.pad_left - np.arange(g.kernel_width))


class Phases:
    """The stride phases of a transposed convolution along one axis: its output rows
    h = stride*(first + g) + offset + p for block g < blocks and phase p < stride, block g reading
    the input rows g + tap_rows[t]; kernel row p + stride*(taps - 1 - t) for tap t."""

    def __init__(self, stride, kernel, pad, out_size):
        self.stride = stride
        self.offset = -pad % stride
        self.taps = -(-kernel // stride)
        self.first = -1 if self.offset else 0
        self.blocks = (out_size - 1 - self.offset) // stride - self.first + 1
        above = (self.offset + pad) // stride - (self.taps - 1)
        self.tap_rows = self.first + above + np.arange(self.taps)

    def kernel_rows(self):
        """kernel_rows()[t, p]: the kernel row that tap t gives phase p (past the kernel if >= k)."""
        return np.arange(self.stride)[None, :] + self.stride * (self.taps - 1 - np.arange(self.taps))[:, None]


def phase_kernel(w, rows, cols):
    """P (taps_h*taps_w*I, sh*sw*O) of w (kh, kw, O, I): every phase's sub-kernel side by side."""
    kh, kw, out_channels, in_channels = w.shape
    w_t = np.ascontiguousarray(w.transpose(0, 1, 3, 2))
    kernel = np.zeros((rows.taps, cols.taps, in_channels, rows.stride, cols.stride, out_channels),
                      dtype=np.float32)
    for (t, p), i in np.ndenumerate(rows.kernel_rows()):
        for (u, q), j in np.ndenumerate(cols.kernel_rows()):
            if i < kh and j < kw:
                kernel[t, u, :, p, q] = w_t[i, j]
    return kernel.reshape(rows.taps * cols.taps * in_channels, -1)


@numba.njit(parallel=True, cache=True)
def interleave_phases(phases, phase_step, row_step, blocks, first, offset, stride, bias, has_bias, activation, alpha,
                      big):
    """big[n, h, w] = epilogue(phase (p, q) of its block's row, the channels at phases[(p*sw + q) *
    phase_step + row*row_step:]), one row of big pixels per task: the bias added as each pixel
    is copied, the activation applied to the whole row (apply_epilogue); blocks, first, offset
    and stride are (rows, columns) pairs."""
    images, height, width, channels = big.shape
    big_rows = big.reshape(-1, channels)
    for task in numba.prange(images * height):
        n, h = task // height, task % height
        a = (h - offset[0]) // stride[0]
        p = h - offset[0] - a * stride[0]
        block_row = (n * blocks[0] + a - first[0]) * blocks[1]
        row0 = task * width
        for w in range(width):
            b = (w - offset[1]) // stride[1]
            q = w - offset[1] - b * stride[1]
            start = (p * stride[1] + q) * phase_step + (block_row + b - first[1]) * row_step
            out = big_rows[row0 + w]
            if has_bias:
                for c in range(channels):
                    out[c] = phases[start + c] + bias[c]
            else:
                out[:] = phases[start:start + channels]
        if activation != 0:
            apply_epilogue(big.reshape(-1, width * channels), task, 0, 1, width * channels, bias, False,
                           activation, alpha)


def interleave(phases, phase_step, row_step, rows, cols, bias, activation, alpha, big):
    interleave_phases(phases.reshape(-1), phase_step, row_step, (rows.blocks, cols.blocks), (rows.first, cols.first),
                      (rows.offset, cols.offset), (rows.stride, cols.stride), NO_BIAS if bias is None else bias,
                      bias is not None, ACTIVATIONS[activation], np.float32(alpha), big)


def phase_conv(small, w, g, bias, activation, alpha, big):
    """big = epilogue(the transpose of Geometry g's strided convolution, applied to small), by
    one implicit GEMM over every stride phase and interleave_phases."""
    rows = Phases(g.stride_height, g.kernel_height, g.pad_top, g.height)
    cols = Phases(g.stride_width, g.kernel_width, g.pad_left, g.width)
    images, height, width, small_channels = small.shape
    windows = Windows(height, width, small_channels, rows.blocks, cols.blocks, (1, 1), rows.tap_rows,
                      cols.tap_rows)
    kernel = phase_kernel(w, rows, cols)
    phases = window_product(small, windows, kernel,
                            out=workspace("phases", images * windows.per_image, kernel.shape[1]))
    interleave(phases, g.channels, kernel.shape[1], rows, cols, bias, activation, alpha, big)


def split_phase_conv(small, w, g, bias, activation, alpha, big):
    """phase_conv where the stride does not divide the kernel, so that its phases' sub-kernels
    differ (a 3x3 kernel at stride 2: 2x2, 2x1, 1x2 and 1x1 taps) and one product over them all
    would multiply zeros (7/16 of it): an implicit GEMM a phase, over the taps it has, each into
    a buffer of its own, then interleave_phases. The same FLOPs as cols = x @ w^T, and no col2im."""
    rows = Phases(g.stride_height, g.kernel_height, g.pad_top, g.height)
    cols = Phases(g.stride_width, g.kernel_width, g.pad_left, g.width)
    images, height, width, small_channels = small.shape
    w_t = w.transpose(0, 1, 3, 2)                       # (kh, kw, I, O)
    blocks = images * rows.blocks * cols.blocks
    phases = workspace("phases", rows.stride * cols.stride * blocks, g.channels)
    kernel_rows, kernel_cols = rows.kernel_rows(), cols.kernel_rows()
    for (p, q), out in zip(np.ndindex(rows.stride, cols.stride), np.split(phases, rows.stride * cols.stride)):
        taps_h = np.flatnonzero(kernel_rows[:, p] < g.kernel_height)
        taps_w = np.flatnonzero(kernel_cols[:, q] < g.kernel_width)
        if len(taps_h) == 0 or len(taps_w) == 0:        # a stride past the kernel: no tap
            out[:] = 0.0
            continue
        windows = Windows(height, width, small_channels, rows.blocks, cols.blocks, (1, 1), rows.tap_rows[taps_h],
                          cols.tap_rows[taps_w])
        kernel = w_t[np.ix_(kernel_rows[taps_h, p], kernel_cols[taps_w, q])]
        window_product(small, windows, np.ascontiguousarray(kernel).reshape(-1, g.channels), out=out)
    interleave(phases, blocks * g.channels, g.channels, rows, cols, bias, activation, alpha, big)


def transposed_conv(small, w, g, bias, activation, alpha, big):
    """big = epilogue(the transpose of Geometry g's convolution, applied to small), in place;
    w is (kh, kw, big channels, small channels)."""
    small_channels = w.shape[3]
    big_rows = big.reshape(-1, g.channels)
    if small_channels >= PACKED_MIN_CHANNELS:
        if (g.stride_height, g.stride_width) == (1, 1):
            kernel = np.ascontiguousarray(w.transpose(0, 1, 3, 2)).reshape(-1, g.channels)
            window_product(small, transpose_windows(g, small_channels), kernel, bias, activation, alpha,
                           out=big_rows)
            return
        if g.kernel_height % g.stride_height == 0 and g.kernel_width % g.stride_width == 0:
            phase_conv(small, w, g, bias, activation, alpha, big)
            return
        if g.channels >= PACKED_MIN_CHANNELS:   # a phase's product has only g.channels columns
            split_phase_conv(small, w, g, bias, activation, alpha, big)
            return
    small_rows = small.reshape(-1, small_channels)
    weights_t = np.ascontiguousarray(w.reshape(g.depth, small_channels).T)   # packs faster than w as op(B)^T
    for first, end in image_chunks(small.shape[0], g):
        rows = small_rows[first * g.windows:end * g.windows]
        cols = fused_matmul(rows, weights_t, False, False, None, None, 0.0,
                            out=workspace("cols", len(rows), g.depth))
        col2im(cols, g, first, end, big, bias, ACTIVATIONS[activation], alpha)


# x is (N, H, W, I), w (kh, kw, O, I), bias (O,) or None -> y (N, OH, OW, O)
def conv2d_transpose_forward(x, w, bias, stride, padding, activation, alpha):
    g = transpose_geometry(x.shape, w.shape, stride, padding)
    y = memory.empty((x.shape[0], g.height, g.width, g.channels))
    transposed_conv(x, w, g, bias, activation, alpha, y)
    return y
