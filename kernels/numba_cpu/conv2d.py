"""Conv2D forward: y = activation(conv(x, w) + bias), NHWC, float32, on the CPU.

Shapes (Keras's layouts): x is (N, H, W, C), w is (kh, kw, C, O), bias is (O,), y is
(N, OH, OW, O) with OH, OW as Keras computes them for the stride and 'same' or 'valid' padding
(kernels/common.py):
    y[n, oh, ow, o] = sum over i, j, c of x[n, oh*sh - pt + i, ow*sw - pl + j, c] w[i, j, c, o]
Cost: 2*N*OH*OW*kh*kw*C*O FLOPs; at least 4*(N*H*W*C + kh*kw*C*O + N*OH*OW*O) bytes.

The fast version is an implicit GEMM on the blocked matmul (implicit_gemm.py): y as an
(N*OH*OW, O) matrix is windows(x) @ w.reshape(kh*kw*C, O) + bias, activated in the matmul's
epilogue, the windows packed straight from x into the matmul's L2-resident panels, WIDTH
channels of a pixel at a time (no im2col matrix in memory). An image of fewer channels than
that (1 for a grayscale image, 3 for RGB) is computed directly when its windows are short
(conv2d_few_inputs.py: a 3x3 kernel over 1 or 3 channels), else copied into windows, a chunk of
whole images at a time (im2col.py), and multiplied by fused_matmul. A 1x1 kernel at stride 1 is a
plain matmul: x itself is the windows matrix. A layer of at most DIRECT_MAX_OUT output
channels, which would use a sliver of the matmul's register tile, is computed directly
(conv2d_direct.py).
"""

import numpy as np

from pyai.kernels.common import ACTIVATIONS
from pyai.kernels.numba_cpu import memory
from pyai.kernels.numba_cpu.conv2d_direct import DIRECT_MAX_OUT, direct_forward
from pyai.kernels.numba_cpu.conv2d_few_inputs import few_inputs, few_inputs_forward
from pyai.kernels.numba_cpu.im2col import geometry, im2col, im2col_reference, image_chunks
from pyai.kernels.numba_cpu.implicit_gemm import PACKED_MIN_CHANNELS, Windows, window_product
from pyai.kernels.numba_cpu.leaky_relu import leaky_relu_gradient_in_place
from pyai.kernels.numba_cpu.matmul import fused_matmul, matmul_reference


def conv2d_reference(x, w, bias, stride, padding, activation=None, alpha=0.2):
    """The plain version the kernel is tested against (float64)."""
    g = geometry(x.shape[1:], w.shape[:2], stride, padding)
    y = matmul_reference(im2col_reference(x.astype(np.float64), g), w.reshape(g.depth, -1), bias,
                         activation, alpha)
    return y.reshape(x.shape[0], g.out_height, g.out_width, w.shape[3])


def conv_windows(g):
    """The windows that Geometry g's outputs read from its big image: its im2col matrix."""
    return Windows(g.height, g.width, g.channels, g.out_height, g.out_width,
                   (g.stride_height, g.stride_width), np.arange(g.kernel_height) - g.pad_top,
                   np.arange(g.kernel_width) - g.pad_left)


# x is (N, H, W, C), w (kh, kw, C, O), bias (O,) or None -> y (N, OH, OW, O). With leaky_relu_output
# z (y's shape) and neither bias nor activation: y times z's leaky ReLU gradient of slope alpha (a
# Conv2DTranspose's input gradient made the pre-activation gradient of the layer below), in the
# products' epilogue, else in a pass after
def conv2d_forward(x, w, bias, stride, padding, activation, alpha, leaky_relu_output=None):
    g = geometry(x.shape[1:], w.shape[:2], stride, padding)
    out_channels = w.shape[3]
    y = memory.empty((x.shape[0], g.out_height, g.out_width, out_channels))
    weights = w.reshape(g.depth, out_channels)
    y_rows = y.reshape(-1, out_channels)
    factors = None if leaky_relu_output is None else leaky_relu_output.reshape(-1, out_channels)
    if out_channels <= DIRECT_MAX_OUT:
        direct_forward(x, w, bias, g, ACTIVATIONS[activation], alpha, y)
    elif g.is_pointwise():
        fused_matmul(x.reshape(-1, g.channels), weights, False, False, bias, activation, alpha, out=y_rows,
                     leaky_relu_output=factors)
        return y
    elif g.channels >= PACKED_MIN_CHANNELS:
        window_product(x, conv_windows(g), weights, bias, activation, alpha, out=y_rows, leaky_relu_output=factors)
        return y
    elif few_inputs(g, out_channels):
        few_inputs_forward(x, w, bias, g, ACTIVATIONS[activation], alpha, y)
    else:
        for first, end in image_chunks(x.shape[0], g):
            rows = slice(first * g.windows, end * g.windows)
            fused_matmul(im2col(x, g, first, end), weights, False, False, bias, activation, alpha, out=y_rows[rows],
                         leaky_relu_output=None if factors is None else factors[rows])
        return y
    if factors is not None:
        leaky_relu_gradient_in_place(y, factors, alpha)
    return y
