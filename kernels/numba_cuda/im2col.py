"""The window gather of the convolutions on the GPU (numba.cuda): im2col, and its transpose col2im
as a gather-sum with the bias + activation epilogue.

A convolution maps a "big" image (N, H, W, C) to a "small" one (N, OH, OW, O) through a kh x kw
window moved by (sh, sw), pt rows and pl columns of zeros before the image (kernels/common.py's
Geometry): Conv2D's input is the big image, Conv2DTranspose's output is.

  im2col:  cols[(n, oh, ow), (i, j, c)] = big[n, oh*sh - pt + i, ow*sw - pl + j, c]   (0 outside)
           a (N*OH*OW, kh*kw*C) matrix, so that Conv2D is cols @ w.reshape(kh*kw*C, O)
  col2im:  big[n, h, w, c] = epilogue(sum of cols[(n, oh, ow), (i, j, c)] over the windows
           (oh, ow) and taps (i, j) that read (h, w)), the transpose of im2col

Cost: no FLOPs in im2col; it writes 4*N*OH*OW*kh*kw*C bytes and reads x about kh*kw/(sh*sw)
times (from L2). col2im reads as many and writes the image once; its adds are N*OH*OW*kh*kw*C.
Both are memory-bound.

Fast version: a grid-stride loop, a thread per element of the array written (cols for im2col,
the big image for col2im): neighbouring threads take neighbouring channels, so both the reads
and the writes of a warp are consecutive floats. col2im gathers instead of scattering: each big
element sums its few cols entries, taps in increasing (i, j), starting at the tap of its stride
phase and stepping by the stride, so no atomics and the same bits on every run; then adds the
bias and applies the activation (matmul.activate, the matmul epilogue's) in the same thread.
The plain references are the numba-cpu file's im2col_reference and col2im_reference (float64).
cols is large for a large batch (64 x 28x28 windows of 3x3x32: 58 MB), so the convolutions take
it a chunk of whole images at a time (image_chunks: at most WORKSPACE_FLOATS floats), every chunk
in one workspace (workspace): a pooled array stays taken until the op's call ends, so an array a
chunk would hold the memory of every chunk at once.
"""

import numpy as np
from numba import cuda, float32

from pyai.kernels.common import ACTIVATIONS
from pyai.kernels.numba_cpu.im2col import col2im_reference, im2col_reference  # noqa: F401  (the references)
from pyai.kernels.numba_cuda import THREADS, grid_size
from pyai.kernels.numba_cuda.buffers import device_array
from pyai.kernels.numba_cuda.matmul import activate, no_bias

WORKSPACE_FLOATS = 1 << 26   # the most floats of cols at once (256 MB); the rest in later chunks


@cuda.jit
def im2col_kernel(big, g, cols):
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    depth = cols.shape[1]
    windows = out_height * out_width
    for index in range(cuda.grid(1), cols.size, cuda.gridsize(1)):
        row, k = index // depth, index % depth
        n, window = row // windows, row % windows
        tap, c = k // channels, k % channels
        h = window // out_width * sh - pt + tap // kw
        w = window % out_width * sw - pl + tap % kw
        value = float32(0.0)
        if 0 <= h < height and 0 <= w < width:
            value = big[n, h, w, c]
        cols[row, k] = value


@cuda.jit
def col2im_kernel(cols, g, bias, has_bias, activation, alpha, big):
    """big (flat, N*H*W*C) = epilogue(col2im(cols))."""
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    for index in range(cuda.grid(1), big.size, cuda.gridsize(1)):
        pixel, c = index // channels, index % channels
        n, h, w = pixel // (height * width), pixel // width % height, pixel % width
        total = float32(0.0)
        for i in range((h + pt) % sh, kh, sh):   # the taps whose window row lands on h
            oh = (h + pt - i) // sh
            if h + pt - i >= 0 and oh < out_height:
                for j in range((w + pl) % sw, kw, sw):
                    ow = (w + pl - j) // sw
                    if w + pl - j >= 0 and ow < out_width:
                        total += cols[(n * out_height + oh) * out_width + ow, (i * kw + j) * channels + c]
        if has_bias:
            total += bias[c]
        big[index] = activate(total, activation, alpha)


def image_chunks(g, images):
    """(first image, images) of each chunk whose cols (images * OH * OW, kh*kw*C) has at most
    WORKSPACE_FLOATS floats (one image at least), in order."""
    size = max(1, min(images, WORKSPACE_FLOATS // max(g.windows * g.depth, 1)))
    return [(first, min(size, images - first)) for first in range(0, images, size)]


def workspace(g, images):
    """Room for the cols of the largest chunk of `images` images (image_chunks), pooled: every
    chunk's in turn."""
    return device_array((image_chunks(g, images)[0][1] * g.windows, g.depth), np.float32)


def weight_pages(dw_rows, chunks):
    """Where each chunk's product of dw (kh*kw*C, O) goes: dw itself for one chunk, else a page of
    its own in a new (chunks, kh*kw*C, O) array, which matmul.sum_pages then adds into dw."""
    if chunks == 1:
        return dw_rows.reshape(1, *dw_rows.shape)
    return device_array((chunks, *dw_rows.shape), np.float32)


# big (N, H, W, C): float32 device array; g its Geometry -> cols (N*OH*OW, kh*kw*C), written into
# the first rows of `space` (workspace), or big itself seen as rows for a 1x1 kernel at stride 1,
# whose windows are its pixels
def im2col(big, g, space):
    rows = big.shape[0] * g.windows
    if g.is_pointwise():
        return big.reshape(rows, g.channels)
    cols = space[:rows]
    im2col_kernel[grid_size(cols.size), THREADS](big, tuple(g), cols)
    return cols


# cols (images*OH*OW, kh*kw*C): float32 device array; g the Geometry; bias (C,) or None
#   -> big (images, H, W, C) = epilogue(col2im(cols)), written into `big`
def col2im(cols, g, big, bias=None, activation=None, alpha=0.0):
    col2im_kernel[grid_size(big.size), THREADS](cols, tuple(g), no_bias() if bias is None else bias,
                                                bias is not None, ACTIVATIONS[activation], np.float32(alpha),
                                                big.reshape(big.size))
    return big
