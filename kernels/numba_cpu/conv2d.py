"""Conv2D forward: y = activation(conv(x, w) + bias), NHWC, float32, on the CPU.

Shapes (Keras's layouts): x is (N, H, W, C), w is (kh, kw, C, O), bias is (O,), y is
(N, OH, OW, O) with OH, OW as Keras computes them for the stride and 'same' or 'valid' padding
(kernels/common.py):
    y[n, oh, ow, o] = sum over i, j, c of x[n, oh*sh - pt + i, ow*sw - pl + j, c] w[i, j, c, o]
Cost: 2*N*OH*OW*kh*kw*C*O FLOPs; at least 4*(N*H*W*C + kh*kw*C*O + N*OH*OW*O) bytes.

The fast version is an implicit GEMM on the blocked matmul (implicit_gemm.py): y as an
(N*OH*OW, O) matrix is windows(x) @ w.reshape(kh*kw*C, O) + bias, activated in the matmul's
epilogue, the windows packed straight from x into the matmul's L2-resident panels, WIDTH
channels of a pixel at a time (no im2col matrix in memory). Where 'same' padding puts taps of
the border windows outside the image and skipping them pays (BORDER_FLOPS_A_FLOAT), the windows
go in grids of the taps they read, each grid multiplying only its taps (border_plan). An image
of fewer than WIDTH channels (1 for a grayscale image, 3 for RGB) is computed directly when its
windows are short (conv2d_few_inputs.py: a 3x3 kernel over 1 or 3 channels), else copied into
windows, a chunk of whole images at a time (im2col.py), and multiplied by fused_matmul. A 1x1
kernel at stride 1 is a plain matmul: x itself is the windows matrix. A layer of at most
DIRECT_MAX_OUT output channels, which would use a sliver of the matmul's register tile, is
computed directly (conv2d_direct.py).
"""

import collections
import functools

import numpy as np

from pyai.kernels.common import ACTIVATIONS
from pyai.kernels.numba_cpu import memory
from pyai.kernels.numba_cpu.conv2d_direct import DIRECT_MAX_OUT, direct_forward
from pyai.kernels.numba_cpu.conv2d_few_inputs import few_inputs, few_inputs_forward
from pyai.kernels.numba_cpu.im2col import geometry, im2col, im2col_reference, image_chunks
from pyai.kernels.numba_cpu.implicit_gemm import (PACKED_MIN_CHANNELS, Windows, grids_layout, grids_product,
                                                   window_product)
from pyai.kernels.numba_cpu.leaky_relu import leaky_relu_gradient_in_place
from pyai.kernels.numba_cpu.matmul import fused_matmul, matmul_reference, numba_threads


def conv2d_reference(x, w, bias, stride, padding, activation=None, alpha=0.2):
    """The plain version the kernel is tested against (float64)."""
    g = geometry(x.shape[1:], w.shape[:2], stride, padding)
    y = matmul_reference(im2col_reference(x.astype(np.float64), g), w.reshape(g.depth, -1), bias,
                         activation, alpha)
    return y.reshape(x.shape[0], g.out_height, g.out_width, w.shape[3])


@functools.lru_cache(maxsize=64)   # a layer's, every call: its tap arrays made once (5 us)
def conv_windows(g):
    """The windows that Geometry g's outputs read from its big image: its im2col matrix."""
    return Windows(g.height, g.width, g.channels, g.out_height, g.out_width,
                   (g.stride_height, g.stride_width), np.arange(g.kernel_height) - g.pad_top,
                   np.arange(g.kernel_width) - g.pad_left)


# Where 'same' padding leaves some windows' taps outside the image, the windows go in grids of
# the same taps (the interior, each border band, each corner), each multiplying only the taps
# it has, all in one parallel region (implicit_gemm.grids_product), where the FLOPs skipped are
# at least BORDER_FLOPS_A_FLOAT for each float of the border grids' B that every thread packs
# besides the interior's. Old and new in turn (AMD EPYC Zen 5, 2 threads, best of 10-60, ms): a
# 14x14x64 -> 7x7x128 stride-2 conv over 128 images (its last row and column read 3 of their 9
# taps from padding: 9.3% of the FLOPs, 328 a float) 1.89-1.90 -> 1.80-1.81; 16 x 56x56x64 -> 64
# (2.4%, 271) 7.55-7.57 -> 7.45-7.52; split, 8 x 28x28x128 -> 256 (4.7%, 67) 7.49 -> 8.16-8.26 and
# 16 x 14x14x256 -> 512 (6.6%, 47) 15.08-15.12 -> 15.57-15.71, so those stay whole.
BORDER_FLOPS_A_FLOAT = 160
BorderPlan = collections.namedtuple("BorderPlan", "layout b_starts run_rows run_stride skipped_taps border_taps")


def tap_bands(size, out_size, stride, pad, kernel):
    """Runs of outputs along one axis that read the same taps inside the image: (first output,
    count, first tap, end tap) each."""
    bands = []
    for o in range(out_size):
        first, end = max(0, pad - o * stride), min(kernel, size + pad - o * stride)
        if bands and bands[-1][2:] == [first, end]:
            bands[-1][1] += 1
        else:
            bands.append([o, 1, first, end])
    return bands


@functools.lru_cache(maxsize=64)
def border_plan(g):
    """The grids of windows of the same taps inside the image, as grids_layout's arrays; where
    each grid's B starts in w seen as (kh*kw*C, O) (`b_starts`, in rows), in runs of `run_rows`
    rows (its taps in a row of the kernel, C rows each) `run_stride` rows apart (a kernel row's
    kw*C): each grid packs its taps from where they lie in w (implicit_gemm.grids_product's
    runs). Gathered into a B of their own first (2.8x w for a 3x3 kernel's four grids), they had
    cost each of a DCGAN step's three border products 0.06-0.11 ms more (AMD EPYC Zen 5, medians
    of 30 steps, two rounds). Then the taps an image's windows skip and the taps of every grid
    but the largest. None where every window reads only the image, or a window none of it."""
    row_bands = tap_bands(g.height, g.out_height, g.stride_height, g.pad_top, g.kernel_height)
    col_bands = tap_bands(g.width, g.out_width, g.stride_width, g.pad_left, g.kernel_width)
    grids, starts, runs, sizes, windows = [], [], [], [], []
    for r0, rows, i0, i1 in row_bands:
        for c0, cols, j0, j1 in col_bands:
            if i1 <= i0 or j1 <= j0:
                return None
            grids.append(Windows(g.height, g.width, g.channels, rows, cols, (g.stride_height, g.stride_width),
                                 np.arange(i0, i1) - g.pad_top + r0 * g.stride_height,
                                 np.arange(j0, j1) - g.pad_left + c0 * g.stride_width,
                                 (g.out_height, g.out_width, r0, c0, 1, 1)))
            starts.append((i0 * g.kernel_width + j0) * g.channels)
            runs.append((j1 - j0) * g.channels)
            sizes.append((i1 - i0) * (j1 - j0))
            windows.append(rows * cols)
    if len(grids) == 1:
        return None
    skipped = sum(count * (g.kernel_height * g.kernel_width - size) for count, size in zip(windows, sizes))
    return BorderPlan(grids_layout(grids), np.array(starts, dtype=np.int64), np.array(runs, dtype=np.int64),
                      g.kernel_width * g.channels, skipped, sum(sizes) - sizes[int(np.argmax(windows))])


def splits_borders(plan, images, threads):
    """Whether border_plan's grids pay: the FLOPs skipped (2 a tap, channel and output) at least
    BORDER_FLOPS_A_FLOAT for each float of the border grids' B, packed on every thread."""
    return plan is not None and 2 * images * plan.skipped_taps >= BORDER_FLOPS_A_FLOAT * threads * plan.border_taps


def border_product(x, w, g, bias, activation, alpha, y_rows, factors, plan):
    """y_rows = epilogue(windows(x) @ w), each grid of border_plan's multiplying the taps it has."""
    out_channels = w.shape[3]
    grids_product(x, plan.layout, w, plan.b_starts * out_channels, y_rows, bias, activation, alpha, factors,
                  (plan.run_rows, plan.run_stride * out_channels))


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
        plan = border_plan(g)
        if not splits_borders(plan, x.shape[0], numba_threads()):
            window_product(x, conv_windows(g), weights, bias, activation, alpha, out=y_rows, leaky_relu_output=factors)
        else:
            border_product(x, w, g, bias, activation, alpha, y_rows, factors, plan)
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
