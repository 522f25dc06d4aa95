"""The fused matmul's epilogue: bias and activation on a tile of C, in place, while it is in L1.

The matmul's whole tiles take the bias and leaky ReLU in registers as they are stored
(matmul_micro.finish_tile, the same float32 operations as here: a separate pass over each stored
tile cost 4-8% of a 1024 x 128 x N linear); this pass serves ragged tiles, ReLU and the rest.
Shared by the matmul's loops (matmul.py), the plain matmul of a first run (plain_matmul.py) and
the convolutions, so that each applies it in the same float32 operations. Per element: one add
(the bias, whole vectors at a time) and the activation (a compare and a multiply; an exp; a
tanh; GELU's polynomial and exp).
sigmoid, tanh and gelu are their elementwise ops' own float32 functions (sigmoid_scalar,
tanh_scalar, gelu_scalar: an exp in SIMD-friendly arithmetic, no libm call), in loops compiled
as those ops' kernels are, so they vectorize and give the same floats as the op applied after
the product. They cost ~25 FLOPs an element, so the matmul applies them to a whole block of C
(EXPENSIVE), where the loops run along rows hundreds of floats long, not a tile's 32: with
libm's scalar tanh, the GAN generator's last layer (64 x 1024 -> 784, tanh) spent more on its
epilogue than on its product.
TIMES, numba-cpu's own code past the shared ones, multiplies C element by element by a matrix of
C's shape that comes in the bias's place, flat (matmul.matmul_times): dy W^T times an activation's
derivative kept from the forward, a block of C at a time from L2, so that C goes to memory once,
already multiplied.
LEAKY_RELU_GRAD, numba-cpu's too, multiplies C by the gradient of a leaky ReLU whose output y (C's
shape, flat) comes in the bias's place: by 1 where y > 0, else by alpha. dy W^T, so multiplied, is
the layer below's d loss / d pre-activation (matmul.matmul_leaky_relu_grad), and its separate
pass (ops.leaky_relu_grad: dy if y > 0 else alpha * dy, the same floats) is not made.
GELU_DERIVATIVE, numba-cpu's too, is gelu with its derivative kept: the bias's place holds the
bias (N floats) and then room for gelu'(C + bias) (C's shape, flat); C becomes gelu(C + bias).
A transformer's first MLP layer (matmul.linear_with_gelu_derivative), whose derivative its
backward's dy W^T is multiplied by (TIMES): each block of C gets its exps from L2 instead of
going to memory and coming back for gelu.py's pass (the same floats: gelu.chunk_exps and
gelu_from_exp make both). The room is written through the read-only slot (writable), the one
output there. A GPT step's four 2048 x 128 -> 512 layers (Intel Xeon, Emerald Rapids, 2 threads,
timed inside the steps, old and new alternating, 60 steps): linear + gelu 6.1 -> 5.4-5.6 ms in one
profile, the step's linear and gelu calls in all best 13.70 -> 13.18 ms, median 14.90 -> 14.73.
"""

import numba
import numpy as np
from numba import boolean, float32, int64, void
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic

from pyai.kernels.common import ACTIVATIONS
from pyai.kernels.numba_cpu.gelu import CHUNK, chunk_in_place, gelu_scalar
from pyai.kernels.numba_cpu.sigmoid import sigmoid_scalar
from pyai.kernels.numba_cpu.simd import (WIDTH, add, leaky, load, maximum, opaque, slp_vectorize, splat, store,
                                         wide_vectors, zeros)
from pyai.kernels.numba_cpu.tanh import tanh_scalar

FASTMATH = {"contract"}   # fused multiply-add only: no reassociation, IEEE infinities and NaN kept
READ_ONLY = numba.types.Array(float32, 1, "C", readonly=True)
NONE, LEAKY_RELU, RELU, SIGMOID, TANH, GELU = (ACTIVATIONS[name] for name in
                                               (None, "leaky_relu", "relu", "sigmoid", "tanh", "gelu"))
TIMES = max(ACTIVATIONS.values()) + 1   # C times the matrix in the bias's place (see above)
LEAKY_RELU_GRAD = TIMES + 1              # C times a leaky ReLU's gradient, its output y in the bias's place
GELU_DERIVATIVE = LEAKY_RELU_GRAD + 1    # gelu, and gelu' written after the bias in the bias's place
PER_ELEMENT = (TIMES, LEAKY_RELU_GRAD)   # with a matrix of C's shape, flat, in the bias's place
EXPENSIVE = (SIGMOID, TANH, GELU, GELU_DERIVATIVE, *PER_ELEMENT)


@intrinsic
def writable(typingctx, array):
    """The array itself, typed writable: GELU_DERIVATIVE's room for gelu', which comes in the
    read-only slot of the bias (every caller's slot takes a read-only bias too)."""
    def codegen(context, builder, signature, args):
        return impl_ret_borrowed(context, builder, signature.return_type, args[0])
    return array.copy(readonly=False)(array), codegen


def apply_epilogue(c, row, col, rows, cols, bias, has_bias, activation, alpha):
    """Bias and activation on the tile c[row:row+rows, col:col+cols], in place.

    Whole vectors (simd: the bias added, leaky ReLU or ReLU as a select, every lane stored), then
    the rest a float at a time. A select of what was loaded from the same place, as a loop of
    `c = c if c > 0 else alpha * c`, LLVM compiles to a masked store of the lanes that change
    (vmaskmovps), which AMD cores run a lane at a time: 0.8 ns a float in L1 (AMD EPYC Zen 3), and
    the DCGAN generator's 64 x 14x14x64 -> 28x28x32 transposed convolution spent 0.8 of its 1.2
    ms of interleave there. Stored at a simd.opaque offset, each vector is stored whole."""
    if has_bias or activation == LEAKY_RELU or activation == RELU:
        whole = cols // WIDTH * WIDTH
        slope = splat(alpha)
        for i in range(row, row + rows):
            start = i * c.shape[1] + col
            for j in range(0, whole, WIDTH):
                v = load(c, start + j)
                if has_bias:
                    v = add(v, load(bias, col + j))
                if activation == LEAKY_RELU:
                    v = leaky(v, slope)
                elif activation == RELU:
                    v = maximum(zeros(), v)
                store(c, opaque(start + j), v)
            for j in range(whole, cols):
                v = c[i, col + j] + bias[col + j] if has_bias else c[i, col + j]
                if activation == LEAKY_RELU:
                    v = v if v > 0 else alpha * v
                elif activation == RELU:
                    v = v if v > 0 else float32(0.0)
                c[i, col + j] = v
    if activation in EXPENSIVE:
        expensive_activation(c, row, col, rows, cols, activation, bias, alpha)


def expensive_activation(c, row, col, rows, cols, activation, factors, alpha):
    """sigmoid, tanh or gelu on the rectangle, one loop per activation along each row, or along
    the whole rectangle where it is whole rows of C, which lie end to end; or TIMES: the
    rectangle times its part of `factors`, flat with C's shape; or LEAKY_RELU_GRAD: times 1
    where that part (a leaky ReLU's output) is > 0, else alpha (a product, not a select of
    what was loaded: a select compiles to a masked store, see apply_epilogue); or
    GELU_DERIVATIVE: gelu, its derivative into `factors` past C's row of bias, CHUNK floats at a
    time in gelu.py's passes.
    A row at a time, a one-channel convolution's output (a DCGAN generator's tanh image, each
    row one float) took a loop of one float a row: its tanh cost 0.3-0.5 ms of a 0.9-1.2 ms
    layer (128 x 28x28x32 -> 1, AMD EPYC Zen 5, 2 threads); in one loop, 0.07 ms."""
    wide_vectors()
    flat = c.reshape(-1)
    whole_rows = col == 0 and cols == c.shape[1]   # one run of rows * cols floats: C's rows lie end to end
    runs, length = (1, rows * cols) if whole_rows else (rows, cols)
    exps = np.empty(CHUNK if activation == GELU_DERIVATIVE else 0, np.float32)
    for i in range(row, row + runs):
        start = i * c.shape[1] + col
        out = flat[start:start + length]
        if activation == GELU_DERIVATIVE:
            derivative = writable(factors)[c.shape[1] + start:][:length]
            for chunk in range(0, length, CHUNK):
                chunk_in_place(out, chunk, min(length, chunk + CHUNK), exps, derivative)
        elif activation in PER_ELEMENT:
            row_factors = factors[start:][:length]
            if activation == TIMES:
                for j in range(length):
                    out[j] = out[j] * row_factors[j]
            else:
                for j in range(length):
                    out[j] = out[j] * (float32(1.0) if row_factors[j] > 0 else alpha)
        elif activation == SIGMOID:
            for j in range(length):
                out[j] = sigmoid_scalar(out[j])
        elif activation == TANH:
            for j in range(length):
                out[j] = tanh_scalar(out[j])
        elif activation == GELU:
            for j in range(length):
                out[j] = gelu_scalar(out[j])


with slp_vectorize():
    # compiled as sigmoid.py's, tanh.py's and gelu.py's kernels: no divide-by-zero check, FMAs
    expensive_activation = numba.njit(void(float32[:, ::1], int64, int64, int64, int64, int64, READ_ONLY, float32),
                                      fastmath=FASTMATH, error_model="numpy", cache=True)(expensive_activation)
    apply_epilogue = numba.njit(void(float32[:, ::1], int64, int64, int64, int64, READ_ONLY, boolean, int64,
                                     float32), fastmath=FASTMATH, cache=True)(apply_epilogue)
