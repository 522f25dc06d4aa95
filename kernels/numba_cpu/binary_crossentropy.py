"""Binary cross-entropy (Keras semantics) and its gradient, over every element of float32 arrays
of any shape; p holds probabilities, z logits, t targets in [0, 1]; n = p.size.

From probabilities, as Keras: clip p to [LOW, HIGH] = [1e-7, 1 - 1e-7] (in float32), then
    loss = -sum(t log(pc) + (1 - t) log(1 - pc)) / n
    d    = (-(t / p) + (1 - t) / (1 - p)) / n   where LOW <= p <= HIGH,  0 elsewhere
The gradient is taken through the clip as tf.clip_by_value's is: it passes where p lies inside
the bounds or on them, and is 0 where the clip moved p (so at p == 0 and p == 1 exactly).
The bounds are the float32 values Keras's clip compares with; HIGH = float32(1 - 1e-7) is
1 - 2^-23, so at p == 1 the loss is -log(2^-23) = 15.94, not -log(1e-7) = 16.12, as in Keras.

From logits, as tf.nn.sigmoid_cross_entropy_with_logits:
    loss = sum(max(z, 0) - z t + log1p(exp(-|z|))) / n
    d    = (sigmoid(z) - t) / n
exp(-|z|) lies in (0, 1], so neither ever overflows: finite for any finite logit.

Cost per element: ~10 FLOPs plus one or two log/exp, 8 bytes read (forward) or 12 moved
(backward); the logs and exps dominate, since there is no vector math library here.

Fast version: one pass over the flat arrays, chunks across threads by numba.prange (one thread
below PARALLEL_ELEMENTS elements); the losses are ordered_sum.py's parallel sums over fixed
blocks (the same bits on any thread count and threading layer). Each element's terms are
computed in float64 and rounded once, so the result is as accurate as float32 inputs allow.
error_model="numpy" drops Python's divide-by-zero check from the divides (the divisors here are
never 0), which lets them vectorize.
"""

import math

import numba
import numpy as np

from pyai.kernels.numba_cpu import memory
from pyai.kernels.numba_cpu.first_call import COSTLY_ELEMENTS, BySize
from pyai.kernels.numba_cpu.ordered_sum import ordered_sum, sum_kernel

LOW = np.float32(1e-7)       # Keras's backend.epsilon(), as the float32 the clip compares with
HIGH = np.float32(1 - 1e-7)


def bce_forward_reference(p, t):
    pc, t = np.clip(p, LOW, HIGH).astype(np.float64), t.astype(np.float64)
    return float(-np.mean(t * np.log(pc) + (1 - t) * np.log(1 - pc)))


def bce_backward_reference(p, t):
    pc, t = np.clip(p, LOW, HIGH).astype(np.float64), t.astype(np.float64)
    d = (-(t / pc) + (1 - t) / (1 - pc)) / p.size
    return np.where((p < LOW) | (p > HIGH), 0, d).astype(np.float32)


def bce_logits_forward_reference(z, t):
    z = z.astype(np.float64)
    return float(np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))))


def bce_logits_backward_reference(z, t):
    e = np.exp(-np.abs(z.astype(np.float64)))
    sigmoid = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    return ((sigmoid - t) / z.size).astype(np.float32)


@numba.njit(inline="always", cache=True)
def bce_term(p, t):
    """-(t log p + (1 - t) log(1 - p)) with p clipped to [LOW, HIGH] as Keras does."""
    pc = np.float64(p)
    if pc < LOW:            # comparisons, not min/max: a NaN p stays NaN
        pc = np.float64(LOW)
    elif pc > HIGH:
        pc = np.float64(HIGH)
    ti = np.float64(t)
    return -(ti * math.log(pc) + (1 - ti) * math.log(1 - pc))


@numba.njit(parallel=True, error_model="numpy", cache=True)
def bce_backward_kernel(p, t, d):
    inverse_n = 1.0 / p.size
    for i in numba.prange(p.size):
        if p[i] < LOW or p[i] > HIGH:
            d[i] = 0
        else:
            pi, ti = np.float64(p[i]), np.float64(t[i])
            d[i] = (-(ti / pi) + (1 - ti) / (1 - pi)) * inverse_n


@numba.njit(inline="always", cache=True)
def bce_logits_term(z, t):
    """max(z, 0) - z t + log(1 + exp(-|z|)), the same loss from the logit z, finite for any z."""
    zi = np.float64(z)
    return (zi if zi > 0 else 0.0) - zi * t + math.log1p(math.exp(-abs(zi)))


@numba.njit(parallel=True, error_model="numpy", cache=True)
def bce_logits_backward_kernel(z, t, d):
    inverse_n = 1.0 / z.size
    for i in numba.prange(z.size):
        zi = np.float64(z[i])
        e = math.exp(-abs(zi))
        sigmoid = 1 / (1 + e) if zi >= 0 else e / (1 + e)
        d[i] = (sigmoid - t[i]) * inverse_n


# an exp or two divides per element
bce_backward_kernel = BySize(bce_backward_kernel, elements=COSTLY_ELEMENTS)
bce_logits_backward_kernel = BySize(bce_logits_backward_kernel, elements=COSTLY_ELEMENTS)


def bce_sum(p, t):
    return ordered_sum(bce_term, p, t)


def bce_logits_sum(z, t):
    return ordered_sum(bce_logits_term, z, t)


bce_sum, bce_logits_sum = sum_kernel(bce_sum), sum_kernel(bce_logits_sum)


# p, t: float32, the same shape, C-contiguous
def bce_forward(p, t):
    return bce_sum(p.reshape(-1), t.reshape(-1)) / p.size


# p, t, d: float32, the same shape, C-contiguous
def bce_backward(p, t):
    d = memory.empty_like(p)
    bce_backward_kernel(p.reshape(-1), t.reshape(-1), d.reshape(-1))
    return d


# z, t: float32, the same shape, C-contiguous
def bce_logits_forward(z, t):
    return bce_logits_sum(z.reshape(-1), t.reshape(-1)) / z.size


# z, t, d: float32, the same shape, C-contiguous
def bce_logits_backward(z, t):
    d = memory.empty_like(z)
    bce_logits_backward_kernel(z.reshape(-1), t.reshape(-1), d.reshape(-1))
    return d
