"""Conv2D forward on the GPU (numba.cuda): y = activation(conv(x, w) + bias), NHWC, float32.

Shapes (Keras's layouts): x is (N, H, W, C), w is (kh, kw, C, O), bias is (O,) or None, y is
(N, OH, OW, O) with OH, OW and the padding as Keras computes them (kernels/common.py's geometry):
    y[n, oh, ow, o] = sum over i, j, c of x[n, oh*sh - pt + i, ow*sw - pl + j, c] w[i, j, c, o]
Cost: 2*N*OH*OW*kh*kw*C*O FLOPs; at least 4*(N*H*W*C + kh*kw*C*O + N*OH*OW*O) bytes, plus the
im2col matrix, 4*N*OH*OW*kh*kw*C bytes written and read once (a DCGAN discriminator layer's,
64 x 14x14x64 -> 7x7x128 by 3x3 at stride 2: 7.2 MB, 5.4x its input).

Fast version, an explicit GEMM: im2col (im2col.py) gathers x's windows into a pooled
(N*OH*OW, kh*kw*C) matrix, a thread per float, zeros for the padding; then the backend's tiled
matmul (matmul.py) multiplies it by w, which in Keras's layout already is the
(kh*kw*C, O) matrix, with the bias and activation in its epilogue, writing y's rows in place.
A 1x1 kernel at stride 1 skips the gather: x is its own windows matrix. The matmul computes
whole 128 x 128 tiles of y, so a layer of few output channels (the DCGAN generator's last,
O = 1) uses a sliver of each tile. The plain reference is the numba-cpu file's conv2d_reference
(float64).
"""

import numpy as np

from pyai.kernels.common import geometry
from pyai.kernels.numba_cpu.conv2d import conv2d_reference  # noqa: F401  (the reference)
from pyai.kernels.numba_cuda.buffers import device_array
from pyai.kernels.numba_cuda.im2col import im2col, image_chunks, workspace
from pyai.kernels.numba_cuda.matmul import fused_matmul


# x (N, H, W, C), w (kh, kw, C, O), bias (O,) or None: float32 device arrays
#   -> y (N, OH, OW, O), a new device array; a chunk of images at a time (im2col.image_chunks)
def conv2d_forward(x, w, bias, stride, padding, activation, alpha):
    g = geometry(x.shape[1:], w.shape[:2], stride, padding)
    out_channels = w.shape[3]
    y = device_array((x.shape[0], g.out_height, g.out_width, out_channels), np.float32)
    y_rows = y.reshape(x.shape[0] * g.windows, out_channels)
    space = None if g.is_pointwise() else workspace(g, x.shape[0])   # x is its own cols
    for first, images in image_chunks(g, x.shape[0]):
        fused_matmul(im2col(x[first:first + images], g, space), w.reshape(g.depth, out_channels), False, False,
                     bias, activation, alpha, out=y_rows[first * g.windows:(first + images) * g.windows])
    return y
