"""Attention and its gradients against TensorFlow's unfused softmax(scale q k^T + mask) v and
against a float64 numpy reference.

Tolerance: 1e-5 relative, as for matmul: every output is a float32 sum of products (over D for
the scores, over Tk keys for p v, over Tq queries for dk and dv), so float32 accumulation is off
by ~sqrt(terms) * 6e-8 relative; here at most 300 terms, ~1e-6. A masked key that leaks, a
probability from the wrong row's max or lse, or one wrong 6 x 16 tile is off by > 1e-3.
Shapes cover T = 1, odd T and D (1, 7, 13, 129, 300), Tq != Tk both ways, and sizes that are
not multiples of any block (query blocks of 64 and 96, key tiles of 96 and 64, slivers of 6
and 16), with B * H = 1 (several dq copies summed) and B * H > 1.
The causal mask is aligned bottom-right: TensorFlow's side builds it with tf.linalg.band_part
as the last Tq rows of a Tk x Tk lower triangle.
"""

import tracemalloc

import numba
import numpy as np
import pytest

from conftest import assert_close, relative_error, require, skip_in_cuda_simulator
from pyai import ops
from pyai.kernels.numba_cpu.attention_backward import attention_backward_reference
from pyai.kernels.numba_cpu.attention_forward import attention_forward_reference
from pyai.kernels.numba_cpu.sigmoid import EXP2_UNDERFLOW, exp2_lanes, exp2_negative, exp2_negative_reference
from pyai.kernels.numba_cpu.simd import WIDTH, load, store, subtract, zeros

# TensorFlow is the reference; a machine without it (the GPU machine) uses tests/golden
tf = pytest.importorskip("tensorflow")

TOL = 1e-5
SHAPES = [  # (B, H, Tq, Tk, D)
    (1, 1, 1, 1, 1), (1, 1, 1, 5, 7), (2, 3, 13, 13, 7), (1, 2, 129, 129, 64),
    (1, 1, 129, 300, 64), (2, 1, 300, 300, 1), (1, 2, 13, 129, 16),
]
MORE_QUERIES_THAN_KEYS = [(1, 2, 129, 13, 7), (1, 1, 300, 1, 64)]   # not causal: no key for some
SIMULATOR_WORK = 16_000   # B H Tq Tk D above which the CUDA simulator takes too long


def skip_large_in_simulator(backend, shape):
    if np.prod(shape) > SIMULATOR_WORK:
        skip_in_cuda_simulator(backend, f"attention {shape}")


def random_inputs(rng, batch, heads, n_queries, n_keys, depth):
    q = rng.standard_normal((batch, heads, n_queries, depth)).astype(np.float32)
    k = rng.standard_normal((batch, heads, n_keys, depth)).astype(np.float32)
    v = rng.standard_normal((batch, heads, n_keys, depth)).astype(np.float32)
    do = rng.standard_normal((batch, heads, n_queries, depth)).astype(np.float32)
    return q, k, v, do


def tensorflow_attention(q, k, v, causal, scale):
    """(o, lse) the unfused way: the whole score matrix, masked, softmax, times v."""
    s = tf.matmul(q, k, transpose_b=True) * scale
    if causal:
        n_queries, n_keys = s.shape[-2:]
        lower = tf.linalg.band_part(tf.ones((n_keys, n_keys), tf.bool), -1, 0)
        s = tf.where(lower[n_keys - n_queries:], s, -np.inf)
    return tf.matmul(tf.nn.softmax(s, axis=-1), v), tf.reduce_logsumexp(s, axis=-1)


def tensorflow_gradients(q, k, v, do, causal, scale):
    q, k, v = tf.Variable(q), tf.Variable(k), tf.Variable(v)
    with tf.GradientTape() as tape:
        o, _ = tensorflow_attention(q, k, v, causal, scale)
    return [g.numpy() for g in tape.gradient(o, [q, k, v], output_gradients=tf.constant(do))]


def shape_cases():
    for shape in SHAPES:
        for causal in (False, True):
            yield pytest.param(shape, causal, id=f"{shape}-{'causal' if causal else 'full'}")
    for shape in MORE_QUERIES_THAN_KEYS:
        yield pytest.param(shape, False, id=f"{shape}-full")


@pytest.mark.parametrize("shape,causal", list(shape_cases()))
def test_attention_equals_tensorflow(backend, rng, shape, causal):
    require("attention", backend)
    skip_large_in_simulator(backend, shape)
    q, k, v, _ = random_inputs(rng, *shape)
    scale = 1 / np.sqrt(shape[-1])
    o, lse = ops.attention(q, k, v, causal=causal, return_lse=True)
    ref_o, ref_lse = tensorflow_attention(q, k, v, causal, scale)
    exact_o, exact_lse = attention_forward_reference(q, k, v, causal, scale)
    assert o.dtype == np.float32 and lse.dtype == np.float32 and lse.shape == shape[:3]
    name = f"{backend} {shape} causal={causal}"
    assert_close(f"attention o, {name}, vs TF", o, ref_o.numpy(), TOL)
    assert_close(f"attention lse, {name}, vs TF", lse, ref_lse.numpy(), TOL)
    assert_close(f"attention o, {name}, vs float64", o, exact_o, TOL)
    assert_close(f"attention lse, {name}, vs float64", lse, exact_lse, TOL)


@pytest.mark.parametrize("shape,causal", list(shape_cases()))
def test_attention_gradients_equal_tensorflow(backend, rng, shape, causal):
    require("attention_grad", backend)
    skip_large_in_simulator(backend, shape)
    q, k, v, do = random_inputs(rng, *shape)
    scale = 1 / np.sqrt(shape[-1])
    o, lse = ops.attention(q, k, v, causal=causal, return_lse=True)
    grads = ops.attention_grad(do, q, k, v, o, lse, causal=causal)
    references = tensorflow_gradients(q, k, v, do, causal, scale)
    exact = attention_backward_reference(do, q, k, v, causal, scale)
    for tensor, out, ref, ref64 in zip(("dq", "dk", "dv"), grads, references, exact):
        assert out.dtype == np.float32 and out.shape == ref.shape
        name = f"attention {tensor}, {backend} {shape} causal={causal}"
        if shape[3] == 1 and tensor != "dv":
            # one key: p = 1 whatever q and k are, so dq = dk = 0 and both sides give only
            # rounding noise, which a relative comparison would divide by itself
            largest = np.abs(out).max()
            assert largest <= TOL * np.abs(grads[2]).max(), f"{name}: {largest:.1e}, not ~0"
            continue
        assert_close(f"{name} vs TF", out, ref, TOL)
        assert_close(f"{name} vs float64", out, ref64, TOL)


def test_attention_with_an_explicit_scale(backend, rng):
    require("attention_grad", backend)
    q, k, v, do = random_inputs(rng, 2, 2, 37, 41, 8)
    o, lse = ops.attention(q, k, v, causal=True, scale=0.3, return_lse=True)
    assert_close("o, scale 0.3", o, tensorflow_attention(q, k, v, True, 0.3)[0].numpy(), TOL)
    grads = ops.attention_grad(do, q, k, v, o, lse, causal=True, scale=0.3)
    for tensor, out, ref in zip(("dq", "dk", "dv"), grads,
                                tensorflow_gradients(q, k, v, do, True, 0.3)):
        assert_close(f"{tensor}, scale 0.3", out, ref, TOL)


def score_rounding_change(q, k, v, causal, scale):
    """How far o moves (the norm of its change, to first order, in float64) when every score
    s_ij = scale q_i.k_j moves by one float32 rounding of its terms, e_ij = u scale sum_d
    |q_id k_jd| (u = 2^-24): a softmax row's probabilities then move by |dp_j| <= p_j (e_j (1 -
    p_j) + sum_(k != j) p_k e_k), and o_i by at most sum_j |dp_j| |v_j|. Small where a row is
    one-hot, large where its top scores nearly tie."""
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    s = scale * np.einsum("bhid,bhjd->bhij", q, k)
    rounding = 2.0 ** -24 * scale * np.einsum("bhid,bhjd->bhij", np.abs(q), np.abs(k))
    if causal:
        n_queries, n_keys = s.shape[-2:]
        visible = np.arange(n_keys) <= np.arange(n_queries)[:, None] + (n_keys - n_queries)
        s, rounding = np.where(visible, s, -np.inf), np.where(visible, rounding, 0.0)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    dp = p * (rounding * (1 - p) + (p * rounding).sum(-1, keepdims=True) - p * rounding)
    return np.linalg.norm(np.einsum("bhij,bhjd->bhid", dp, np.abs(v)))


def test_very_large_logits_stay_finite_and_match(backend, rng):
    """q * 1e3: scores of ~1e3 and softmax rows all but one-hot. float32 rounds each score by up
    to ~1e3 * 6e-8 (TensorFlow once, in the dot product; pyai up to three times: q scaled by
    scale log2 e, the dot product, the exponent's argument), which moves o by about
    score_rounding_change for each rounding: much where a row's top scores nearly tie. So o is
    held to float64 at 1e-5 plus three of those, to TF at 1e-5 plus four (the two sides' own;
    over 300 draws, pyai's distance from float64 stayed under 1e-6 plus 1.6 of them, TF's under
    1e-6 plus 1.0, and a fixed 1e-5 plus twice TF's own distance failed one draw in a few
    hundred), and at 1e-4 outright. lse matches TF and float64 at 1e-5. dv is
    checked at 1e-4: the backward recomputes p from lse, which float32 stores at 1e3 to within
    3e-5, and that scales a row of recomputed probabilities by as much.
    dq and dk are ill-conditioned there: p (dp - delta) cancels to almost nothing on a one-hot
    row, and float32 TensorFlow is itself up to ~6% off float64 in relative terms. So their
    error is bounded by float32 noise on the size of the terms that cancel instead:
    1e-5 * scale * max|do| * max|v| * max|k| (dq) or max|q| (dk) * sqrt(q.size)."""
    require("attention_grad", backend)
    skip_in_cuda_simulator(backend, "attention (1, 2, 77, 77, 16)")
    q, k, v, do = random_inputs(rng, 1, 2, 77, 77, 16)
    q *= 1e3
    scale = 0.25
    for causal in (False, True):
        o, lse = ops.attention(q, k, v, causal=causal, return_lse=True)
        dq, dk, dv = ops.attention_grad(do, q, k, v, o, lse, causal=causal)
        tf_o, tf_lse = tensorflow_attention(q, k, v, causal, scale)
        exact_o, exact_lse = attention_forward_reference(q, k, v, causal, scale)
        exact_dq, exact_dk, exact_dv = attention_backward_reference(do, q, k, v, causal, scale)
        name = f"large logits, causal={causal}"
        change = score_rounding_change(q, k, v, causal, scale) / np.linalg.norm(exact_o)
        assert_close(f"o vs TF, {name}", o, tf_o.numpy(), TOL + 4 * change)
        assert_close(f"o vs float64 (rounded scores), {name}", o, exact_o, TOL + 3 * change)
        assert_close(f"lse vs TF, {name}", lse, tf_lse.numpy(), TOL)
        assert_close(f"dv vs TF, {name}", dv, tensorflow_gradients(q, k, v, do, causal, scale)[2],
                     1e-4)
        assert_close(f"o vs float64, {name}", o, exact_o, 1e-4)
        assert_close(f"lse vs float64, {name}", lse, exact_lse, TOL)
        assert_close(f"dv vs float64, {name}", dv, exact_dv, 1e-4)
        terms = scale * np.abs(do).max() * np.abs(v).max() * np.sqrt(q.size)
        for tensor, out, exact, other in (("dq", dq, exact_dq, k), ("dk", dk, exact_dk, q)):
            assert np.all(np.isfinite(out)), f"{tensor}: not finite, {name}"
            error = np.linalg.norm(out - exact) / (terms * np.abs(other).max())
            assert error <= TOL, f"{tensor}, {name}: error {error:.1e} of the terms' size"


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_scores_rising_along_the_keys_match_float64(backend, rng, causal):
    """Keys scaled up along T (key j times 1 + j / 25): each query's top score keeps rising, by
    tens in base-2 units over 300 keys, so a running max is passed again and again (the CPU
    forward's lazily moved max, attention_forward.tile_exps, moves several times a row; with
    Tk = 300 = 25 x 12 its key tiles need no mask). o against float64 at 1e-5 plus three times
    the scores' rounding (as for large logits: scores of up to ~30), lse at 1e-5."""
    require("attention", backend)
    skip_in_cuda_simulator(backend, "attention (1, 2, 77, 300, 16)")
    q, k, v, _ = random_inputs(rng, 1, 2, 77, 300, 16)
    k *= (1 + np.arange(300, dtype=np.float32) / 25)[:, None]
    scale = 0.25
    o, lse = ops.attention(q, k, v, causal=causal, return_lse=True)
    exact_o, exact_lse = attention_forward_reference(q, k, v, causal, scale)
    change = score_rounding_change(q, k, v, causal, scale) / np.linalg.norm(exact_o)
    assert_close("o vs float64, rising scores", o, exact_o, TOL + 3 * change)
    assert_close("lse vs float64, rising scores", lse, exact_lse, TOL)


def test_causal_attention_of_the_last_query_sees_every_key(backend, rng):
    """Bottom-right alignment: with Tq = 1 the single query attends to all Tk keys."""
    require("attention", backend)
    q, k, v, _ = random_inputs(rng, 1, 1, 1, 50, 4)
    assert_close("causal Tq=1", ops.attention(q, k, v, causal=True), ops.attention(q, k, v),
                 1e-6)


def test_attention_returns_o_alone_unless_asked(backend, rng):
    require("attention", backend)
    q, k, v, _ = random_inputs(rng, 1, 1, 5, 5, 3)
    o = ops.attention(q, k, v)
    assert isinstance(o, np.ndarray) and o.shape == q.shape


def test_attention_memory_is_linear_in_t(backend, rng):
    """T = 2048: the T x T scores would take 16 MiB; pyai's allocations (the packed copies of
    q, k, v, the output) stay within a few times the 0.5 MiB of each input."""
    require("attention", backend)
    skip_in_cuda_simulator(backend, "attention at T = 2048")
    q, k, v, _ = random_inputs(rng, 1, 1, 2048, 2048, 64)
    ops.attention(q, k, v, causal=True)   # compile or load from the cache first
    tracemalloc.start()
    ops.attention(q, k, v, causal=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * 2**20, f"attention at T=2048 allocated {peak / 2**20:.1f} MiB at peak"


@pytest.mark.parametrize("n_queries,n_keys,depth", [(13, 13, 7), (129, 129, 64), (13, 129, 16), (300, 300, 1)])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_heads_as_tasks_give_the_floats_of_heads_packed_first(rng, n_queries, n_keys, depth, causal):
    """The CPU kernels run whole heads as tasks, each packed just before its work (by_head), or
    pack every head first and run blocks of queries (forward) or groups of key tiles (backward)
    as tasks: the same sums in the same order, so o, lse, dq, dk and dv bit for bit (heads
    enough that the backward takes one group either way)."""
    import numba
    from pyai.kernels.numba_cpu import attention_backward as backward, attention_forward as forward
    heads = 2 * numba.get_num_threads() + 1
    q, _, _, do = random_inputs(rng, 1, heads, n_queries, n_keys, depth)
    _, k, v, _ = random_inputs(rng, 1, heads, n_keys, n_keys, depth)
    scale = 1 / np.sqrt(depth)

    def rows(*arrays):
        return [forward.rows_of(x, (0, 1), 2) for x in arrays]

    results = []
    for by_head in (True, False):
        o, lse = np.empty_like(q), np.empty((heads, n_queries), np.float32)
        forward.forward(*rows(q, k, v), n_queries, n_keys, depth, causal, scale, *rows(o), lse, by_head=by_head)
        grads = [np.empty_like(x) for x in (q, k, v)]
        backward.backward(*rows(q, k, v, do, o), n_queries, n_keys, depth, lse, causal, scale, *rows(*grads),
                          by_head=by_head)
        results.append([o, lse, *grads])
    for name, by_head, packed_first in zip(("o", "lse", "dq", "dk", "dv"), *results):
        np.testing.assert_array_equal(by_head, packed_first, err_msg=name)
    exact_o, _ = attention_forward_reference(q, k, v, causal, scale)
    assert_close("o by head vs float64", results[0][0], exact_o, TOL)


@numba.njit
def exp2_negative_by_vectors(a, out):
    for i in range(0, a.size, WIDTH):
        store(out, i, exp2_lanes(subtract(zeros(), load(a, i))))   # 2^b at b = -a


@numba.njit(error_model="numpy")
def exp2_negative_by_floats(a, out):
    for i in range(a.size):
        out[i] = exp2_negative(a[i])


@pytest.mark.parametrize("apply", [exp2_negative_by_vectors, exp2_negative_by_floats])
def test_exp2_negative_is_within_two_ulp_and_keeps_zero_inf_and_nan(rng, apply):
    """The kernels' exps in base 2 (2^-a, a >= 0: a score's distance below its row's max, or gelu's
    -|2u|, in base-2 units) against float64: at most 2.5e-7 relative (two float32 ulp) where 2^-a
    is a normal float, exactly 1 at 0, exactly 0 past EXP2_UNDERFLOW and at +inf (a masked score),
    NaN for NaN; a little under 0, as rounding can leave a score above its row's lse, still 2^-a.
    Both versions: the SIMD one (attention's) and the float one (gelu's, vectorized by LLVM, which
    may contract its polynomial's FMAs in another order, its tail a float at a time)."""
    special = [0, 1e-8, 0.5, 1, 1.5, 2.5, 87.5, 124.5, EXP2_UNDERFLOW, EXP2_UNDERFLOW + 1e-4, 126, 1e4, np.inf,
               np.nan, -1e-7, -0.25, -0.5]
    a = np.concatenate([special, rng.uniform(0, 1, 1000), rng.uniform(0, 130, 4000)]).astype(np.float32)
    a = np.concatenate([a, np.full(-len(a) % WIDTH, 3.0, np.float32)])   # whole vectors
    if apply is exp2_negative_by_floats:   # and a tail that LLVM's vectors leave
        a = np.concatenate([a, np.array([np.nan, 1.25, np.inf], np.float32)])
    out = np.full_like(a, -1.0)
    apply(a, out)
    expected = exp2_negative_reference(a)
    normal = expected > 0
    assert relative_error(out[normal], expected[normal]) < 1e-7   # as a whole
    assert np.max(np.abs(out[normal] / expected[normal] - 1)) < 2.5e-7
    np.testing.assert_array_equal(out[~normal & ~np.isnan(a)], 0)
    assert np.isnan(out[np.isnan(a)]).all() and not np.isnan(out[~np.isnan(a)]).any()
    assert out[0] == 1 and (out[normal] >= np.finfo(np.float32).tiny).all()


def test_causal_with_more_queries_than_keys_is_an_error():
    q = np.ones((1, 1, 5, 4), np.float32)
    k = np.ones((1, 1, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"^causal:.*Tq=5 > Tk=3"):
        ops.attention(q, k, k, causal=True)


Q = np.ones((2, 3, 5, 4), np.float32)
K = np.ones((2, 3, 7, 4), np.float32)
LSE = np.zeros((2, 3, 5), np.float32)


@pytest.mark.parametrize("call,argument", [
    (lambda: ops.attention(Q[0], K, K), "q"),
    (lambda: ops.attention(Q, K[..., :3], K), "k"),
    (lambda: ops.attention(Q, K[:, :2], K), "k"),
    (lambda: ops.attention(Q, K, K[:, :, :6]), "v"),
    (lambda: ops.attention(Q, K[:, :, :0], K[:, :, :0]), "k"),
    (lambda: ops.attention(Q, K, K, scale=float("inf")), "scale"),
    (lambda: ops.attention_grad(Q[:, :, :4], Q, K, K, Q, LSE), "do"),
    (lambda: ops.attention_grad(Q, Q, K, K, Q[:1], LSE), "o"),
    (lambda: ops.attention_grad(Q, Q, K, K, Q, LSE[..., :4]), "lse"),
])
def test_bad_shapes_raise_value_error_naming_the_argument(call, argument):
    with pytest.raises(ValueError, match=rf"^{argument}:"):
        call()


def test_non_real_dtype_raises_type_error():
    with pytest.raises(TypeError, match=r"^v:"):
        ops.attention(Q, K, K.astype(np.complex64))
