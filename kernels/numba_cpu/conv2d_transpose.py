"""Conv2DTranspose forward: y = activation(conv_transpose(x, w) + bias), NHWC, float32, on the CPU.

Shapes (Keras's layouts): x is (N, H, W, I), w is (kh, kw, O, I), bias is (O,), y is
(N, OH, OW, O) with OH = H*sh ('same') or H*sh + max(kh - sh, 0) ('valid'), as Keras computes it
(kernels/common.py). The op is the transpose (the input gradient) of the Conv2D that maps y's
shape back to x's with the same kernel, stride and padding: every input pixel spreads
x[n, h, w, :] @ w[i, j].T over the output window it would have been computed from:
    y[n, h*sh - pt + i, w*sw - pl + j, o] += sum over c of x[n, h, w, c] w[i, j, o, c]
Cost: 2*N*H*W*kh*kw*O*I FLOPs, plus N*H*W*kh*kw*O adds in col2im; at least
4*(N*H*W*I + kh*kw*O*I + N*OH*OW*O) bytes.

The fast version, a chunk of whole images at a time (im2col.py): one blocked matmul makes every
pixel's contributions, cols = x.reshape(N*H*W, I) @ w.reshape(kh*kw*O, I)^T, into a workspace,
then col2im gathers each output pixel's sum and applies the bias + activation epilogue to the
pixel row it has just written. No zeros are multiplied (unlike a convolution over a
zero-dilated input), and the threads write disjoint rows of y.
"""

import numpy as np

from pyai.kernels.common import ACTIVATIONS, activation_reference, conv_transpose_output_size
from pyai.kernels.numba_cpu.im2col import col2im, col2im_reference, geometry, image_chunks, workspace
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


# x is (N, H, W, I), w (kh, kw, O, I), bias (O,) or None -> y (N, OH, OW, O)
def conv2d_transpose_forward(x, w, bias, stride, padding, activation, alpha):
    g = transpose_geometry(x.shape, w.shape, stride, padding)
    in_channels = w.shape[3]
    y = np.empty((x.shape[0], g.height, g.width, g.channels), dtype=np.float32)
    x_rows = x.reshape(-1, in_channels)
    weights_t = np.ascontiguousarray(w.reshape(g.depth, in_channels).T)   # packs faster than w as op(B)^T
    for first, end in image_chunks(x.shape[0], g):
        rows = x_rows[first * g.windows:end * g.windows]
        cols = fused_matmul(rows, weights_t, False, False, None, None, 0.0,
                            out=workspace("cols", len(rows), g.depth))
        col2im(cols, g, first, end, y, bias, ACTIVATIONS[activation], alpha)
    return y
