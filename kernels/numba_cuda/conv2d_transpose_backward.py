"""Conv2DTranspose backward on the GPU (numba.cuda): the input, weight and bias gradients of
y = conv_transpose(x, w) + bias, NHWC, float32.

Shapes as in conv2d_transpose.py; dy = d loss / d y is (N, OH, OW, O), the gradient before any
activation (the caller applies the activation's gradient first). The forward is the transpose
of a Conv2D from y's shape to x's, so with windows(dy) that Conv2D's (N*H*W, kh*kw*O) im2col
matrix of dy, x as an (N*H*W, I) matrix and w as (kh*kw*O, I):
    dx = windows(dy) @ w           (the Conv2D of dy by w)   2*N*H*W*kh*kw*O*I FLOPs
    dw = windows(dy)^T @ x         reshaped to (kh, kw, O, I), as many FLOPs
    db = the column sums of dy     (O,)                      N*OH*OW*O adds
Bytes: windows(dy), 4*N*H*W*kh*kw*O, written once and read by both products, besides the
4*(N*OH*OW*O + N*H*W*I + kh*kw*O*I) of dy, x and w, dx and dw.

Fast version: one im2col gather of dy (im2col.py) shared by both products on the backend's
tiled matmul (matmul.py), each writing its result in place; db by bias_grad.py's two passes.
No atomics anywhere: the same bits on every run. The plain reference is the numba-cpu file's
conv2d_transpose_backward_reference (float64).
"""

import numpy as np

from pyai.kernels.common import transpose_geometry
from pyai.kernels.numba_cpu.conv2d_transpose_backward import (  # noqa: F401  (the reference)
    conv2d_transpose_backward_reference)
from pyai.kernels.numba_cuda.bias_grad import bias_grad
from pyai.kernels.numba_cuda.buffers import device_array
from pyai.kernels.numba_cuda.im2col import im2col, image_chunks, weight_pages, workspace
from pyai.kernels.numba_cuda.matmul import fused_matmul, sum_pages


# dy (N, OH, OW, O), x (N, H, W, I), w (kh, kw, O, I): float32 device arrays
#   -> (dx or None, dw or None, db or None), new device arrays; a chunk of images at a time
#   (im2col.image_chunks), dw the chunks' products added in order
def conv2d_transpose_backward(dy, x, w, stride, padding, input_gradient, weight_gradient):
    g = transpose_geometry(x.shape, w.shape, stride, padding)
    in_channels = w.shape[3]
    w_rows = w.reshape(g.depth, in_channels)
    x_rows = x.reshape(x.size // in_channels, in_channels)
    dx = dw = db = None
    if not (input_gradient or weight_gradient):
        return dx, dw, db
    chunks, space = image_chunks(g, x.shape[0]), workspace(g, x.shape[0])
    dx = device_array(x.shape, np.float32) if input_gradient else None
    dw = device_array(w.shape, np.float32) if weight_gradient else None
    pages = weight_pages(dw.reshape(g.depth, in_channels), len(chunks)) if weight_gradient else None
    for page, (first, images) in enumerate(chunks):
        rows = slice(first * g.windows, (first + images) * g.windows)
        cols = im2col(dy[first:first + images], g, space)
        if input_gradient:
            fused_matmul(cols, w_rows, False, False, None, None, 0.0, out=dx.reshape(x_rows.shape)[rows])
        if weight_gradient:
            fused_matmul(cols, x_rows[rows], True, False, None, None, 0.0, out=pages[page])
    if weight_gradient:
        if len(chunks) > 1:
            sum_pages(pages, dw.reshape(g.depth, in_channels))
        db = bias_grad(dy)
    return dx, dw, db
