"""What the convolution kernels share: im2col and its gather-sum inverse col2im, and the workspace
they fill (the geometry of a convolution is kernels/common.py's).

A convolution here always maps a "big" image (N, H, W, C) to a "small" one (N, OH, OW, O) through
a kh x kw window moved by (sh, sw), with pt rows and pl columns of zeros before the image (the
rest after it): Conv2D's input is the big image, Conv2DTranspose's output is (the transpose runs
the same map backwards). Each op turns into matrix products on the blocked matmul (matmul.py):

  im2col:  cols[(n, oh, ow), (i, j, c)] = big[n, oh*sh - pt + i, ow*sw - pl + j, c]   (0 outside)
           a (N*OH*OW, kh*kw*C) matrix, so that Conv2D is cols @ w.reshape(kh*kw*C, O)
  col2im:  big[n, h, w, c] = sum of cols[(n, oh, ow), (i, j, c)] over every window position
           that reads (h, w): the transpose of im2col, so Conv2DTranspose is
           col2im(x.reshape(N*OH*OW, O) @ w.reshape(kh*kw*C, O)^T)

col2im gathers (each big pixel sums the few columns that touch it) instead of scattering, so the
threads write disjoint rows and the sum has one fixed order. It finishes each row of pixels with
the bias + activation epilogue of the matmul (apply_epilogue) while the row is in L1.
Most products never store cols: implicit_gemm.py packs the windows straight from the image.
im2col itself serves images of fewer channels than a vector (where their windows are not
short enough to sum directly), col2im the strided transposes whose stride does not divide the
kernel or whose input has fewer channels than a vector.

cols can be large (batch 64 at 56x56x64 with a 3x3 kernel: 460 MB), so the ops run it a chunk of
whole images at a time, each chunk's cols in a workspace of about WORKSPACE_FLOATS floats (at
least one image's) that a thread keeps and reuses from call to call.
Cost: im2col writes 4*N*OH*OW*kh*kw*C bytes and reads the image once or a few times (from cache);
col2im reads as many and writes the image.
"""

import threading

import numba
import numpy as np

from pyai.kernels.common import geometry  # noqa: F401  (in common.py since the numba-cuda kernels share it; the
                                          # conv files and tests import it from here)
from pyai.kernels.numba_cpu.matmul import apply_epilogue
from pyai.kernels.numba_cpu.matmul_micro import NO_BIAS

WORKSPACE_FLOATS = 1 << 18   # 1 MB per workspace: a chunk's cols stay in L2 between its passes


def image_chunks(images, g):
    """(first, end) runs of whole images whose cols fit in the workspace (at least one image)."""
    per_chunk = max(1, WORKSPACE_FLOATS // (g.windows * g.depth))
    return [(first, min(images, first + per_chunk)) for first in range(0, images, per_chunk)]


_workspaces = threading.local()


def workspace(slot, rows, columns):
    """A (rows, columns) float32 matrix over this thread's buffer `slot`, grown when too small;
    its contents are left over from the last use."""
    buffers = _workspaces.__dict__.setdefault("buffers", {})
    if buffers.get(slot) is None or buffers[slot].size < rows * columns:
        buffers[slot] = np.empty(rows * columns, dtype=np.float32)
    return buffers[slot][:rows * columns].reshape(rows, columns)


def padded_shape(images, g):
    """The big image with its zeros: room for the image after the top/left padding and for
    every window."""
    return (images, max(g.pad_top + g.height, (g.out_height - 1) * g.stride_height + g.kernel_height),
            max(g.pad_left + g.width, (g.out_width - 1) * g.stride_width + g.kernel_width), g.channels)


def im2col_reference(big, g):
    """cols of every image, in float64."""
    n = big.shape[0]
    padded = np.zeros(padded_shape(n, g))
    padded[:, g.pad_top:g.pad_top + g.height, g.pad_left:g.pad_left + g.width] = big
    windows = [padded[:, i:i + g.stride_height * g.out_height:g.stride_height,
                      j:j + g.stride_width * g.out_width:g.stride_width]
               for i in range(g.kernel_height) for j in range(g.kernel_width)]
    return np.stack(windows, axis=3).reshape(n * g.windows, g.depth)


def col2im_reference(cols, g, images):
    """The transpose of im2col_reference, in float64: (images, H, W, C)."""
    padded = np.zeros(padded_shape(images, g))
    windows = cols.reshape(images, g.out_height, g.out_width, g.kernel_height, g.kernel_width, g.channels)
    for i in range(g.kernel_height):
        for j in range(g.kernel_width):
            padded[:, i:i + g.stride_height * g.out_height:g.stride_height,
                   j:j + g.stride_width * g.out_width:g.stride_width] += windows[:, :, :, i, j]
    return padded[:, g.pad_top:g.pad_top + g.height, g.pad_left:g.pad_left + g.width]


@numba.njit(parallel=True, cache=True)
def im2col_kernel(big, first, end, g, cols):
    """cols[(n - first, oh, ow), (i, j, c)] for images first..end-1, one window row per task."""
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    for task in numba.prange((end - first) * out_height):
        n, oh = first + task // out_height, task % out_height
        for ow in range(out_width):
            out = cols[task * out_width + ow]
            for i in range(kh):
                h = oh * sh - pt + i
                for j in range(kw):
                    w = ow * sw - pl + j
                    start = (i * kw + j) * channels
                    if 0 <= h < height and 0 <= w < width:
                        out[start:start + channels] = big[n, h, w]
                    else:
                        out[start:start + channels] = 0.0


@numba.njit(parallel=True, cache=True)
def col2im_kernel(cols, first, end, g, big_rows, bias, has_bias, activation, alpha):
    """big_rows[(n, h, w), c] = epilogue(sum of the cols entries that read (n, h, w, c)) for images
    first..end-1 (big_rows is the big image as an (N*H*W, C) matrix), one pixel row per task."""
    (height, width, channels, out_height, out_width, kh, kw, sh, sw, pt, pl) = g
    for task in numba.prange((end - first) * height):
        n, h = first + task // height, task % height
        row0 = (n * height + h) * width
        big_rows[row0:row0 + width] = 0.0
        for i in range(kh):
            t = h + pt - i
            if t < 0 or t % sh != 0 or t // sh >= out_height:
                continue
            window_row = (task // height * out_height + t // sh) * out_width
            for w in range(width):
                out = big_rows[row0 + w]
                for j in range(kw):
                    u = w + pl - j
                    if u < 0 or u % sw != 0 or u // sw >= out_width:
                        continue
                    start = (i * kw + j) * channels
                    out += cols[window_row + u // sw, start:start + channels]
        if has_bias or activation != 0:
            apply_epilogue(big_rows, row0, 0, width, channels, bias, has_bias, activation, alpha)


def im2col(big, g, first, end, slot="cols"):
    """The cols of images first..end-1 in workspace `slot`."""
    cols = workspace(slot, (end - first) * g.windows, g.depth)
    im2col_kernel(big, first, end, g, cols)
    return cols


def col2im(cols, g, first, end, big, bias=None, activation=0, alpha=0.0):
    """big[first:end] = epilogue(col2im(cols)), in place (big C-contiguous (N, H, W, C))."""
    col2im_kernel(cols, first, end, g, big.reshape(-1, g.channels),
                  NO_BIAS if bias is None else bias, bias is not None, activation, np.float32(alpha))
