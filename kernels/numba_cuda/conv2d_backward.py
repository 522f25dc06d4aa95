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
ceil(kh*kw*C / 128) x ceil(O / 128) blocks of the matmul: the matmul cuts such a product in
depth (matmul.depth_splits), runs of it on more blocks, their sums added in order. A large batch
goes a chunk of images at a time (im2col.image_chunks), dw the chunks' products added in order.
The plain reference is the numba-cpu file's conv2d_backward_reference (float64).
"""

import numpy as np

from pyai.kernels.common import geometry
from pyai.kernels.numba_cpu.conv2d_backward import conv2d_backward_reference  # noqa: F401  (the reference)
from pyai.kernels.numba_cuda.bias_grad import bias_grad
from pyai.kernels.numba_cuda.buffers import device_array
from pyai.kernels.numba_cuda.im2col import col2im, im2col, image_chunks, weight_pages, workspace
from pyai.kernels.numba_cuda.matmul import fused_matmul, sum_pages


# dy (N, OH, OW, O), x (N, H, W, C), w (kh, kw, C, O): float32 device arrays
#   -> (dx or None, dw or None, db or None), new device arrays; a chunk of images at a time
#   (im2col.image_chunks), dw the chunks' products added in order
def conv2d_backward(dy, x, w, stride, padding, input_gradient, weight_gradient):
    g = geometry(x.shape[1:], w.shape[:2], stride, padding)
    out_channels = w.shape[3]
    dy_rows = dy.reshape(dy.size // out_channels, out_channels)
    w_rows = w.reshape(g.depth, out_channels)
    chunks = image_chunks(g, x.shape[0])
    # dx's products go through it; x is its own cols where the kernel is 1x1 at stride 1
    space = workspace(g, x.shape[0]) if input_gradient or not g.is_pointwise() else None
    dx = dw = db = None
    if input_gradient:
        dx = device_array(x.shape, np.float32)
        for first, images in chunks:
            cols = fused_matmul(dy_rows[first * g.windows:(first + images) * g.windows], w_rows, False, True, None,
                                None, 0.0, out=space[:images * g.windows])
            col2im(cols, g, dx[first:first + images])
    if weight_gradient:
        dw = device_array(w.shape, np.float32)
        pages = weight_pages(dw.reshape(g.depth, out_channels), len(chunks))
        for page, (first, images) in enumerate(chunks):
            fused_matmul(im2col(x[first:first + images], g, space),
                         dy_rows[first * g.windows:(first + images) * g.windows], True, False, None, None, 0.0,
                         out=pages[page])
        if len(chunks) > 1:
            sum_pages(pages, dw.reshape(g.depth, out_channels))
        db = bias_grad(dy_rows)
    return dx, dw, db
