"""Conv2DTranspose backward: the input, weight and bias gradients of y = conv_transpose(x, w) + bias,
NHWC, float32.

Shapes as in conv2d_transpose.py; dy = d loss / d y is (N, OH, OW, O), the gradient of the
output before any activation (the caller applies the activation's gradient first). The forward
is the transpose of a Conv2D from y's shape to x's, so with windows(dy) that Conv2D's
(N*H*W, kh*kw*O) im2col matrix of dy and x as an (N*H*W, I) matrix:
    dx = windows(dy) @ w.reshape(kh*kw*O, I)   (the Conv2D of dy by w)   2*N*H*W*kh*kw*O*I FLOPs
    dw = windows(dy)^T @ x                     reshaped to (kh, kw, O, I), as many FLOPs
    db = the column sums of dy                 (O,)
Both products are implicit GEMMs (implicit_gemm.py): the windows of dy are packed straight from
it, as the A side for dx and as the B side for dw (computed as x^T @ windows(dy), then
transposed: a kh*kw*O x I copy).
"""

import numpy as np

from pyai.kernels.numba_cpu.conv2d import conv_windows
from pyai.kernels.numba_cpu.conv2d_transpose import transpose_geometry
from pyai.kernels.numba_cpu.im2col import im2col_reference
from pyai.kernels.numba_cpu.implicit_gemm import window_product, window_weight_product


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
    windows = conv_windows(g)
    dx = dw = db = None
    if input_gradient:
        dx = window_product(dy, windows, w.reshape(g.depth, in_channels)).reshape(x.shape)
    if weight_gradient:
        x_rows = x.reshape(-1, in_channels)
        dw = np.ascontiguousarray(window_weight_product(x_rows, dy, windows).T).reshape(w.shape)
        db = dy.reshape(-1, g.channels).sum(axis=0, dtype=np.float32)
    return dx, dw, db
