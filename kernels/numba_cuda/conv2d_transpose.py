"""Conv2DTranspose forward on the GPU (numba.cuda): y = activation(conv_transpose(x, w) + bias),
NHWC, float32.

Shapes (Keras's layouts): x is (N, H, W, I), w is (kh, kw, O, I), bias is (O,) or None, y is
(N, OH, OW, O) with OH = H*sh ('same') or H*sh + max(kh - sh, 0) ('valid'), as Keras computes it
(kernels/common.py's transpose_geometry). The op is the transpose (the input gradient) of the
Conv2D that maps y's shape back to x's with the same kernel, stride and padding: every input
pixel spreads x[n, h, w, :] @ w[i, j].T over the output window it would have been computed from:
    y[n, h*sh - pt + i, w*sw - pl + j, o] += sum over c of x[n, h, w, c] w[i, j, o, c]
Cost: 2*N*H*W*kh*kw*O*I FLOPs, plus N*H*W*kh*kw*O adds in col2im; at least
4*(N*H*W*I + kh*kw*O*I + N*OH*OW*O) bytes, plus the (N*H*W, kh*kw*O) matrix of every pixel's
contributions, 4*N*H*W*kh*kw*O bytes written and read once (a DCGAN generator layer's,
64 x 7x7x128 -> 14x14x64 by 4x4 at stride 2: 3.2 MB).

Fast version: the backend's tiled matmul (matmul.py) makes every pixel's contributions,
cols = x.reshape(N*H*W, I) @ w.reshape(kh*kw*O, I)^T (w's rows read along their contiguous
axis); then col2im (im2col.py) gathers each output float's sum, taps in a fixed order (no
atomics: the same bits every run), adds the bias and applies the activation in the same
thread. The same two steps give a Conv2D's input gradient (conv2d_backward.py). The plain
reference is the numba-cpu file's conv2d_transpose_reference (float64).
"""

import numpy as np

from pyai.kernels.common import transpose_geometry
from pyai.kernels.numba_cpu.conv2d_transpose import conv2d_transpose_reference  # noqa: F401  (the reference)
from pyai.kernels.numba_cuda.buffers import device_array
from pyai.kernels.numba_cuda.im2col import col2im, image_chunks, workspace
from pyai.kernels.numba_cuda.matmul import fused_matmul


# x (N, H, W, I), w (kh, kw, O, I), bias (O,) or None: float32 device arrays
#   -> y (N, OH, OW, O), a new device array; a chunk of images at a time (im2col.image_chunks)
def conv2d_transpose_forward(x, w, bias, stride, padding, activation, alpha):
    g = transpose_geometry(x.shape, w.shape, stride, padding)
    in_channels = w.shape[3]
    x_rows = x.reshape(x.size // in_channels, in_channels)
    y = device_array((x.shape[0], g.height, g.width, g.channels), np.float32)
    space = workspace(g, x.shape[0])
    for first, images in image_chunks(g, x.shape[0]):
        cols = fused_matmul(x_rows[first * g.windows:(first + images) * g.windows], w.reshape(g.depth, in_channels),
                            False, True, None, None, 0.0, out=space[:images * g.windows])
        col2im(cols, g, y[first:first + images], bias, activation, alpha)
    return y
