"""attention_qkv and attention_qkv_grad: attention over a qkv projection's (B, T, 3, H, D) output,
read where it lies, against the float64 reference and against `attention` on split heads.

Tolerance: 1e-5 relative against float64, as in test_attention.py (float32 sums of at most a few
hundred products, ~1e-6). Against `attention` on the same numbers copied into (B, H, T, D) the
results must be identical: both entries run the same kernels on the same packed operands, so a
row read from the wrong stride or written to the wrong head differs there, not by rounding.
Shapes: T = 1, primes (13, 97, 131), D not a multiple of 16 (1, 7, 20, 33), B * H = 1 and > 1;
causal and not.
"""

import numpy as np
import pytest

from conftest import assert_close, require
from pyai import ops
from pyai.kernels.numba_cpu.attention_backward import attention_backward_reference
from pyai.kernels.numba_cpu.attention_forward import attention_forward_reference

TOL = 1e-5
SHAPES = [(1, 1, 1, 1), (2, 13, 3, 7), (1, 131, 1, 33), (2, 97, 2, 20)]   # (B, T, H, D)


def split(qkv):
    """q, k, v (B, H, T, D), contiguous, from qkv (B, T, 3, H, D)."""
    return [np.ascontiguousarray(qkv[:, :, part].transpose(0, 2, 1, 3)) for part in range(3)]


def heads_first(x):
    """(B, T, H, D) -> (B, H, T, D), contiguous."""
    return np.ascontiguousarray(x.transpose(0, 2, 1, 3))


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_attention_qkv_and_its_gradient_match_float64(backend, rng, shape, causal):
    require("attention_qkv", backend)
    require("attention_qkv_grad", backend)
    batch, time, heads, depth = shape
    qkv = rng.standard_normal((batch, time, 3, heads, depth)).astype(np.float32)
    do = rng.standard_normal((batch, time, heads, depth)).astype(np.float32)
    q, k, v = split(qkv)
    scale = 1 / np.sqrt(depth)
    o, lse = ops.attention_qkv(qkv, causal=causal, return_lse=True)
    assert o.shape == (batch, time, heads, depth) and lse.shape == (batch, heads, time)
    exact_o, exact_lse = attention_forward_reference(q, k, v, causal, scale)
    name = f"{backend} {shape} causal={causal}"
    assert_close(f"o, {name}", heads_first(o), exact_o, TOL)
    assert_close(f"lse, {name}", lse, exact_lse, TOL)
    dqkv = ops.attention_qkv_grad(do, qkv, o, lse, causal=causal)
    assert dqkv.shape == qkv.shape and dqkv.dtype == np.float32
    exact = attention_backward_reference(heads_first(do), q, k, v, causal, scale)
    for part, tensor in enumerate(("dq", "dk", "dv")):
        out = heads_first(dqkv[:, :, part])
        if time == 1 and tensor != "dv":
            # one key: p = 1 whatever q and k are, so dq = dk = 0 up to rounding
            assert np.abs(out).max() <= TOL * np.abs(dqkv[:, :, 2]).max(), f"{tensor}, {name}: not ~0"
            continue
        assert_close(f"{tensor}, {name}", out, exact[part], TOL)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_attention_qkv_is_attention_on_the_split_heads(backend, rng, causal):
    require("attention_qkv", backend)
    qkv = rng.standard_normal((3, 37, 3, 2, 24)).astype(np.float32)
    do = rng.standard_normal((3, 37, 2, 24)).astype(np.float32)
    q, k, v = split(qkv)
    o, lse = ops.attention_qkv(qkv, causal=causal, return_lse=True)
    split_o, split_lse = ops.attention(q, k, v, causal=causal, return_lse=True)
    np.testing.assert_array_equal(heads_first(o), split_o)
    np.testing.assert_array_equal(lse, split_lse)
    dqkv = ops.attention_qkv_grad(do, qkv, o, lse, causal=causal)
    grads = ops.attention_grad(heads_first(do), q, k, v, split_o, split_lse, causal=causal)
    for part, grad in enumerate(grads):
        np.testing.assert_array_equal(heads_first(dqkv[:, :, part]), grad)


def test_attention_qkv_with_an_explicit_scale(backend, rng):
    require("attention_qkv", backend)
    qkv = rng.standard_normal((1, 19, 3, 2, 5)).astype(np.float32)
    q, k, v = split(qkv)
    o = ops.attention_qkv(qkv, causal=True, scale=0.3)
    assert_close("o, scale 0.3", heads_first(o), attention_forward_reference(q, k, v, True, 0.3)[0], TOL)


QKV = np.ones((2, 5, 3, 4, 8), np.float32)
O = np.ones((2, 5, 4, 8), np.float32)
LSE = np.zeros((2, 4, 5), np.float32)


@pytest.mark.parametrize("call,message", [
    (lambda: ops.attention_qkv(np.ones((2, 5, 2, 4, 8), np.float32)),
     r"^qkv: expected shape \(B, T, 3, H, D\)"),
    (lambda: ops.attention_qkv(np.ones((2, 5, 3, 4), np.float32)), r"^qkv:"),
    (lambda: ops.attention_qkv_grad(O[:, :4], QKV, O, LSE), r"^do: expected shape \(2, 5, 4, 8\)"),
    (lambda: ops.attention_qkv_grad(O, QKV, O[..., :7], LSE), r"^o: expected shape"),
    (lambda: ops.attention_qkv_grad(O, QKV, O, LSE[:, :, :4]), r"^lse: expected shape \(2, 4, 5\)"),
], ids=["three-parts", "ndim", "do", "o", "lse"])
def test_attention_qkv_names_the_argument_at_fault(call, message):
    with pytest.raises(ValueError, match=message):
        call()
