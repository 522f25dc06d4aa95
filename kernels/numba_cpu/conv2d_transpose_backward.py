"""Conv2DTranspose backward: the input, weight and bias gradients of y = conv_transpose(x, w) + bias,
NHWC, float32.

Shapes as in conv2d_transpose.py; dy = d loss / d y is (N, OH, OW, O), the gradient of the
output before any activation (the caller applies the activation's gradient first). The forward
is col2im(x @ w^T), so with cols = im2col(dy) (N*H*W, kh*kw*O) and x as an (N*H*W, I) matrix:
    dx = cols @ w.reshape(kh*kw*O, I)    (a Conv2D of dy by w)    2*N*H*W*kh*kw*O*I FLOPs
    dw = cols^T @ x                      reshaped to (kh, kw, O, I), as many FLOPs
    db = the column sums of dy           (O,)
A chunk of whole images at a time: one im2col of dy into a workspace serves both products.
"""

import numpy as np

from pyai.kernels.numba_cpu.conv2d_backward import add_weight_gradient
from pyai.kernels.numba_cpu.conv2d_transpose import transpose_geometry
from pyai.kernels.numba_cpu.im2col import im2col, im2col_reference, image_chunks
from pyai.kernels.numba_cpu.matmul import fused_matmul


def conv2d_transpose_backward_reference(dy, x, w, stride, padding):
    """(dx, dw, db) in float64."""
    g = transpose_geometry(x.shape, w.shape, stride, padding)
    cols = im2col_reference(dy.astype(np.float64), g)
    x_rows = x.astype(np.float64).reshape(-1, w.shape[3])
    dx = (cols @ w.reshape(g.depth, -1).astype(np.float64)).reshape(x.shape)
    return dx, (cols.T @ x_rows).reshape(w.shape), dy.astype(np.float64).reshape(-1, g.channels).sum(axis=0)


# dy is (N, OH, OW, O), x (N, H, W, I), w (kh, kw, O, I) -> (dx or None, dw or None, db or None)
def conv2d_transpose_backward(dy, x, w, stride, padding, input_gradient, weight_gradient):
    g = transpose_geometry(x.shape, w.shape, stride, padding)
    in_channels = w.shape[3]
    x_rows = x.reshape(-1, in_channels)
    weights = w.reshape(g.depth, in_channels)
    dx = np.empty(x.shape, dtype=np.float32) if input_gradient else None
    dw = np.empty(w.shape, dtype=np.float32) if weight_gradient else None
    for first, end in image_chunks(x.shape[0], g):
        cols = dy[first:end].reshape(-1, g.channels) if g.is_pointwise() else im2col(dy, g, first, end)
        if input_gradient:
            fused_matmul(cols, weights, False, False, None, None, 0.0,
                         out=dx.reshape(-1, in_channels)[first * g.windows:end * g.windows])
        if weight_gradient:
            add_weight_gradient(cols, x_rows[first * g.windows:end * g.windows],
                                dw.reshape(g.depth, in_channels), first == 0)
    db = dy.reshape(-1, g.channels).sum(axis=0, dtype=np.float32) if weight_gradient else None
    return dx, dw, db
