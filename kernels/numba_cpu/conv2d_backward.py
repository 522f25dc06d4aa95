"""Conv2D backward: the input, weight and bias gradients of y = conv(x, w) + bias, NHWC, float32.

Shapes as in conv2d.py; dy = d loss / d y is (N, OH, OW, O), the gradient of the convolution's
output before any activation (the caller applies the activation's gradient first, as for Dense).
With windows(x) the (N*OH*OW, kh*kw*C) im2col matrix of x and dy as an (N*OH*OW, O) matrix:
    dw = windows(x)^T @ dy         reshaped to (kh, kw, C, O)    2*N*OH*OW*kh*kw*C*O FLOPs
    dx = the transpose of the convolution applied to dy           as many FLOPs
    db = the column sums of dy     (O,)
dw is an implicit GEMM (implicit_gemm.py), dy^T @ windows(x) with the windows packed straight
from x as the matmul's B panels, transposed at the end (a kh*kw*C x O copy). dx is a
Conv2DTranspose of dy by w, computed phase by phase as stride-1 convolutions
(conv2d_transpose.py), with no col2im scatter. Where C is small (an image's 1 or 3 channels),
whose rows would fill a sliver of the matmul's register tile, dx is dy @ w^T into a workspace
and col2im gathers each pixel's sum instead (im2col.py). A layer of at most DIRECT_MAX_OUT
output channels is computed directly (conv2d_direct.py).
"""

import numpy as np

from pyai.kernels.numba_cpu.conv2d import conv_windows
from pyai.kernels.numba_cpu.conv2d_direct import (DIRECT_MAX_OUT, direct_input_gradient,
                                                  direct_weight_gradient)
from pyai.kernels.numba_cpu.conv2d_transpose import transposed_conv
from pyai.kernels.numba_cpu.im2col import (col2im, col2im_reference, geometry, im2col_reference,
                                           image_chunks, workspace)
from pyai.kernels.numba_cpu.implicit_gemm import window_weight_product
from pyai.kernels.numba_cpu.matmul import fused_matmul

PHASES_MIN_CHANNELS = 16   # fewer input channels: dx by a matmul and col2im (see above)


def conv2d_backward_reference(dy, x, w, stride, padding):
    """(dx, dw, db) in float64."""
    g = geometry(x.shape[1:], w.shape[:2], stride, padding)
    dy_rows = dy.astype(np.float64).reshape(-1, w.shape[3])
    dx = col2im_reference(dy_rows @ w.reshape(g.depth, -1).T.astype(np.float64), g, x.shape[0])
    dw = (im2col_reference(x.astype(np.float64), g).T @ dy_rows).reshape(w.shape)
    return dx, dw, dy_rows.sum(axis=0)


def narrow_input_gradient(dy_rows, w, g, dx):
    """dx = col2im(dy @ w^T), for few input channels, a chunk of whole images at a time."""
    weights_t = np.ascontiguousarray(w.reshape(g.depth, -1).T)
    for first, end in image_chunks(dx.shape[0], g):
        rows = dy_rows[first * g.windows:end * g.windows]
        dx_cols = fused_matmul(rows, weights_t, False, False, None, None, 0.0,
                               out=workspace("dx_cols", len(rows), g.depth))
        col2im(dx_cols, g, first, end, dx)


# dy is (N, OH, OW, O), x (N, H, W, C), w (kh, kw, C, O) -> (dx or None, dw or None, db or None)
def conv2d_backward(dy, x, w, stride, padding, input_gradient, weight_gradient):
    g = geometry(x.shape[1:], w.shape[:2], stride, padding)
    out_channels = w.shape[3]
    dy_rows = dy.reshape(-1, out_channels)
    dx = np.empty(x.shape, dtype=np.float32) if input_gradient else None
    dw = None
    if out_channels <= DIRECT_MAX_OUT:
        if input_gradient:
            direct_input_gradient(dy, w, g, dx)
        if weight_gradient:
            dw = direct_weight_gradient(dy, x, g, w.shape)
    else:
        if input_gradient and g.channels < PHASES_MIN_CHANNELS:
            narrow_input_gradient(dy_rows, w, g, dx)
        elif input_gradient:
            transposed_conv(dy, w, g, None, None, 0.0, dx)
        if weight_gradient:
            dw = np.ascontiguousarray(window_weight_product(dy_rows, x, conv_windows(g)).T).reshape(w.shape)
    db = dy_rows.sum(axis=0, dtype=np.float32) if weight_gradient else None
    return dx, dw, db
