"""Conv2DTranspose backward: the input, weight and bias gradients of y = conv_transpose(x, w) + bias,
NHWC, float32.

Shapes as in conv2d_transpose.py; dy = d loss / d y is (N, OH, OW, O), the gradient of the
output before any activation (the caller applies the activation's gradient first). The forward
is the transpose of a Conv2D from y's shape to x's, so with windows(dy) that Conv2D's
(N*H*W, kh*kw*O) im2col matrix of dy and x as an (N*H*W, I) matrix:
    dx = windows(dy) @ w.reshape(kh*kw*O, I)   (the Conv2D of dy by w)   2*N*H*W*kh*kw*O*I FLOPs
    dw = windows(dy)^T @ x                     reshaped to (kh, kw, O, I), as many FLOPs
    db = the column sums of dy                 (O,)
dx is Conv2D's forward routine (conv2d.py) and dw Conv2D's weight-gradient routine
(conv2d_backward.py), both implicit GEMMs over dy's windows (implicit_gemm.py), or over its
im2col matrix a chunk at a time where O is small.
"""

import numpy as np

from pyai.kernels.numba_cpu.bias_grad import bias_grad
from pyai.kernels.numba_cpu.conv2d import conv2d_forward
from pyai.kernels.numba_cpu.conv2d_backward import conv_weight_gradient
from pyai.kernels.numba_cpu.conv2d_transpose import transpose_geometry
from pyai.kernels.numba_cpu.im2col import im2col_reference


def conv2d_transpose_backward_reference(dy, x, w, stride, padding):
    """(dx, dw, db) in float64."""
    g = transpose_geometry(x.shape, w.shape, stride, padding)
    cols = im2col_reference(dy.astype(np.float64), g)
    x_rows = x.astype(np.float64).reshape(-1, w.shape[3])
    dx = (cols @ w.reshape(g.depth, -1).astype(np.float64)).reshape(x.shape)
    return dx, (cols.T @ x_rows).reshape(w.shape), dy.astype(np.float64).reshape(-1, g.channels).sum(axis=0)


# dy is (N, OH, OW, O), x (N, H, W, I), w (kh, kw, O, I) -> (dx or None, dw or None, db or None);
# leaky_relu_output and alpha as conv2d_backward's
def conv2d_transpose_backward(dy, x, w, stride, padding, input_gradient, weight_gradient, leaky_relu_output=None,
                              alpha=0.0):
    g = transpose_geometry(x.shape, w.shape, stride, padding)
    dx = conv2d_forward(dy, w, None, stride, padding, None, alpha, leaky_relu_output) if input_gradient else None
    dw = conv_weight_gradient(dy, g, x.reshape(-1, w.shape[3]), w.shape) if weight_gradient else None
    db = bias_grad(dy) if weight_gradient else None
    return dx, dw, db
