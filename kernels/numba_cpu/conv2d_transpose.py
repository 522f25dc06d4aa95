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
c = (h0 + pt) / s) through kernel rows p + s*(m - 1 - t), t < m (those < k). So each phase (p, q)
is a convolution of its own over x, step 1, with the sub-kernel of the taps it has, over the
blocks (a, b) that hold one of its pixels: one implicit GEMM a phase (phase_conv),
    phase_pq[(n, a, b), o] = windows_pq(x)[(n, a, b), (t, u, c)] @ w[p + s*(mh - 1 - t), q + s*(mw - 1 - u), o, c]
every output element computed once (no sums to gather, no block outside y), each tile of a
phase's product written straight to the rows of y that hold its pixels (the windows' placement,
implicit_gemm.py) with the bias + activation epilogue fused as in `linear`, every phase in one
parallel region (grids_product: 7-10% faster than a region a phase, AMD EPYC Zen 3, 2 threads,
the four 12544 x 256 x 32 products of 64 x 14x14x64 -> 28x28x32). Cost: the FLOPs of the plain
product. (Before, each phase went into its rows of one buffer, then a pass moved each
pixel's O channels to their place in y, applying the epilogue: 64 x 14x14x64 -> 28x28x32 with
leaky ReLU on 2 threads of an AMD EPYC Zen 3, that pass alone took 0.5-0.7 of 7.4 ms.)
(One product over every phase at once, s*s*O columns against a block grid one block wider than
x, computed the edge blocks' pixels outside y: 31% more FLOPs for 7x7 -> 14x14, 15% for 14x14 ->
28x28, and zeros where s does not divide k. A phase at a time, AMD EPYC Zen 1, 2 threads, the
DCGAN generator's 64 x 7x7x128 -> 14x14x64, 4x4 kernel at stride 2: 16.2-17.0 -> 13.0-13.9 ms;
64 x 14x14x64 -> 28x28x32: 14.6-15.0 -> 13.8-14.6 ms.) Measured against matmul + col2im: the
DCGAN discriminator's input gradient, 128 x 7x7x128 -> 14x14x64, 5.8 -> 5.1-5.3 ms; 64 x
28x28x64 -> 56x56x64 33-35 -> 26-27 ms. This is the route where y has PACKED_MIN_CHANNELS
channels or more: a phase's product has y's channels as its columns (the backward of the DCGAN
discriminator's one-channel first layer, 128 x 28x28x1 -> 14x14x64, dx, dw and db, took 6.8 ms
with its dx that way and 2.6-2.8 with col2im, whose dx alone is 1.6 ms). Such a y and images of
fewer than PACKED_MIN_CHANNELS channels (which pack a float at a time) take the route measured
faster for them, a chunk of whole images at a time (im2col.py): one blocked matmul makes every
pixel's contributions, cols = x.reshape(N*H*W, I) @ w.reshape(kh*kw*O, I)^T, into a workspace,
then col2im gathers each output pixel's sum and applies the epilogue to the pixel row it has
just written. A y of one channel (a Conv2D's input gradient into a grayscale image) skips the
product of kh*kw columns: each y float is a sum of dots of x's I floats with w's
(conv2d_direct.direct_transposed).
The same routine computes a Conv2D's input gradient (conv2d_backward.py).
"""

import collections
import functools

import numpy as np

from pyai.kernels.common import ACTIVATIONS, activation_reference, transpose_geometry
from pyai.kernels.numba_cpu import memory
from pyai.kernels.numba_cpu.conv2d_direct import direct_transposed
from pyai.kernels.numba_cpu.im2col import col2im, col2im_reference, image_chunks, workspace
from pyai.kernels.numba_cpu.implicit_gemm import (PACKED_MIN_CHANNELS, Windows, grids_layout, grids_product,
                                                   window_product)
from pyai.kernels.numba_cpu.leaky_relu import leaky_relu_gradient_in_place
from pyai.kernels.numba_cpu.matmul import apply_epilogue, fused_matmul
from pyai.kernels.numba_cpu.matmul_micro import NO_BIAS
from pyai.kernels.numba_cpu.transpose import transposed


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
    h = stride*a + offset + p for phase p < stride, in the blocks a = first_of[p] ..
    first_of[p] + blocks_of[p] - 1 that hold one; block a reads the input rows a + above + t
    for tap t < taps, through kernel row p + stride*(taps - 1 - t)."""

    def __init__(self, stride, kernel, pad, out_size):
        self.stride = stride
        self.offset = -pad % stride
        self.taps = -(-kernel // stride)
        self.above = (self.offset + pad) // stride - (self.taps - 1)
        phase = np.arange(stride)
        self.first_of = -((self.offset + phase) // stride)
        self.blocks_of = np.maximum(0, (out_size - 1 - self.offset - phase) // stride - self.first_of + 1)

    def first_pixel(self, p):
        """The first output row of phase p (that of its block first_of[p]); the next are stride apart."""
        return self.offset + self.stride * self.first_of[p] + p

    def phase_tap_rows(self, p):
        """The input rows that phase p's g-th block reads, less g: g + these, tap by tap."""
        return self.first_of[p] + self.above + np.arange(self.taps)

    def kernel_rows(self):
        """kernel_rows()[t, p]: the kernel row that tap t gives phase p (past the kernel if >= k)."""
        return np.arange(self.stride)[None, :] + self.stride * (self.taps - 1 - np.arange(self.taps))[:, None]


PhasePlan = collections.namedtuple("PhasePlan", "empty layout kernel_taps b_starts")


@functools.lru_cache(maxsize=64)
def phase_plan(small_shape, g):
    """What phase_conv does, as far as small's (H, W, C) and the geometry decide it: `empty`, the
    first pixels of the stride phases that no tap of the kernel reaches; for the others, their
    Windows over small as grids_layout's arrays (`layout`), the kernel taps t*kw + u that each
    reads in its windows' order, one after the other (`kernel_taps`), and where each one's B
    starts in the gathered weights (`b_starts`). Made once for a layer's shapes, not on every
    call: 250 us of numpy a call (64 x 14x14x64 -> 28x28x32, 4x4 at stride 2, a DCGAN
    generator's: 8.3-10.5 ms in all on 2 cores of an AMD EPYC Zen 3)."""
    rows = Phases(g.stride_height, g.kernel_height, g.pad_top, g.height)
    cols = Phases(g.stride_width, g.kernel_width, g.pad_left, g.width)
    height, width, small_channels = small_shape
    kernel_rows, kernel_cols = rows.kernel_rows(), cols.kernel_rows()
    empty, grids, kernel_taps = [], [], []
    for p, q in np.ndindex(rows.stride, cols.stride):
        if rows.blocks_of[p] == 0 or cols.blocks_of[q] == 0:   # no pixel of y in this phase
            continue
        first = (rows.first_pixel(p), cols.first_pixel(q))
        taps_h = np.flatnonzero(kernel_rows[:, p] < g.kernel_height)
        taps_w = np.flatnonzero(kernel_cols[:, q] < g.kernel_width)
        if len(taps_h) == 0 or len(taps_w) == 0:        # a stride past the kernel: no tap
            empty.append(first)
            continue
        placed = (g.height, g.width, *first, rows.stride, cols.stride)
        grids.append(Windows(height, width, small_channels, rows.blocks_of[p], cols.blocks_of[q], (1, 1),
                             rows.phase_tap_rows(p)[taps_h], cols.phase_tap_rows(q)[taps_w], placed))
        kernel_taps.append((kernel_rows[taps_h, p][:, None] * g.kernel_width + kernel_cols[taps_w, q][None, :]).ravel())
    sizes = [len(taps) * small_channels * g.channels for taps in kernel_taps]
    b_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if grids else None
    return PhasePlan(empty, grids_layout(grids) if grids else None,
                     np.concatenate(kernel_taps) if grids else None, b_starts)


def phase_conv(small, w, g, bias, activation, alpha, big, leaky_relu_output=None):
    """big = epilogue(the transpose of Geometry g's strided convolution, applied to small): an
    implicit GEMM a phase over the blocks that hold its pixels and the taps it has, each tile
    written straight to its pixels' rows of big, every phase in one parallel region. The FLOPs
    of cols = x @ w^T, no sums to gather."""
    plan = phase_plan(small.shape[1:], g)
    for h0, w0 in plan.empty:   # y = epilogue(0); 0 times a leaky ReLU's gradient is 0
        zero = np.zeros((1, g.channels), np.float32)
        if leaky_relu_output is None:
            apply_epilogue(zero, 0, 0, 1, g.channels, NO_BIAS if bias is None else bias, bias is not None,
                           ACTIVATIONS[activation], np.float32(alpha))
        big[:, h0::g.stride_height, w0::g.stride_width] = zero[0]
    if plan.layout is not None:
        taps_of_w = w.reshape(g.kernel_height * g.kernel_width, g.channels, -1)   # (taps, O, I)
        kernels = transposed(taps_of_w, plan.kernel_taps)   # each phase's (taps*I, O)
        grids_product(small, plan.layout, kernels, plan.b_starts, big.reshape(-1, g.channels), bias, activation,
                      alpha, leaky_relu_output)


def transposed_conv(small, w, g, bias, activation, alpha, big, leaky_relu_output=None):
    """big = epilogue(the transpose of Geometry g's convolution, applied to small), in place;
    w is (kh, kw, big channels, small channels). With leaky_relu_output y (big's shape) and
    neither bias nor activation, big times y's leaky ReLU gradient (a Conv2D's input gradient
    made the pre-activation gradient of the layer below): in the implicit GEMMs' epilogue, else
    in a pass after."""
    small_channels = w.shape[3]
    big_rows = big.reshape(-1, g.channels)
    if small_channels >= PACKED_MIN_CHANNELS:
        if (g.stride_height, g.stride_width) == (1, 1):
            kernel = transposed(w.reshape(-1, g.channels, small_channels)).reshape(-1, g.channels)
            window_product(small, transpose_windows(g, small_channels), kernel, bias, activation, alpha,
                           out=big_rows, leaky_relu_output=leaky_relu_output)
            return
        if g.channels >= PACKED_MIN_CHANNELS:   # a phase's product has only g.channels columns
            phase_conv(small, w, g, bias, activation, alpha, big, leaky_relu_output)
            return
    if g.channels == 1:   # into one channel: dots of small's channels, no cols (conv2d_direct.py)
        direct_transposed(small, w, g, bias, ACTIVATIONS[activation], alpha, big)
    else:
        small_rows = small.reshape(-1, small_channels)
        weights_t = np.ascontiguousarray(w.reshape(g.depth, small_channels).T)   # packs faster than w as op(B)^T
        for first, end in image_chunks(small.shape[0], g):
            rows = small_rows[first * g.windows:end * g.windows]
            cols = fused_matmul(rows, weights_t, False, False, None, None, 0.0,
                                out=workspace("cols", len(rows), g.depth))
            col2im(cols, g, first, end, big, bias, ACTIVATIONS[activation], alpha)
    if leaky_relu_output is not None:
        leaky_relu_gradient_in_place(big, leaky_relu_output, alpha)


# x is (N, H, W, I), w (kh, kw, O, I), bias (O,) or None -> y (N, OH, OW, O)
def conv2d_transpose_forward(x, w, bias, stride, padding, activation, alpha):
    g = transpose_geometry(x.shape, w.shape, stride, padding)
    y = memory.empty((x.shape[0], g.height, g.width, g.channels))
    transposed_conv(x, w, g, bias, activation, alpha, y)
    return y
