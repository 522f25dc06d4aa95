"""Conv2D backward: the input, weight and bias gradients of y = conv(x, w) + bias, NHWC, float32.

Shapes as in conv2d.py; dy = d loss / d y is (N, OH, OW, O), the gradient of the convolution's
output before any activation (the caller applies the activation's gradient first, as for Dense).
With windows(x) the (N*OH*OW, kh*kw*C) im2col matrix of x and dy as an (N*OH*OW, O) matrix:
    dw = windows(x)^T @ dy         reshaped to (kh, kw, C, O)    2*N*OH*OW*kh*kw*C*O FLOPs
    dx = the transpose of the convolution applied to dy           as many FLOPs
    db = the column sums of dy     (O,)   (bias_grad.py)
dw is an implicit GEMM (implicit_gemm.py): dy^T @ windows(x), the windows packed straight from
x as the matmul's B panels (or read where they lie, weight_rectangle), then transposed (a kh*kw*C
x O copy); for an image of fewer than
PACKED_MIN_CHANNELS channels, it is summed directly where the windows are short
(conv2d_few_inputs.py), else windows(x) is copied a chunk of whole images at a time (im2col.py)
and the chunks' products added up. dx is Conv2DTranspose's routine (conv2d_transpose.py): an
implicit GEMM at stride 1, one over the stride phases where the stride divides the kernel, else
one a phase over the taps each phase has (dy or x of fewer than PACKED_MIN_CHANNELS channels:
dy @ w^T and a col2im gather). A layer of at most DIRECT_MAX_OUT output channels is computed directly
(conv2d_direct.py).
"""

import numpy as np

from pyai.kernels.numba_cpu import memory
from pyai.kernels.numba_cpu.bias_grad import bias_grad
from pyai.kernels.numba_cpu.conv2d import conv_windows
from pyai.kernels.numba_cpu.conv2d_direct import (DIRECT_MAX_OUT, direct_input_gradient,
                                                  direct_weight_gradient)
from pyai.kernels.numba_cpu.conv2d_few_inputs import few_inputs, few_inputs_weight_gradient
from pyai.kernels.numba_cpu.conv2d_transpose import transposed_conv
from pyai.kernels.numba_cpu.im2col import (col2im_reference, geometry, im2col, im2col_reference,
                                           image_chunks)
from pyai.kernels.numba_cpu.implicit_gemm import PACKED_MIN_CHANNELS, window_weight_product
from pyai.kernels.numba_cpu.matmul import fused_matmul
from pyai.kernels.numba_cpu.transpose import transposed


def conv2d_backward_reference(dy, x, w, stride, padding):
    """(dx, dw, db) in float64."""
    g = geometry(x.shape[1:], w.shape[:2], stride, padding)
    dy_rows = dy.astype(np.float64).reshape(-1, w.shape[3])
    dx = col2im_reference(dy_rows @ w.reshape(g.depth, -1).T.astype(np.float64), g, x.shape[0])
    dw = (im2col_reference(x.astype(np.float64), g).T @ dy_rows).reshape(w.shape)
    return dx, dw, dy_rows.sum(axis=0)


def add_weight_gradient(cols, dy_rows, dw_rows, first_chunk):
    """dw_rows (=, or += after the first chunk) cols^T @ dy_rows."""
    if first_chunk:
        fused_matmul(cols, dy_rows, True, False, None, None, 0.0, out=dw_rows)
    else:
        dw_rows += fused_matmul(cols, dy_rows, True, False, None, None, 0.0)


def conv_weight_gradient(big, g, small_rows, w_shape):
    """windows(big)^T @ small_rows, reshaped to w_shape: dw of a Conv2D (big = x, small = dy)
    or of a Conv2DTranspose (big = dy, small = x)."""
    if g.channels >= PACKED_MIN_CHANNELS:
        return transposed(window_weight_product(small_rows, big, conv_windows(g))).reshape(w_shape)
    if few_inputs(g, w_shape[3]):
        return few_inputs_weight_gradient(small_rows, big, g, w_shape)
    dw = memory.empty(w_shape)
    for first, end in image_chunks(big.shape[0], g):
        add_weight_gradient(im2col(big, g, first, end), small_rows[first * g.windows:end * g.windows],
                            dw.reshape(g.depth, -1), first == 0)
    return dw


# dy is (N, OH, OW, O), x (N, H, W, C), w (kh, kw, C, O) -> (dx or None, dw or None, db or None).
# With leaky_relu_output z (x's shape): dx times z's leaky ReLU gradient of slope alpha, made in
# dx's own pass (the layer below's d loss / d pre-activation, where x = z came from a leaky ReLU)
def conv2d_backward(dy, x, w, stride, padding, input_gradient, weight_gradient, leaky_relu_output=None, alpha=0.0):
    g = geometry(x.shape[1:], w.shape[:2], stride, padding)
    out_channels = w.shape[3]
    dy_rows = dy.reshape(-1, out_channels)
    dx = memory.empty(x.shape) if input_gradient else None
    dw = None
    if out_channels <= DIRECT_MAX_OUT:
        if input_gradient:
            direct_input_gradient(dy, w, g, dx, leaky_relu_output, alpha)
        if weight_gradient:
            dw = direct_weight_gradient(dy, x, g, w.shape)
    else:
        if input_gradient:
            transposed_conv(dy, w, g, None, None, alpha, dx, leaky_relu_output)
        if weight_gradient:
            dw = conv_weight_gradient(x, g, dy_rows, w.shape)
    db = bias_grad(dy_rows) if weight_gradient else None
    return dx, dw, db
