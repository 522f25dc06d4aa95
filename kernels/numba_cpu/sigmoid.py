"""Sigmoid, forward and backward, on float32 arrays of any shape (worked on as flat arrays).

    forward:  y  = 1 / (1 + exp(-x))
    backward: dx = dy * y * (1 - y), from the forward output y

Cost per element: forward ~20 FLOPs (an exp and a divide), 8 bytes moved (read x, write y);
backward 3 FLOPs, 12 bytes (read dy and y, write dx). Both are meant to run at memory speed,
which the forward reaches only if its exp is vectorized.

Stable form: with e = exp(-|x|), which lies in [0, 1] and never overflows,
    y = 1 / (1 + e)  for x >= 0,    y = e / (1 + e)  for x < 0,
so the limits are exactly 0 and 1 (sigmoid(-1000) = 0, sigmoid(1000) = 1, as in TensorFlow).

Fast version: libm's exp is a scalar call that stops LLVM from vectorizing the loop (~7 ns an
element), so `exp_negative` computes exp(-a) in plain float32 arithmetic: -a = -n ln2 + r with
|r| <= ln2/2, exp(r) by its Taylor series to r^7 (truncation 5e-9, below float32's 6e-8), and
2^-n built from its exponent bits. It is within ~1.2 ulp, and with error_model="numpy" (no
Python divide-by-zero check, which would also block SIMD) the whole loop vectorizes; 'contract'
lets the polynomial use FMAs (30% faster, no less accurate: y stays within ~2 ulp), and
simd.wide_vectors the full vector width (AVX-512: 1M elements 0.51 -> 0.41 ms on one core).
Outputs that would be subnormal (exp(-a) for a > 87.33) are flushed to 0, as TF's CPU kernels do.
"""

import functools
import math

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils
from numba.extending import intrinsic

from pyai.kernels.numba_cpu import memory
from pyai.kernels.numba_cpu.first_call import COSTLY_ELEMENTS, BySize
from pyai.kernels.numba_cpu.simd import LLVM_VECTOR, VECTOR, WIDTH, host_has, host_vector_width, wide_vectors

LOG2E = np.float32(1.4426950408889634)
LN2_HIGH = np.float32(0.693359375)   # ln 2 = LN2_HIGH + LN2_LOW; n * LN2_HIGH is exact for n < 2^9
LN2_LOW = np.float32(-2.12194440e-4)
UNDERFLOW = np.float32(87.33)        # exp(-87.33) is a normal float32; exp(-87.34) is subnormal
INVERSE_FACTORIALS = tuple(np.float32(1 / f) for f in (1, 1, 2, 6, 24, 120, 720, 5040))

# 2^-a (exp2_negative), for kernels whose exps come in base-2 units at no cost: attention's scores
# (q packed times scale log2 e) and gelu's 2u (its constants times log2 e). n = round(a), 2^(n - a)
# by a polynomial, n subtracted from its exponent bits: 14 vector operations against exp_negative's
# 20 (no Cody-Waite reduction, no float 2^-n to multiply by), and a shorter chain of dependent ones;
# exp2_lanes (attention's): 10 with AVX-512.
LOG2_OF_E = math.log2(math.e)   # float64: exp(x) = 2^(x LOG2_OF_E)
EXP2_UNDERFLOW = 125.0          # 2^-125 is a normal float32; 2^-a past it is flushed to 0
# 2^r for |r| <= 1/2: the degree-6 polynomial through the Chebyshev points of the interval,
# rounded to float32, evaluated by Horner's scheme, six FMAs: 7.7e-8 relative in float32
# arithmetic, 1.3 ulp (exp_negative ~1.2 ulp). (Estrin's scheme, three FMA levels after r^2, has
# the shorter chain but a multiply and two register copies more, and an exp loop is bound by its
# operations' issue, not by their latency: see exp2_lanes.)
POWERS_OF_TWO = tuple(np.float32(c) for c in (1.0, 0.6931471824645996, 0.24022650718688965, 0.05550327152013779,
                                              0.009618056938052177, 0.0013400427997112274, 0.00015461444854736328))
SCALEF = WIDTH == 16 and host_vector_width() == 16   # AVX-512F's vscalefps, where the code is for it
REDUCE = SCALEF and host_has("avx512dq")              # AVX-512DQ's vreduceps: b - round(b) in one


def sigmoid_forward_reference(x):
    e = np.exp(-np.abs(x.astype(np.float64)))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32)


def sigmoid_backward_reference(dy, y):
    return dy * y * (1 - y)


@numba.njit(inline="always", error_model="numpy", cache=True)
def exp_negative(a):
    """exp(-a) for a float32 a >= 0, in SIMD-friendly arithmetic (0 past 87.33, NaN for NaN)."""
    clamped = a if a < UNDERFLOW else UNDERFLOW         # keeps 2^-n a normal float; NaN too
    n = np.floor(clamped * LOG2E + np.float32(0.5))
    r = (n * LN2_HIGH - clamped) + n * LN2_LOW          # -a = -n ln2 + r
    c = INVERSE_FACTORIALS
    exp_r = c[0] + r * (c[1] + r * (c[2] + r * (c[3] + r * (c[4] + r * (c[5] + r * (c[6]
                                                                            + r * c[7]))))))
    two_to_minus_n = np.int32((127 - np.int32(n)) << 23).view(np.float32)
    if a > UNDERFLOW:
        return np.float32(0)
    return exp_r * two_to_minus_n if a == a else a


def exp2_negative_reference(a):
    """2^-a in float64, 0 where that would be under 2^-125."""
    a = np.asarray(a, np.float64)
    return np.where(a > EXP2_UNDERFLOW, 0.0, np.exp2(-a))


@numba.njit(inline="always", error_model="numpy", fastmath={"contract"}, cache=True)
def exp2_negative(a):
    """2^-a for a float32 a >= 0 (a little under 0 is fine too), in arithmetic LLVM vectorizes: 0
    past EXP2_UNDERFLOW and at +inf, NaN for NaN (it passes the clamp, the compare's unordered
    side, and every step after it: x86's float-to-integer conversion gives 0x80000000, whose
    shift is 0). The floats of exp2_lanes at -a."""
    limit = np.float32(EXP2_UNDERFLOW)
    clamped = limit if a > limit else a
    n = np.rint(clamped)
    r = n - clamped
    c = POWERS_OF_TWO
    power = np.float32(c[0] + r * (c[1] + r * (c[2] + r * (c[3] + r * (c[4] + r * (c[5] + r * c[6]))))))
    result = np.int32(power.view(np.int32) - (np.int32(n) << np.int32(23))).view(np.float32)
    return np.float32(0) if a > limit else result


@intrinsic
def exp2_lanes(typingctx, b):
    """2^b of each lane of a SIMD vector (simd.py) for b <= 0 (a little over 0 is fine too): 0 past
    -EXP2_UNDERFLOW and at -inf, NaN for NaN; exp2_negative's floats at -b. For the kernels whose b
    is a difference they make anyway (attention's s - m), in LLVM vector operations, for loops
    that LLVM's vectorizers would turn into gathers and spills. n = round(b), 2^(b - n) by
    exp2_negative's polynomial, then times 2^n: with AVX-512 by vscalefps, which takes any n (-inf
    too: its NaN is masked to 0) in one operation, zeroing the lanes past the limit as it goes (10
    vector operations), b - n with AVX-512DQ by vreduceps (one instruction, where rounding is two
    on Intel cores; the same floats); else by adding n to the exponent bits, n clamped first (13).
    (Attention's online softmax, one core of an Intel Xeon, family 6 model 167, ns a vector of
    exps with its max and sum: Estrin's polynomial and rounding 2.66, vreduceps 2.52, Horner's
    polynomial too 2.41.)"""
    def codegen(context, builder, signature, args):
        def lanes(value):
            return ir.Constant(LLVM_VECTOR, [float(value)] * WIDTH)

        def call(name, *operands):
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(LLVM_VECTOR, [LLVM_VECTOR] * len(operands)), f"llvm.{name}.v{WIDTH}f32")
            return builder.call(function, operands)

        def x86(name, operands):
            types = [operand.type for operand in operands]
            function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(LLVM_VECTOR, types),
                                                      f"llvm.x86.avx512.mask.{name}.ps.512")
            return builder.call(function, operands)

        def power_of_two(r):   # 2^r, |r| <= 1/2
            power = lanes(POWERS_OF_TWO[-1])
            for c in reversed(POWERS_OF_TWO[:-1]):
                power = call("fma", power, r, lanes(c))
            return power

        current_rounding = ir.Constant(ir.IntType(32), 4)
        all_lanes = ir.Constant(ir.IntType(WIDTH), -1)
        b, = args
        past = builder.fcmp_ordered("<", b, lanes(-EXP2_UNDERFLOW))
        if SCALEF:
            if REDUCE:   # imm 4: round to an integer in the current rounding mode, as rint
                r = x86("reduce", [b, current_rounding, lanes(0.0), all_lanes, current_rounding])
                n = builder.fsub(b, r)   # exactly round(b)
            else:
                n = call("rint", b)
                r = builder.fsub(b, n)
            mask = builder.bitcast(builder.not_(past), ir.IntType(WIDTH))
            return x86("scalef", [power_of_two(r), n, lanes(0.0), mask, current_rounding])
        clamped = builder.select(past, lanes(-EXP2_UNDERFLOW), b)
        n = call("rint", clamped)
        integers = ir.VectorType(ir.IntType(32), WIDTH)
        exponent = builder.shl(builder.fptosi(n, integers), ir.Constant(integers, [23] * WIDTH))
        power = builder.bitcast(power_of_two(builder.fsub(clamped, n)), integers)
        return builder.select(past, lanes(0.0), builder.bitcast(builder.add(power, exponent), LLVM_VECTOR))
    return VECTOR(VECTOR), codegen


@numba.njit(inline="always", error_model="numpy", fastmath={"contract"}, cache=True)
def sigmoid_scalar(x):
    """sigmoid of one float32 (the matmul epilogue applies it too)."""
    e = exp_negative(abs(x))
    numerator = np.float32(1) if x >= 0 else e
    return numerator / (np.float32(1) + e)


@functools.partial(BySize, elements=COSTLY_ELEMENTS)
@numba.njit(parallel=True, error_model="numpy", fastmath={"contract"}, cache=True)
def sigmoid_forward_kernel(x, y):
    for i in numba.prange(x.size):
        wide_vectors()
        y[i] = sigmoid_scalar(x[i])


@BySize
@numba.njit(parallel=True, cache=True)
def sigmoid_backward_kernel(dy, y, dx):
    for i in numba.prange(y.size):
        dx[i] = dy[i] * y[i] * (np.float32(1) - y[i])


# x, y: float32, any shape, C-contiguous
def sigmoid_forward(x):
    y = memory.empty_like(x)
    sigmoid_forward_kernel(x.reshape(-1), y.reshape(-1))
    return y


# dy, y, dx: float32, the same shape, C-contiguous
def sigmoid_backward(dy, y):
    dx = memory.empty_like(y)
    sigmoid_backward_kernel(dy.reshape(-1), y.reshape(-1), dx.reshape(-1))
    return dx
