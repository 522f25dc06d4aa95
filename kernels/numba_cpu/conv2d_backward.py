"""Conv2D backward: the input, weight and bias gradients of y = conv(x, w) + bias, NHWC, float32.

Shapes as in conv2d.py; dy = d loss / d y is (N, OH, OW, O), the gradient of the convolution's
output before any activation (the caller applies the activation's gradient first, as for Dense).
With cols = im2col(x) (N*OH*OW, kh*kw*C) and dy as an (N*OH*OW, O) matrix:
    dw = cols^T @ dy               reshaped to (kh, kw, C, O)    2*N*OH*OW*kh*kw*C*O FLOPs
    dx = col2im(dy @ w^T)          (N, H, W, C)                  as many FLOPs, plus col2im's adds
    db = the column sums of dy     (O,)
Each product runs on the blocked matmul a chunk of whole images at a time (im2col.py): the
chunk's cols (for dw) and dy @ w^T (for dx) are made in workspaces; dw adds up the chunks'
products. col2im gathers each input pixel's sum, so dx has one fixed order of additions. A layer
of at most DIRECT_MAX_OUT output channels is computed directly (conv2d_direct.py).
"""

import numpy as np

from pyai.kernels.numba_cpu.conv2d_direct import (DIRECT_MAX_OUT, direct_input_gradient,
                                                  direct_weight_gradient)
from pyai.kernels.numba_cpu.im2col import (col2im, col2im_reference, geometry, im2col,
                                           im2col_reference, image_chunks, workspace)
from pyai.kernels.numba_cpu.matmul import fused_matmul


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


# dy is (N, OH, OW, O), x (N, H, W, C), w (kh, kw, C, O) -> (dx or None, dw or None, db or None)
def conv2d_backward(dy, x, w, stride, padding, input_gradient, weight_gradient):
    g = geometry(x.shape[1:], w.shape[:2], stride, padding)
    out_channels = w.shape[3]
    dy_rows = dy.reshape(-1, out_channels)
    weights = w.reshape(g.depth, out_channels)
    # dx's products read w^T: transposed once here, a (O, kh*kw*C) matrix packs faster than a
    # transposed operand does, chunk after chunk
    weights_t = np.ascontiguousarray(weights.T) if input_gradient else None
    dx = np.empty(x.shape, dtype=np.float32) if input_gradient else None
    dw = np.empty(w.shape, dtype=np.float32) if weight_gradient else None
    if out_channels <= DIRECT_MAX_OUT:
        if input_gradient:
            direct_input_gradient(dy, w, g, dx)
        if weight_gradient:
            dw = direct_weight_gradient(dy, x, g, w.shape)
    elif g.is_pointwise():
        if input_gradient:
            fused_matmul(dy_rows, weights_t, False, False, None, None, 0.0, out=dx.reshape(-1, g.channels))
        if weight_gradient:
            add_weight_gradient(x.reshape(-1, g.channels), dy_rows, dw.reshape(g.depth, out_channels), True)
    else:
        for first, end in image_chunks(x.shape[0], g):
            rows = dy_rows[first * g.windows:end * g.windows]
            if weight_gradient:
                add_weight_gradient(im2col(x, g, first, end), rows, dw.reshape(g.depth, out_channels),
                                    first == 0)
            if input_gradient:
                dx_cols = fused_matmul(rows, weights_t, False, False, None, None, 0.0,
                                       out=workspace("dx_cols", len(rows), g.depth))
                col2im(dx_cols, g, first, end, dx)
    db = dy_rows.sum(axis=0, dtype=np.float32) if weight_gradient else None
    return dx, dw, db

