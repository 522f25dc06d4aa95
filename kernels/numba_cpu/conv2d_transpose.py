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
activation epilogue fused, written straight into y's rows. At a larger stride, a chunk of whole
images at a time (im2col.py): one blocked matmul makes every pixel's contributions,
cols = x.reshape(N*H*W, I) @ w.reshape(kh*kw*O, I)^T, into a workspace, then col2im gathers each
output pixel's sum and applies the epilogue to the pixel row it has just written. No zeros are
multiplied (unlike a convolution over a zero-dilated input), and the threads write disjoint rows
of y. (Splitting a stride-2 output into its four stride phases, each a stride-1 implicit GEMM
with a quarter of the kernel, measured no faster on the DCGAN's layers: its products have a
quarter of the columns and the phases must still be interleaved.)
The same routine computes a Conv2D's input gradient (conv2d_backward.py).
"""

import numpy as np

from pyai.kernels.common import ACTIVATIONS, activation_reference, conv_transpose_output_size
from pyai.kernels.numba_cpu.im2col import col2im, col2im_reference, geometry, image_chunks, workspace
from pyai.kernels.numba_cpu.implicit_gemm import PACKED_MIN_CHANNELS, Windows, window_product
from pyai.kernels.numba_cpu.matmul import fused_matmul


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


def transposed_conv(small, w, g, bias, activation, alpha, big):
    """big = epilogue(the transpose of Geometry g's convolution, applied to small), in place;
    w is (kh, kw, big channels, small channels)."""
    small_channels = w.shape[3]
    big_rows = big.reshape(-1, g.channels)
    if (g.stride_height, g.stride_width) == (1, 1) and small_channels >= PACKED_MIN_CHANNELS:
        kernel = np.ascontiguousarray(w.transpose(0, 1, 3, 2)).reshape(-1, g.channels)
        window_product(small, transpose_windows(g, small_channels), kernel, bias, activation, alpha,
                       out=big_rows)
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
    y = np.empty((x.shape[0], g.height, g.width, g.channels), dtype=np.float32)
    transposed_conv(x, w, g, bias, activation, alpha, y)
    return y
