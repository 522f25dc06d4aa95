"""Conv2D backward on the GPU (numba.cuda): the input, weight and bias gradients of
y = conv(x, w) + bias, NHWC, float32.

Shapes as in conv2d.py; dy = d loss / d y is (N, OH, OW, O), the gradient before any activation
(the caller applies the activation's gradient first, as for Dense). With windows(x) the
(N*OH*OW, kh*kw*C) im2col matrix of x, dy as an (N*OH*OW, O) matrix and w as (kh*kw*C, O):
    dx = col2im(dy @ w^T)          (N, H, W, C)      2*N*OH*OW*kh*kw*C*O FLOPs
    dw = windows(x)^T @ dy         (kh, kw, C, O)    as many FLOPs
    db = the column sums of dy     (O,)              N*OH*OW*O adds
Bytes: dy @ w^T and windows(x) are each 4*N*OH*OW*kh*kw*C written and read once, besides the
4*(N*OH*OW*O + N*H*W*C + kh*kw*C*O) of dy, x and w, dx and dw.

Fast version: both products on the backend's tiled matmul (matmul.py), which reads a transposed
operand along its contiguous axis at no cost; windows(x) by im2col's gather and dx by col2im's
gather-sum (im2col.py): each input pixel sums, taps in a fixed order, the entries of dy @ w^T
that came from it, so dx, like dw and db (bias_grad.py, two passes), has the same bits on every
run. The weight product's depth is N*OH*OW (12544 for a DCGAN layer at batch 64) over only
ceil(kh*kw*C / 128) x ceil(O / 128) blocks of the matmul, each summing its whole depth: few
blocks for the GPU's SMs where the layer is narrow. The plain reference is the numba-cpu file's
conv2d_backward_reference (float64).
"""

import numpy as np

from pyai.kernels.common import geometry
from pyai.kernels.numba_cpu.conv2d_backward import conv2d_backward_reference  # noqa: F401  (the reference)
from pyai.kernels.numba_cuda.bias_grad import bias_grad
from pyai.kernels.numba_cuda.buffers import device_array
from pyai.kernels.numba_cuda.im2col import col2im, im2col
from pyai.kernels.numba_cuda.matmul import fused_matmul, matmul


# dy (N, OH, OW, O), x (N, H, W, C), w (kh, kw, C, O): float32 device arrays
#   -> (dx or None, dw or None, db or None), new device arrays
def conv2d_backward(dy, x, w, stride, padding, input_gradient, weight_gradient):
    g = geometry(x.shape[1:], w.shape[:2], stride, padding)
    out_channels = w.shape[3]
    dy_rows = dy.reshape(dy.size // out_channels, out_channels)
    w_rows = w.reshape(g.depth, out_channels)
    dx = dw = db = None
    if input_gradient:
        dx = col2im(matmul(dy_rows, w_rows, False, True), g, x.shape[0])
    if weight_gradient:
        dw = device_array(w.shape, np.float32)
        fused_matmul(im2col(x, g), dy_rows, True, False, None, None, 0.0, out=dw.reshape(g.depth, out_channels))
        db = bias_grad(dy_rows)
    return dx, dw, db
