"""Conv2DTranspose forward: y = activation(conv_transpose(x, w) + bias), NHWC, float32, on the CPU.

Shapes (Keras's layouts): x is (N, H, W, I), w is (kh, kw, O, I), bias is (O,), y is
(N, OH, OW, O) with OH = H*sh ('same') or H*sh + max(kh - sh, 0) ('valid'), as Keras computes it
(kernels/common.py). The op is the transpose (the input gradient) of the Conv2D that maps y's
shape back to x's with the same kernel, stride and padding: every input pixel spreads
x[n, h, w, :] @ w[i, j].T over the output window it would have been computed from:
    y[n, h*sh - pt + i, w*sw - pl + j, o] += sum over c of x[n, h, w, c] w[i, j, o, c]
Cost: 2*N*H*W*kh*kw*O*I FLOPs; at least 4*(N*H*W*I + kh*kw*O*I + N*OH*OW*O) bytes.

The fast version splits y into its sh*sw stride phases: the output pixels (ph + sh*a, pw + sw*b)
of one phase are reached only by the kernel taps i = ph + pt (mod sh), j = pw + pl (mod sw),
each from input pixel (a + (ph + pt - i)/sh, b + (pw + pl - j)/sw). So a phase is a stride-1
convolution of x with a sub-kernel of about (kh/sh) x (kw/sw) taps, an implicit GEMM
(implicit_gemm.py): no product with inserted zeros and no scatter of overlapping windows. A 4x4
kernel at stride 2 is four 2x2 convolutions of depth 4*I. The phases of a chunk of whole images
are computed into a workspace in L2, then interleaved into y's rows, the bias + activation
epilogue applied to each row while it is in L1. At stride 1 the one phase is y itself.
The same routine computes a Conv2D's input gradient (conv2d_backward.py).
"""

import numba
import numpy as np

from pyai.kernels.common import ACTIVATIONS, activation_reference, conv_transpose_output_size
from pyai.kernels.numba_cpu import im2col as workspaces
from pyai.kernels.numba_cpu.im2col import col2im_reference, geometry, workspace
from pyai.kernels.numba_cpu.implicit_gemm import Windows, window_product
from pyai.kernels.numba_cpu.matmul import NO_BIAS, apply_epilogue


def transpose_geometry(x_shape, w_shape, stride, padding):
    """The Geometry of the Conv2D whose transpose this is: from y's (OH, OW, O) to x's (H, W)."""
    (_, height, width, _), (kh, kw, out_channels, _) = x_shape, w_shape
    big = (conv_transpose_output_size(height, kh, stride[0], padding),
           conv_transpose_output_size(width, kw, stride[1], padding), out_channels)
    g = geometry(big, (kh, kw), stride, padding)
    assert (g.out_height, g.out_width) == (height, width), (g, x_shape)
    return g


def conv2d_transpose_reference(x, w, bias, stride, padding, activation=None, alpha=0.2):
    """The plain version the kernel is tested against (float64)."""
    g = transpose_geometry(x.shape, w.shape, stride, padding)
    cols = x.astype(np.float64).reshape(-1, w.shape[3]) @ w.reshape(g.depth, -1).T.astype(np.float64)
    y = col2im_reference(cols, g, x.shape[0])
    return activation_reference(y if bias is None else y + bias, activation, alpha)


def phase_taps(phase, pad, kernel, stride):
    """The kernel taps that reach output phase `phase` along one axis, and the input offset each
    reads from: tap i reaches output ph + stride*a from input a + (ph + pad - i) / stride."""
    taps = np.arange((phase + pad) % stride, kernel, stride)
    return taps, (phase + pad - taps) // stride


def phases(g, w):
    """[(phase rows, phase columns, Windows of the small image, sub-kernel (taps*small, big))] of
    Geometry g's big image, w (kh, kw, big channels, small channels); phases past the image left out."""
    result = []
    small_channels = w.shape[3]
    for ph in range(min(g.stride_height, g.height)):
        rows, row_offsets = phase_taps(ph, g.pad_top, g.kernel_height, g.stride_height)
        for pw in range(min(g.stride_width, g.width)):
            cols, col_offsets = phase_taps(pw, g.pad_left, g.kernel_width, g.stride_width)
            windows = Windows(g.out_height, g.out_width, small_channels, -(-(g.height - ph) // g.stride_height),
                              -(-(g.width - pw) // g.stride_width), (1, 1), row_offsets, col_offsets)
            kernel = np.ascontiguousarray(w[rows][:, cols].transpose(0, 1, 3, 2)).reshape(-1, g.channels)
            result.append((ph, pw, windows, kernel))
    return result


@numba.njit(parallel=True, cache=True)
def interleave_kernel(phase_rows, starts, g, first, end, big_rows, bias, has_bias, activation, alpha):
    """big_rows[(n, h, w)] = epilogue(phase (h % sh, w % sw)'s row (n - first, h // sh, w // sw))
    for images first..end-1; phase q's rows start at phase_rows[starts[q]]."""
    (height, width, channels, _, _, _, _, sh, sw, _, _) = g
    for task in numba.prange((end - first) * height):
        n, h = task // height, task % height
        ph = h % sh
        grid_height = -(-(height - ph) // sh)
        row0 = ((first + n) * height + h) * width
        for w in range(width):
            pw = w % sw
            grid_width = -(-(width - pw) // sw)
            big_rows[row0 + w] = phase_rows[starts[ph * sw + pw] + (n * grid_height + h // sh) * grid_width + w // sw]
        if has_bias or activation != 0:
            apply_epilogue(big_rows, row0, 0, width, channels, bias, has_bias, activation, alpha)


def transposed_conv(small, w, g, bias, activation, alpha, big):
    """big = epilogue(the transpose of Geometry g's convolution, applied to small), in place;
    w is (kh, kw, big channels, small channels)."""
    big_rows = big.reshape(-1, g.channels)
    parts = phases(g, w)
    if len(parts) == 1:
        window_product(small, parts[0][2], parts[0][3], bias, activation, alpha, out=big_rows)
        return
    per_image = g.height * g.width * g.channels
    images = max(1, min(small.shape[0], workspaces.WORKSPACE_FLOATS // per_image))
    sizes = [windows.per_image for _, _, windows, _ in parts]
    starts = np.zeros(g.stride_height * g.stride_width, dtype=np.int64)
    for first in range(0, small.shape[0], images):
        end = min(small.shape[0], first + images)
        phase_rows = workspace("phases", (end - first) * sum(sizes), g.channels)
        row = 0
        for (ph, pw, windows, kernel), size in zip(parts, sizes):
            starts[ph * g.stride_width + pw] = row
            window_product(small[first:end], windows, kernel, out=phase_rows[row:row + (end - first) * size])
            row += (end - first) * size
        interleave_kernel(phase_rows, starts, g, first, end, big_rows, NO_BIAS if bias is None else bias,
                          bias is not None, ACTIVATIONS[activation], np.float32(alpha))


# x is (N, H, W, I), w (kh, kw, O, I), bias (O,) or None -> y (N, OH, OW, O)
def conv2d_transpose_forward(x, w, bias, stride, padding, activation, alpha):
    g = transpose_geometry(x.shape, w.shape, stride, padding)
    y = np.empty((x.shape[0], g.height, g.width, g.channels), dtype=np.float32)
    transposed_conv(x, w, g, bias, activation, alpha, y)
    return y
