"""The fused matmul without packing or blocking, for a first run: C = activation(op(A) @ op(B) + bias).

Shapes as in matmul.py: op(A) (M, K), op(B) (K, N), bias (N,), C (M, N), float32. Cost: 2*M*N*K
FLOPs; B is read once per row of C (4*M*K*N bytes from cache), so it is slow on large products.
It compiles in ~1 CPU s where matmul.py's loops and their packing take ~5: the numba-cpu backend
runs it while a worker process compiles matmul.py into Numba's cache (pyai.warmup), then
switches to matmul.py.

Each element is summed as matmul.py's loops sum it: K cut into KC-deep slices; within a slice, a
fused multiply-add per k in order, from zero, WIDTH columns at a time (B's ragged or transposed
columns gathered into a vector first); the slices' sums added to C in order; then the same
epilogue (epilogue.py). So both give the same floats, bit for bit (a test checks).

    for each row i of C, each WIDTH columns j:
        for each KC slice of k:  acc = 0;  acc = fma(A[i, p], B[p, j:j+WIDTH], acc) for p in it
                                 C[i, j:j+WIDTH] = acc (the first slice), or += acc
        bias and activation on C[i, j:j+WIDTH]
"""

import numba
import numpy as np
from numba import boolean, float32, int64, void

from pyai.kernels.common import ACTIVATIONS
from pyai.kernels.numba_cpu import memory
from pyai.kernels.numba_cpu.epilogue import (FASTMATH, GELU_DERIVATIVE, LEAKY_RELU_GRAD, NONE, READ_ONLY, TIMES,
                                             apply_epilogue)
from pyai.kernels.numba_cpu.simd import WIDTH, add, fma, load, splat, store, zeros

KC = 256   # blocking.KC, the depth of matmul.py's slices (blocking.py compiles the micro-kernel
           # when imported; a test checks the two are equal)
NO_BIAS = np.zeros(1, dtype=np.float32)


def plain_gemm(a, a_row_stride, a_col_stride, b, b_row_stride, b_col_stride, c, k, bias, has_bias,
               activation, alpha, lanes):
    """c (M x N) = epilogue(A @ B); A and B are flat arrays read through their strides; lanes,
    WIDTH floats, holds a gathered row of B or a ragged row of C."""
    m, n = c.shape
    for i in range(m):
        for col in range(0, n, WIDTH):
            cols = min(WIDTH, n - col)
            in_place = cols == WIDTH and b_col_stride == 1
            for depth0 in range(0, k, KC):
                acc = zeros()
                for p in range(depth0, min(k, depth0 + KC)):
                    if not in_place:
                        for j in range(WIDTH):
                            lanes[j] = b[p * b_row_stride + (col + j) * b_col_stride] if j < cols else 0.0
                    row_of_b = load(b, p * b_row_stride + col) if in_place else load(lanes, 0)
                    acc = fma(splat(a[i * a_row_stride + p * a_col_stride]), row_of_b, acc)
                if cols == WIDTH:
                    start = i * n + col
                    store(c, start, acc if depth0 == 0 else add(load(c, start), acc))
                else:
                    store(lanes, 0, acc)
                    for j in range(cols):
                        c[i, col + j] = lanes[j] if depth0 == 0 else c[i, col + j] + lanes[j]
            if has_bias or activation != NONE:
                apply_epilogue(c, i, col, 1, cols, bias, has_bias, activation, alpha)


plain_gemm = numba.njit(void(READ_ONLY, int64, int64, READ_ONLY, int64, int64, float32[:, ::1], int64, READ_ONLY,
                             boolean, int64, float32, float32[::1]), fastmath=FASTMATH, cache=True)(plain_gemm)


def fused_matmul(a, b, transpose_a, transpose_b, bias, activation, alpha, out=None, times=None,
                 leaky_relu_output=None, gelu_floats=None):
    """activation(op(a) @ op(b) + bias) for C-contiguous float32 a and b (checked by pyai.ops),
    written into `out` (M, N) when given; with `times`, (op(a) @ op(b)) * times, with
    leaky_relu_output, the product times that output's leaky ReLU gradient, with gelu_floats (the
    bias, then room for the derivative), gelu and its derivative (matmul.py's)."""
    m, k = (a.shape[1], a.shape[0]) if transpose_a else a.shape
    n = b.shape[0] if transpose_b else b.shape[1]
    a_strides = (1, m) if transpose_a else (k, 1)
    b_strides = (1, k) if transpose_b else (n, 1)
    c = memory.empty((m, n)) if out is None else out
    has_bias = bias is not None
    floats, code = (bias if has_bias else NO_BIAS), ACTIVATIONS[activation]
    if times is not None:
        floats, code = times.reshape(-1), TIMES
    if leaky_relu_output is not None:
        floats, code = leaky_relu_output.reshape(-1), LEAKY_RELU_GRAD
    if gelu_floats is not None:
        floats, has_bias, code = gelu_floats, True, GELU_DERIVATIVE
    plain_gemm(a.reshape(-1), *a_strides, b.reshape(-1), *b_strides, c, k, floats, has_bias, code, np.float32(alpha),
               np.empty(WIDTH, np.float32))
    return c


def matmul(a, b, transpose_a, transpose_b, out=None):
    return fused_matmul(a, b, transpose_a, transpose_b, None, None, 0.0, out=out)


def matmul_times(a, b, transpose_a, transpose_b, times, out=None):
    return fused_matmul(a, b, transpose_a, transpose_b, None, None, 0.0, out=out, times=times)


def matmul_leaky_relu_grad(a, b, transpose_a, transpose_b, y, alpha, out=None):
    return fused_matmul(a, b, transpose_a, transpose_b, None, None, alpha, out=out, leaky_relu_output=y)


def linear(x, w, bias, activation, alpha):
    return fused_matmul(x, w, False, False, bias, activation, alpha)


def linear_with_gelu_derivative(x, w, bias):
    m, n = x.shape[0], w.shape[1]
    floats = memory.empty((n + m * n,))
    floats[:n] = 0.0 if bias is None else bias
    return fused_matmul(x, w, False, False, None, None, 0.0, gelu_floats=floats), floats[n:].reshape(m, n)


# matmul.py's: x^T dy, then dy's column sums, the product of x with a column of ones appended
def weight_and_bias_grad(x, dy, out=None):
    ones = np.ones((x.shape[0], 1), np.float32)
    return fused_matmul(np.concatenate([x, ones], axis=1), dy, True, False, None, None, 0.0, out=out)
