"""matmul and the fused linear (x @ w + b, then activation) against TensorFlow and float64.

Tolerance: 1e-5 relative for float32 products. Accumulation over K in float32 gives errors of
about sqrt(K) * 6e-8 relative; K here is at most 1031, so 1e-5 leaves room without hiding a
wrong tile (a single wrong element in a 6 x 16 tile is already ~1e-2 off).
Shapes cover 1, primes and non-multiples of every tile (MR = 6 or 12, NR = 16 or 32 by the
CPU's vector width, MC=96, KC=256), both loop
orders (M up to FEW_ROWS=128 and above), one thread or two (SERIAL_FLOPS), and one column
(N = 1: gemv, whole vectors and a ragged rest of rows or of k).
"""

import numpy as np
import pytest

import pyai
from conftest import assert_close, require, skip_in_cuda_simulator
from pyai import dispatch

# TensorFlow is the reference; a machine without it (the GPU machine) uses tests/golden
tf = pytest.importorskip("tensorflow")

MATMUL_TOL = 1e-5
SHAPES = [(1, 1, 1), (1, 17, 3), (7, 1, 5), (5, 13, 1), (37, 1, 53), (37, 53, 29), (97, 6, 257), (6, 16, 256),
          (101, 131, 1031), (193, 17, 300), (211, 67, 301), (12, 32, 512), (25, 65, 257)]


def operands(rng, m, n, k, transpose_a, transpose_b):
    a = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if transpose_b else (k, n)).astype(np.float32)
    return a, b


@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_matmul_equals_tensorflow(backend, rng, m, n, k, transpose_a, transpose_b):
    require("matmul", backend)
    if k > 32 or max(m, n) > 128:
        skip_in_cuda_simulator(backend, f"matmul {m}x{n}x{k}")
    a, b = operands(rng, m, n, k, transpose_a, transpose_b)
    out = pyai.ops.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    ref = tf.linalg.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b).numpy()
    exact = (a.T if transpose_a else a).astype(np.float64) @ (b.T if transpose_b else b)
    assert out.dtype == np.float32 and out.shape == (m, n)
    assert_close(f"matmul {backend} {m}x{n}x{k} ta={transpose_a} tb={transpose_b} vs TF",
                 out, ref, MATMUL_TOL)
    assert_close("matmul vs float64", out, exact, MATMUL_TOL)


def test_matmul_large_parallel(backend, rng):
    """Big enough for several tasks per thread and two K slices and two NC panels' worth of rows."""
    require("matmul", backend)
    skip_in_cuda_simulator(backend, "matmul 389x4111x517")
    a, b = operands(rng, 389, 4111, 517, False, False)
    out = pyai.ops.matmul(a, b)
    assert_close("matmul 389x4111x517", out, a.astype(np.float64) @ b, MATMUL_TOL)


ACTIVATIONS = {
    None: lambda y, alpha: y,
    "leaky_relu": lambda y, alpha: tf.nn.leaky_relu(y, alpha=alpha),
    "relu": lambda y, alpha: tf.nn.relu(y),
    "sigmoid": lambda y, alpha: tf.sigmoid(y),
    "tanh": lambda y, alpha: tf.tanh(y),
    "gelu": lambda y, alpha: tf.nn.gelu(y, approximate=True),
}


def test_every_epilogue_activation_has_a_tensorflow_twin():
    assert list(ACTIVATIONS) == list(pyai.ops.ACTIVATIONS)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("batch,features_in,features_out", [(1, 1, 1), (7, 13, 5), (64, 100, 257),
                                                            (97, 784, 17), (131, 300, 37), (67, 45, 1)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_equals_keras_dense(backend, rng, activation, batch, features_in, features_out,
                                   with_bias):
    require("linear", backend)
    if features_in > 32:
        skip_in_cuda_simulator(backend, f"linear {batch}x{features_in}->{features_out}")
    x = rng.standard_normal((batch, features_in)).astype(np.float32)
    w = (rng.standard_normal((features_in, features_out)) / np.sqrt(features_in)).astype(np.float32)
    b = rng.standard_normal(features_out).astype(np.float32) if with_bias else None
    alpha = 0.3
    out = pyai.ops.linear(x, w, b, activation=activation, alpha=alpha)
    pre = tf.matmul(x, w) + (b if with_bias else 0.0)
    ref = ACTIVATIONS[activation](pre, alpha).numpy()
    name = f"linear {backend} {activation} {batch}x{features_in}->{features_out}"
    if activation == "gelu":
        # TensorFlow's float32 GELU, 0.5 x (1 + tanh u), cancels below x = -2.5 (1e-4 off at -3):
        # there pyai is held to float64 alone
        from pyai.kernels.numba_cpu.matmul import matmul_reference
        exact = matmul_reference(x, w, b, "gelu")
        assert_close(f"{name} vs float64", out, exact, MATMUL_TOL)
        holds = pre.numpy() > -2.5
        out, ref = out[holds], ref[holds]
    if out.size:
        assert_close(f"{name} vs TF", out, ref, MATMUL_TOL)


def test_linear_one_sample_vector(backend, rng):
    require("linear", backend)
    x = rng.standard_normal(11).astype(np.float32)
    w = rng.standard_normal((11, 3)).astype(np.float32)
    out = pyai.ops.linear(x, w, activation="tanh")
    assert out.shape == (3,)
    assert_close("linear on a 1-d x", out, np.tanh(x.astype(np.float64) @ w), MATMUL_TOL)


def test_linear_saturating_activations_stay_finite(backend, rng):
    """Pre-activations of +-1e4: sigmoid gives exactly 0 and 1, tanh -1 and 1, no NaN."""
    require("linear", backend)
    x = np.array([[1.0], [-1.0]], dtype=np.float32)
    w = np.full((1, 5), 1e4, dtype=np.float32)
    sig = pyai.ops.linear(x, w, activation="sigmoid")
    np.testing.assert_array_equal(sig, [[1.0] * 5, [0.0] * 5])
    th = pyai.ops.linear(x, w, activation="tanh")
    np.testing.assert_array_equal(th, [[1.0] * 5, [-1.0] * 5])


def test_matmul_converts_dtype_and_layout(backend, rng):
    """Documented conversions: float64 and integer inputs become float32; views are copied."""
    require("matmul", backend)
    a = rng.standard_normal((9, 14))            # float64
    b = rng.integers(-3, 4, size=(7, 28))[:, ::2]  # int64, non-contiguous view (7, 14)
    out = pyai.ops.matmul(a, b, transpose_b=True)
    assert out.dtype == np.float32
    assert_close("matmul of converted inputs", out, a @ b.T.astype(np.float64), MATMUL_TOL)


@pytest.mark.parametrize("call,argument", [
    (lambda: pyai.ops.matmul(np.ones((3, 4)), np.ones((5, 2))), "b"),
    (lambda: pyai.ops.matmul(np.ones((3,)), np.ones((3, 2))), "a"),
    (lambda: pyai.ops.matmul(np.ones((3, 4)), np.ones((4, 0))), "b"),
    (lambda: pyai.ops.matmul(np.ones((0, 4)), np.ones((4, 2))), "a"),
    (lambda: pyai.ops.linear(np.ones((2, 3)), np.ones((4, 5))), "w"),
    (lambda: pyai.ops.linear(np.ones((2, 3)), np.ones((3, 5)), np.ones(4)), "b"),
    (lambda: pyai.ops.linear(np.ones((2, 3, 1)), np.ones((1, 5))), "x"),
    (lambda: pyai.ops.linear(np.ones((2, 3)), np.ones((3, 5)), activation="swish"), "activation"),
    (lambda: pyai.ops.linear(np.ones((2, 3)), np.ones((3, 5)), alpha=-0.1), "alpha"),
    (lambda: pyai.ops.linear(np.ones((2, 3)), np.ones((3, 5)), alpha=float("nan")), "alpha"),
])
def test_bad_shapes_and_arguments_raise_value_error_naming_the_argument(call, argument):
    with pytest.raises(ValueError, match=rf"^{argument}:"):
        call()


@pytest.mark.parametrize("bad", [np.ones((2, 2), dtype=np.complex64), np.array([["a", "b"]]),
                                 np.ones((2, 2), dtype=bool)])
def test_non_real_dtypes_raise_type_error(bad):
    with pytest.raises(TypeError, match=r"^a:"):
        pyai.ops.matmul(bad, np.ones((2, 2), dtype=np.float32))


def test_unknown_backend_is_a_clear_error(rng):
    a = rng.standard_normal((2, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        pyai.ops.matmul(a, a, backend="tpu")


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (37, 53, 29), (193, 17, 300)])
@pytest.mark.parametrize("transpose_a", [False, True])
def test_matmul_writes_into_out_in_place(backend, rng, m, n, k, transpose_a):
    """out= (a view of a flat gradient buffer, as Dense.backward passes) gets the product itself."""
    require("matmul", backend)
    if k > 32:
        skip_in_cuda_simulator(backend, f"matmul {m}x{n}x{k}")
    a, b = operands(rng, m, n, k, transpose_a, False)
    buffer = np.full(m * n + 3, np.nan, np.float32)
    out = buffer[2:2 + m * n].reshape(m, n)
    assert pyai.ops.matmul(a, b, transpose_a=transpose_a, out=out) is out
    exact = (a.T if transpose_a else a).astype(np.float64) @ b
    assert_close(f"matmul out= {backend} {m}x{n}x{k} ta={transpose_a}", out, exact, MATMUL_TOL)
    assert np.isnan(buffer[:2]).all() and np.isnan(buffer[-1])


@pytest.mark.parametrize("epilogue", [None, "bias_leaky_relu", "leaky_relu_grad"])
def test_a_large_out_starting_mid_line_gets_the_aligned_products_floats(rng, epilogue):
    """An out= of REALIGNED_BYTES or more whose rows start mid-line (realigns; with 512-bit vectors)
    is made in an array of its own and copied: the floats of the product into an aligned out, and
    nothing around out is written; an aligned one, a small one and one of rows of a ragged line
    are written directly."""
    from pyai.kernels.numba_cpu import matmul as kernels
    line = kernels.LINE
    m, n, k = kernels.REALIGNED_BYTES // (4 * 1024) + 3, 1024, 37
    a, b = operands(rng, m, n, k, False, False)
    bias, y = rng.standard_normal(n).astype(np.float32), rng.standard_normal((m, n)).astype(np.float32)
    run = {None: lambda out: kernels.fused_matmul(a, b, False, False, None, None, 0.0, out=out),
           "bias_leaky_relu": lambda out: kernels.fused_matmul(a, b, False, False, bias, "leaky_relu", 0.2, out=out),
           "leaky_relu_grad": lambda out: kernels.fused_matmul(a, b, False, False, None, None, 0.2, out=out,
                                                               leaky_relu_output=y)}[epilogue]
    buffer = np.full(m * n + 2 * line, np.nan, np.float32)
    start = (-buffer.ctypes.data % 64) // 4 + 4   # 16 bytes into a line
    out = buffer[start:start + m * n].reshape(m, n)
    assert kernels.realigns(out) == (kernels.WIDTH == 16)   # AVX2's tile rows stored mid-line ran as fast
    assert run(out) is out
    expected = kernels.memory.empty((m, n))
    run(expected)
    np.testing.assert_array_equal(out, expected)
    exact = a.astype(np.float64) @ b
    if epilogue == "bias_leaky_relu":
        exact = np.where(exact + bias > 0, exact + bias, 0.2 * (exact + bias))
    if epilogue == "leaky_relu_grad":
        exact = exact * np.where(y > 0, 1.0, 0.2)
    assert_close(f"realigned out= {epilogue}", out, exact, MATMUL_TOL)
    assert np.isnan(buffer[:start]).all() and np.isnan(buffer[start + m * n:]).all()
    assert not kernels.realigns(kernels.memory.empty((m, n)))
    assert not kernels.realigns(out[:8])   # small
    ragged = buffer[start:start + m * (n - 1)].reshape(m, n - 1)
    assert not kernels.realigns(ragged)


def test_matmul_out_of_another_shape_or_on_an_operand_is_an_error(rng):
    a, b = operands(rng, 4, 5, 3, False, False)
    with pytest.raises(ValueError, match=r"out: expected shape \(4, 5\), the product's, got \(5, 4\)"):
        pyai.ops.matmul(a, b, out=np.empty((5, 4), np.float32))
    square = rng.standard_normal((4, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="out: shares memory with a or b"):
        pyai.ops.matmul(square, square, out=square)
    with pytest.raises(TypeError, match="out: updated in place, so it must be a C-contiguous float32"):
        pyai.ops.matmul(a, b, out=np.empty((4, 5)))


# weight_and_bias_grad: x (batch, in), dy (batch, out). in around the tile's rows (MR = 6 or 12:
# the row of ones in a row of padding, or a sliver of its own), few rows and the blocked loop
# (in + 1 up to FEW_ROWS and past it, in place and packed), one column, one step of depth, a batch
# deeper than a KC slice
@pytest.mark.parametrize("batch,features_in,features_out", [
    (1, 1, 1), (3, 5, 7), (64, 6, 16), (7, 12, 33), (64, 100, 256), (5, 127, 19), (64, 128, 40), (13, 131, 1),
    (300, 24, 17), (128, 768, 130), (257, 601, 70), (64, 1024, 48), (1, 389, 53)])
def test_weight_and_bias_grad_is_the_weight_gradient_and_then_dys_column_sums(backend, rng, batch, features_in,
                                                                              features_out):
    """One product gives x^T dy, the same floats as ops.matmul's, and dy's column sums within
    rounding of float64 (each a float32 sum over the batch, as a product's element is); the
    stand-in that runs while the matmul compiles (plain_matmul.py) gives the same floats."""
    require("weight_and_bias_grad", backend)
    x = rng.standard_normal((batch, features_in)).astype(np.float32)
    dy = rng.standard_normal((batch, features_out)).astype(np.float32)
    dweight, dbias = pyai.ops.weight_and_bias_grad(x, dy)
    assert dweight.shape == (features_in, features_out) and dbias.shape == (features_out,)
    assert dweight.dtype == dbias.dtype == np.float32
    assert address(dbias) == address(dweight) + dweight.nbytes   # one (in + 1, out) array
    np.testing.assert_array_equal(dweight, pyai.ops.matmul(x, dy, transpose_a=True))
    exact = dy.astype(np.float64)
    assert_close("the bias gradient vs float64", dbias, exact.sum(axis=0), MATMUL_TOL)
    assert_close("the weight gradient vs float64", dweight, x.T.astype(np.float64) @ exact, MATMUL_TOL)
    if backend == "numba-cpu":
        from pyai.kernels.numba_cpu import plain_matmul
        np.testing.assert_array_equal(plain_matmul.weight_and_bias_grad(x, dy), np.vstack([dweight, dbias]))


def address(array):
    return array.__array_interface__["data"][0]


def test_weight_and_bias_grad_into_out_and_its_errors(rng):
    x = rng.standard_normal((9, 13)).astype(np.float32)
    dy = rng.standard_normal((9, 5)).astype(np.float32)
    buffer = np.full(14 * 5 + 3, np.nan, np.float32)
    out = buffer[2:2 + 14 * 5].reshape(14, 5)
    dweight, dbias = pyai.ops.weight_and_bias_grad(x, dy, out=out)
    assert address(dweight) == address(out) and address(dbias) == address(out[13])
    np.testing.assert_array_equal(out, np.vstack(pyai.ops.weight_and_bias_grad(x, dy)))
    assert np.isnan(buffer[:2]).all() and np.isnan(buffer[-1])
    with pytest.raises(ValueError, match=r"^out: expected shape \(14, 5\), the weight gradient's and then"):
        pyai.ops.weight_and_bias_grad(x, dy, out=np.empty((13, 5), np.float32))
    with pytest.raises(TypeError, match="^out: updated in place, so it must be a C-contiguous float32"):
        pyai.ops.weight_and_bias_grad(x, dy, out=np.empty((14, 5)))
    shared = np.ones(200, np.float32)
    with pytest.raises(ValueError, match="^out: shares memory with x or dy"):
        pyai.ops.weight_and_bias_grad(shared[:117].reshape(9, 13), dy, out=shared[100:170].reshape(14, 5))
    with pytest.raises(ValueError, match=r"^dy: expected 9 rows, one per row of x \(9, 13\), got \(8, 5\)"):
        pyai.ops.weight_and_bias_grad(x, dy[:8])
    with pytest.raises(ValueError, match="^x: "):
        pyai.ops.weight_and_bias_grad(x[0], dy)
    with pytest.raises(ValueError, match=r"^x: has an empty dimension \(shape \(0, 13\)\)"):
        pyai.ops.weight_and_bias_grad(x[:0], dy[:0])
    with pytest.raises(ValueError, match=r"^dy: has an empty dimension \(shape \(9, 0\)\)"):
        pyai.ops.weight_and_bias_grad(x, dy[:, :0])


# every loop: one step of depth (outer), one column on one thread and a tall one on every thread
# (gemv), few rows on one thread and on every thread, the blocked loop with ragged tiles, few
# rows turned
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (300, 77, 1), (7, 1, 13), (2048, 1, 128), (5, 33, 17),
                                   (100, 128, 256), (130, 17, 129), (389, 517, 301), (64, 480, 1100)])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_matmul_times_is_the_product_then_numpys_multiply(backend, rng, m, n, k, transpose_a, transpose_b):
    """times=: the product multiplied by a matrix as it is made (dy W^T times gelu'), the floats
    of the product and then numpy's float32 multiply, bit for bit; within rounding of float64."""
    require("matmul_times", backend)
    a, b = operands(rng, m, n, k, transpose_a, transpose_b)
    times = rng.standard_normal((m, n)).astype(np.float32)
    out = pyai.ops.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b, times=times)
    assert out.dtype == np.float32 and out.shape == (m, n)
    np.testing.assert_array_equal(out, pyai.ops.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b) * times)
    exact = ((a.T if transpose_a else a).astype(np.float64) @ (b.T if transpose_b else b)) * times
    assert_close(f"matmul times {backend} {m}x{n}x{k} ta={transpose_a} tb={transpose_b}", out, exact, MATMUL_TOL)


def test_matmul_times_into_out_and_its_errors(rng):
    a, b = operands(rng, 37, 53, 29, False, True)
    times = rng.standard_normal((37, 53)).astype(np.float32)
    out = np.full((37, 53), np.nan, np.float32)
    assert pyai.ops.matmul(a, b, transpose_b=True, times=times, out=out) is out
    np.testing.assert_array_equal(out, pyai.ops.matmul(a, b, transpose_b=True) * times)
    with pytest.raises(ValueError, match=r"^times: expected shape \(37, 53\), the product's, got \(53, 37\)"):
        pyai.ops.matmul(a, b, transpose_b=True, times=times.T)
    with pytest.raises(TypeError, match="^times: "):
        pyai.ops.matmul(a, b, transpose_b=True, times=times.astype(np.complex64))
    with pytest.raises(ValueError, match="out: shares memory with a or b"):
        pyai.ops.matmul(a, b, transpose_b=True, times=times, out=times)
    for name in ("numba-cuda", "cuda"):
        if "matmul_times" not in dispatch.ops_of(name) and dispatch.unavailable_reason(name) is None:
            with pytest.raises(NotImplementedError, match="^times: .* not implemented on backend"):
                pyai.ops.matmul(a, b, transpose_b=True, times=times, backend=name)


# the loops of test_matmul_times_is_the_product_then_numpys_multiply, a blocked product of
# several slices and panels, and few rows made as C^T and turned (matmul.turns_product)
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (300, 77, 1), (7, 1, 13), (2048, 1, 128), (5, 33, 17),
                                   (100, 128, 256), (130, 17, 129), (389, 517, 301), (211, 2053, 557),
                                   (64, 480, 1100)])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_matmul_leaky_relu_grad_is_the_product_then_the_gradient(backend, rng, m, n, k, transpose_a, transpose_b):
    """leaky_relu_output=y: the product times y's leaky ReLU gradient as it is made (dy W^T
    made into the layer below's d pre-activation), the floats of the product and then
    ops.leaky_relu_grad, bit for bit; within rounding of float64. y has zeros, negative zeros
    and values of both signs."""
    require("matmul_leaky_relu_grad", backend)
    a, b = operands(rng, m, n, k, transpose_a, transpose_b)
    y = rng.standard_normal((m, n)).astype(np.float32)
    y.reshape(-1)[::7] = 0.0
    y.reshape(-1)[3::11] = -0.0
    alpha = 0.17
    out = pyai.ops.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b, leaky_relu_output=y, alpha=alpha)
    assert out.dtype == np.float32 and out.shape == (m, n)
    product = pyai.ops.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    np.testing.assert_array_equal(out, pyai.ops.leaky_relu_grad(product, y, alpha))
    exact = (a.T if transpose_a else a).astype(np.float64) @ (b.T if transpose_b else b)
    exact = np.where(y > 0, exact, np.float32(alpha) * exact)
    assert_close(f"matmul leaky grad {backend} {m}x{n}x{k} ta={transpose_a} tb={transpose_b}", out, exact, MATMUL_TOL)


def test_matmul_leaky_relu_grad_into_out_and_its_errors(rng):
    a, b = operands(rng, 37, 53, 29, False, True)
    y = rng.standard_normal((37, 53)).astype(np.float32)
    out = np.full((37, 53), np.nan, np.float32)
    assert pyai.ops.matmul(a, b, transpose_b=True, leaky_relu_output=y, alpha=0.3, out=out) is out
    np.testing.assert_array_equal(out, pyai.ops.leaky_relu_grad(pyai.ops.matmul(a, b, transpose_b=True), y, 0.3))
    expected = r"^leaky_relu_output: expected shape \(37, 53\), the product's, got \(53, 37\)"
    with pytest.raises(ValueError, match=expected):
        pyai.ops.matmul(a, b, transpose_b=True, leaky_relu_output=y.T)
    with pytest.raises(TypeError, match="^leaky_relu_output: "):
        pyai.ops.matmul(a, b, transpose_b=True, leaky_relu_output=y.astype(np.complex64))
    with pytest.raises(ValueError, match="^alpha: "):
        pyai.ops.matmul(a, b, transpose_b=True, leaky_relu_output=y, alpha=float("nan"))
    with pytest.raises(ValueError, match="^times, leaky_relu_output: expected at most one of them"):
        pyai.ops.matmul(a, b, transpose_b=True, leaky_relu_output=y, times=y)
    with pytest.raises(ValueError, match="out: shares memory with a or b"):
        pyai.ops.matmul(a, b, transpose_b=True, leaky_relu_output=y, out=y)
    for name in ("numba-cuda", "cuda"):
        if "matmul_leaky_relu_grad" not in dispatch.ops_of(name):
            with pytest.raises(NotImplementedError, match="^leaky_relu_output: .* not implemented on backend"):
                pyai.ops.matmul(a, b, transpose_b=True, leaky_relu_output=y, backend=name)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("rows,depth", [(1, 1), (5, 17), (12, 16), (13, 33), (25, 47), (40, 16)])
@pytest.mark.parametrize("ones_row", [False, True])
def test_packing_a_equals_its_reference_and_stays_in_its_slivers(rng, transposed, rows, depth, ones_row):
    """pack_a's vector paths write whole vectors wider than a sliver's row (each store spilling
    into the next packed row): every packed float equals A's, the padding rows are 0 (but for a
    row of ones right after A's rows where asked: column_sums), and nothing past the packed
    slivers is written. Blocks at the start and at the very end of A, where the vector paths must
    not read past A's last row."""
    from pyai.kernels.numba_cpu.matmul import pack_a
    from pyai.kernels.numba_cpu.matmul_micro import MR
    total_rows, total_depth = rows + 7, depth + 3
    matrix = rng.standard_normal((total_rows, total_depth)).astype(np.float32)
    stored = np.ascontiguousarray(matrix.T) if transposed else matrix
    strides = (1, total_rows) if transposed else (total_depth, 1)
    slivers = -(-(rows + ones_row) // MR)
    for row0, depth0 in ((0, 0), (total_rows - rows, total_depth - depth)):
        buffer = np.full(slivers * depth * MR + 64, np.nan, np.float32)
        pack_a(stored.reshape(-1), *strides, row0, rows, depth0, depth,
               buffer[:slivers * depth * MR].reshape((slivers, depth, MR)), ones_row)
        block = np.zeros((slivers * MR, depth), np.float32)
        block[:rows] = matrix[row0:row0 + rows, depth0:depth0 + depth]
        if ones_row:
            block[rows] = 1.0
        expected = block.reshape(slivers, MR, depth).transpose(0, 2, 1)
        np.testing.assert_array_equal(buffer[:slivers * depth * MR].reshape(slivers, depth, MR), expected)
        assert np.isnan(buffer[slivers * depth * MR:]).all()


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("m,a_rows,k", [(1, 1, 300), (13, 12, 700), (24, 24, 512), (129, 128, 2048), (37, 36, 1100)])
def test_packing_a_slice_by_slice_equals_packing_it_sliver_by_sliver(rng, transposed, m, a_rows, k):
    """The few-rows loop packs A a slice of K a task (pack_a_slice), or a sliver a task: the same
    packed floats, slice after slice, each slice's slivers together, a row of ones after A's rows
    where C has one more (column_sums); K of one slice, several, and a merged last slice."""
    from pyai.kernels.numba_cpu import matmul as kernels
    stored = rng.standard_normal((k, a_rows) if transposed else (a_rows, k)).astype(np.float32)
    strides = (1, a_rows) if transposed else (k, 1)
    slivers = -(-m // kernels.MR)
    by_slivers = np.full(slivers * k * kernels.MR, np.nan, np.float32)
    by_slices = by_slivers.copy()
    for s in range(slivers):
        kernels.pack_a_sliver(stored.reshape(-1), *strides, a_rows, by_slivers, m, k, s)
    for j in range(kernels.slice_count(k)):
        kernels.pack_a_slice(stored.reshape(-1), *strides, a_rows, by_slices, m, k, j)
    np.testing.assert_array_equal(by_slices, by_slivers)
    depth = k if kernels.slice_count(k) == 1 else kernels.KC   # the first slice: its rows as A's
    first = by_slices[:slivers * depth * kernels.MR]
    op_a = np.zeros((slivers * kernels.MR, depth), np.float32)
    op_a[:a_rows] = (stored.T if transposed else stored)[:, :depth]
    op_a[a_rows:m] = 1.0
    np.testing.assert_array_equal(first.reshape(slivers, depth, kernels.MR),
                                  op_a.reshape(slivers, kernels.MR, depth).transpose(0, 2, 1))


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("cols,depth", [(1, 1), (16, 17), (33, 16), (40, 47), (256, 256), (70, 320)])
def test_packing_b_equals_its_reference_and_leaves_the_padding_rows(rng, transposed, cols, depth):
    """pack_b writes row p of every sliver in turn (row-major B) or turns squares (transposed B):
    every packed float equals B's, columns past the last are 0, and each sliver's padding rows
    (packed_rows(depth) - depth, between it and the next) and what follows the slivers are not
    written. Panels at the start and at the very end of B, rows 1024 floats (4 KB) apart and not."""
    from pyai.kernels.numba_cpu.matmul import B_PAD, pack_b, packed_rows
    from pyai.kernels.numba_cpu.matmul_micro import NR
    assert packed_rows(depth) == depth + B_PAD and B_PAD > 0
    for total_cols in (cols + 5, 1024 + cols):
        total_depth = depth + 3
        matrix = rng.standard_normal((total_depth, total_cols)).astype(np.float32)
        stored = np.ascontiguousarray(matrix.T) if transposed else matrix
        strides = (1, total_depth) if transposed else (total_cols, 1)
        slivers, rows = -(-cols // NR), packed_rows(depth)
        for depth0, col0 in ((0, 0), (total_depth - depth, total_cols - cols)):
            buffer = np.full(slivers * rows * NR + 64, np.nan, np.float32)
            packed = buffer[:slivers * rows * NR].reshape((slivers, rows, NR))
            pack_b(stored.reshape(-1), *strides, depth0, depth, col0, cols, packed)
            block = np.zeros((depth, slivers * NR), np.float32)
            block[:, :cols] = matrix[depth0:depth0 + depth, col0:col0 + cols]
            np.testing.assert_array_equal(packed[:, :depth], block.reshape(depth, slivers, NR).transpose(1, 0, 2))
            assert np.isnan(packed[:, depth:]).all() and np.isnan(buffer[slivers * rows * NR:]).all()


@pytest.mark.parametrize("depth", [1, 17, 256, 300])
@pytest.mark.parametrize("activation", [None, "leaky_relu", "tanh"])
def test_the_first_tiles_pack_b_as_pack_b_does_and_make_their_tiles(rng, depth, activation):
    """pack_b_in_first_tiles (the few-rows loop, a row-major B): the tiles of A's first sliver
    store each B sliver they read in pack_b's layout, padding rows untouched, and their C rows are
    A's first MR rows times B (float64 reference), with the bias and activation of the last slice;
    a slice deeper than KC is two parts, as multiply_block's. Rows 1024 floats (4 KB) apart and not."""
    from pyai.kernels.common import ACTIVATIONS, activation_reference
    from pyai.kernels.numba_cpu.matmul import pack_b, pack_b_in_first_tiles, packed_rows
    from pyai.kernels.numba_cpu.matmul_micro import MR, NR
    slivers, rows = 3, packed_rows(depth)
    for total_cols in (slivers * NR + 7, 1024):
        b = rng.standard_normal((depth, total_cols)).astype(np.float32)
        a = rng.standard_normal((MR, depth)).astype(np.float32)
        bias = rng.standard_normal(total_cols).astype(np.float32)
        a_packed = np.ascontiguousarray(a.T).reshape((1, depth, MR))
        buffer = np.full(slivers * rows * NR + 64, np.nan, np.float32)
        expected = np.full(slivers * rows * NR + 64, np.nan, np.float32)
        pack_b(b.reshape(-1), total_cols, 1, 0, depth, 5, slivers * NR,
               expected[:slivers * rows * NR].reshape((slivers, rows, NR)))
        c = rng.standard_normal((MR, total_cols)).astype(np.float32)
        before = c.copy()
        pack_b_in_first_tiles(a_packed, b.reshape(-1), 5, total_cols, buffer, rows, c, 5, slivers, True, True, bias,
                              True, ACTIVATIONS[activation], np.float32(0.2))
        np.testing.assert_array_equal(buffer, expected)
        columns = slice(5, 5 + slivers * NR)
        reference = activation_reference(a.astype(np.float64) @ b[:, columns] + bias[columns], activation, 0.2)
        assert_close("first tiles", c[:, columns], reference, 1e-5)
        np.testing.assert_array_equal(np.delete(c, np.s_[columns], axis=1), np.delete(before, np.s_[columns], axis=1))


def test_the_tile_loops_count_no_references():
    """The loops over a block's tiles compile without Numba's reference counts: a count is taken
    and dropped for every array passed to each tile's kernel, locked instructions that wait for
    the tile's stores to C (8% of a 1024 x 64 x 784 weight gradient's time on an AMD EPYC Zen 3);
    attention's tile loops likewise."""
    from pyai.kernels.numba_cpu import attention_backward, attention_forward
    from pyai.kernels.numba_cpu.matmul import multiply_block, pack_b_in_first_tiles
    from pyai.kernels.numba_cpu.matmul_gathered import multiply_gathered
    attention_loops = (attention_forward.forward_block, attention_forward.tile_scores,
                       attention_forward.online_softmax, attention_forward.tile_values, attention_forward.tile_exps,
                       attention_backward.key_tile_backward, attention_backward.tile_probabilities,
                       attention_backward.tile_score_gradients,
                       attention_backward.add_transposed, attention_backward.add_query_gradients)
    for loop in (multiply_block, pack_b_in_first_tiles, multiply_gathered, *attention_loops):
        assert loop.targetoptions.get("_nrt") is False, loop.py_func.__name__


@pytest.mark.parametrize("m,k", [(1, 1), (5, 13), (16, 16), (37, 53), (32, 257), (129, 300)])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_one_column_equals_the_tiled_product_bit_for_bit(rng, m, k, transpose_a, transpose_b):
    """gemv (N = 1) sums as the tiles do, so a column's floats do not depend on how many columns
    a product has: here against the same column computed as one of two by the tiles."""
    from pyai.kernels.numba_cpu import matmul as kernels
    a, b = operands(rng, m, 1, k, transpose_a, transpose_b)
    two = np.concatenate([b, 2 * b], axis=0 if transpose_b else 1)
    one_column = pyai.ops.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    tiled = pyai.ops.matmul(a, two, transpose_a=transpose_a, transpose_b=transpose_b)
    assert kernels.thread_count(m, 1, k) == 1   # the gemv path
    np.testing.assert_array_equal(one_column[:, 0], tiled[:, 0])
    assert_close("gemv vs float64", one_column, (a.T if transpose_a else a).astype(np.float64)
                 @ (b.T if transpose_b else b), MATMUL_TOL)


@pytest.mark.parametrize("m,k", [(4500, 300), (6272, 128)])
def test_a_tall_transposed_column_summed_by_depth_equals_the_tiles(rng, m, k):
    """gemv_by_depth (A stored transposed: a logit layer's weight gradient x^T dy) sums blocks of
    GEMV_BLOCK rows with the loops swapped: with several blocks a thread, a ragged last vector and
    two KC slices (4500 x 300), bit for bit the tiled product's column."""
    from pyai.kernels.numba_cpu import matmul as kernels
    a, b = operands(rng, m, 1, k, True, False)
    two = np.concatenate([b, 2 * b], axis=1)
    assert m > 2 * kernels.GEMV_BLOCK
    one_column = pyai.ops.matmul(a, b, transpose_a=True)
    np.testing.assert_array_equal(one_column[:, 0], pyai.ops.matmul(a, two, transpose_a=True)[:, 0])
    assert_close("gemv by depth vs float64", one_column, a.T.astype(np.float64) @ b, MATMUL_TOL)


@pytest.mark.parametrize("m,k", [(3001, 131), (6272, 128), (1000, 700)])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("activation", [None, "sigmoid"])
def test_a_tall_column_on_every_thread_gives_gemv_floats(rng, m, k, transpose_a, activation):
    """A one-column product that moves more than SERIAL_BYTES runs on every thread, each a run of
    C's rows (gemv_parallel): each row's floats are the one-thread gemv's, bias and activation
    included, whatever the cut (runs of whole vectors and a ragged last row)."""
    from pyai.kernels.numba_cpu import matmul as kernels
    a, b = operands(rng, m, 1, k, transpose_a, False)
    bias = rng.standard_normal(1).astype(np.float32)
    assert 4 * (m * k + k + m) >= kernels.SERIAL_BYTES and kernels.thread_count(m, 1, k) > 1
    parallel = kernels.fused_matmul(a, b, transpose_a, False, bias, activation, 0.0)
    serial = np.empty_like(parallel)
    strides = (1, m) if transpose_a else (k, 1)
    kernels.gemv(a.reshape(-1), *strides, b.reshape(-1), serial, k, bias, True,
                 kernels.ACTIVATIONS[activation], np.float32(0.0))
    np.testing.assert_array_equal(parallel, serial)
    assert_close("tall column vs float64", parallel,
                 kernels.matmul_reference(a.T if transpose_a else a, b, bias, activation), MATMUL_TOL)


def test_a_row_major_is_packed_where_its_rows_crowd_one_set_of_l1():
    """A sliver's rows 4 KB apart share one L1 set (64 sets of 64-byte lines): counted by
    rows_in_one_set, and past CROWDED_ROWS (BLOCK_CROWDED_ROWS in the blocked loop) such an A is
    packed, not read in place; the products of such an A are checked by the transposed-A test
    below (its row-major copies of K = 2048, rows 8 KB apart, against float64)."""
    from pyai.kernels.numba_cpu import matmul as kernels
    mr = kernels.MR
    assert kernels.rows_in_one_set(1024) == mr and kernels.rows_in_one_set(2048) == mr
    assert kernels.rows_in_one_set(512) == -(-mr // 2)
    assert kernels.rows_in_one_set(784) == 1 and kernels.rows_in_one_set(1) == mr   # 1: one line
    crowded, block_crowded = kernels.CROWDED_ROWS, kernels.BLOCK_CROWDED_ROWS
    assert kernels.readable_in_place(784, 1, crowded) and kernels.readable_in_place(1, 100, block_crowded)
    assert kernels.readable_in_place(1024, 1, crowded) == (mr <= crowded)
    # the blocked loop packs AVX-512's slivers of rows 2 KB apart too, six in each of two sets,
    # where L1 has 8 ways; 12 ways hold them (blocking.l1_ways)
    assert kernels.readable_in_place(512, 1, block_crowded) == (mr < 12 or kernels.L1_WAYS >= 12)
    assert kernels.readable_in_place(512, 1, crowded) and kernels.readable_in_place(256, 1, block_crowded)


def test_thread_grid_cuts_rows_unless_c_is_far_wider_than_tall():
    """Every thread gets a rectangle; with K of KC or more a square C (and one up to
    A_ROW_WEIGHT times wider than tall) is cut into row parts, a far wider one into column parts;
    a shallow product weighs rows and columns alike; too few slivers, fewer parts."""
    from pyai.kernels.numba_cpu import matmul as kernels
    mr, nr, deep = kernels.MR, kernels.NR, kernels.KC
    assert kernels.thread_grid(512, 512, 2, deep) == (2, 1) and kernels.thread_grid(512, 512, 4, deep) == (4, 1)
    assert kernels.thread_grid(256, 512, 2, deep) == (2, 1) and kernels.thread_grid(256, 2048, 2, deep) == (1, 2)
    assert kernels.thread_grid(512, 512, 2, 64) == (1, 2) and kernels.thread_grid(256, 512, 2, 64) == (1, 2)
    assert kernels.thread_grid(513, 512, 2, 64) == (2, 1)
    assert kernels.thread_grid(2048, 128, 2, 64) == (2, 1) and kernels.thread_grid(mr, 700, 2, deep) == (1, 2)
    assert kernels.thread_grid(mr, nr, 2, deep) == (1, 1) and kernels.thread_grid(512, 512, 1, deep) == (1, 1)
    for m, n, threads in [(512, 512, 8), (300, 5000, 6), (97, 130, 3)]:
        for k in (1, deep):
            rows, cols = kernels.thread_grid(m, n, threads, k)
            assert rows * cols == threads


@pytest.mark.parametrize("m,n,k,transpose_a", [(512, 512, 512, False), (131, 257, 300, True), (300, 101, 2048, False)])
def test_every_thread_grid_gives_the_same_floats(rng, m, n, k, transpose_a):
    """Each tile sums its KC slices in the same order whoever computes it, whether a thread's
    panel reads A in place or packs it: cutting C by rows or by columns changes no float."""
    from pyai.kernels.numba_cpu import matmul as kernels
    a = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    outputs = []
    for grid in [(1, 1), (2, 1), (1, 2), (2, 2), (3, 1)]:
        c = np.full((m, n), np.nan, np.float32)
        kernels.gemm(a.reshape(-1), *((1, m) if transpose_a else (k, 1)), m, b.reshape(-1), n, 1, c, k, bias, True,
                     kernels.ACTIVATIONS["leaky_relu"], np.float32(0.1), *grid, kernels.MC, kernels.NC)
        outputs.append(c)
    for c in outputs[1:]:
        np.testing.assert_array_equal(c, outputs[0])
    assert_close("gemm vs float64", outputs[0],
                 kernels.matmul_reference(a.T if transpose_a else a, b, bias, "leaky_relu", 0.1), MATMUL_TOL)


@pytest.mark.parametrize("m,n,k,transpose_a,transpose_b", [(256, 256, 256, False, False), (131, 257, 300, True, False),
                                                         (197, 389, 17, False, True), (256, 131, 320, True, True)])
@pytest.mark.parametrize("activation", [None, "leaky_relu", "tanh"])
def test_a_shallow_product_of_a_few_hundred_rows_takes_the_few_rows_loop_with_the_blocked_floats(
        rng, m, n, k, transpose_a, transpose_b, activation):
    """Past FEW_ROWS, a product one slice deep whose A is small (takes_few_rows_loop) runs the
    few-rows loop, one thread or two; each tile sums the same slice in the same order as in the
    blocked loop nest (forced by a blocking), so the floats are the same."""
    from pyai.kernels.numba_cpu import matmul as kernels
    m = max(kernels.FEW_ROWS + 1, min(m, kernels.FEW_NC // 2))   # (a CPU with a small L2 has no such product)
    assert kernels.takes_few_rows_loop(m, n, k, 2) == (m <= kernels.FEW_NC // 2)
    a, b = operands(rng, m, n, k, transpose_a, transpose_b)
    bias = rng.standard_normal(n).astype(np.float32)
    blocked = kernels.fused_matmul(a, b, transpose_a, transpose_b, bias, activation, 0.1,
                                   blocking=(kernels.MC, kernels.NC))
    few = kernels.fused_matmul(a, b, transpose_a, transpose_b, bias, activation, 0.1)
    np.testing.assert_array_equal(few, blocked)
    one = np.full((m, n), np.nan, np.float32)
    kernels.gemm_few_rows_one_thread(a.reshape(-1), *((1, m) if transpose_a else (k, 1)), m, b.reshape(-1),
                                     *((1, k) if transpose_b else (n, 1)), one, k, bias, True,
                                     kernels.ACTIVATIONS[activation], np.float32(0.1), 1, 1,
                                     kernels.NO_WORKSPACE)
    np.testing.assert_array_equal(one, blocked)
    assert_close("few-rows loop vs float64", few, kernels.matmul_reference(
        a.T if transpose_a else a, b.T if transpose_b else b, bias, activation, 0.1), MATMUL_TOL)


def test_few_columns_of_a_deep_product_are_cut_in_depth_only_where_every_slice_is_kc_deep():
    """cut_in_depth: at most two NR slivers of C a thread (or a transposed A, packed, of K at least
    4 N deep), two slices of K or more a thread, and no merged last slice (one of KC plus under a
    quarter more); never on one thread."""
    from pyai.kernels.numba_cpu import matmul as kernels
    nr, kc = kernels.NR, kernels.KC
    assert kernels.cut_in_depth(1, 4 * kc, 2) and kernels.cut_in_depth(4 * nr, 8 * kc, 2)
    assert kernels.cut_in_depth(nr, 4 * kc + kc // 4, 2)         # a short last slice of its own
    assert not kernels.cut_in_depth(4 * nr + 1, 8 * kc, 2)       # five slivers for two threads
    assert not kernels.cut_in_depth(nr, 4 * kc + kc // 4 - 1, 2)  # the last slice merged
    assert not kernels.cut_in_depth(nr, 3 * kc, 2) and not kernels.cut_in_depth(nr, 8 * kc, 1)
    # more columns where A is transposed and packed, and K at least 4 N deep
    assert kernels.cut_in_depth(16 * nr, 64 * nr, 2, True) == (not kernels.TRANSPOSED_IN_PLACE)
    assert not kernels.cut_in_depth(16 * nr, 64 * nr - 1, 2, True) and not kernels.cut_in_depth(16 * nr, 64 * nr, 2)
    # and then more rows than FEW_ROWS where K is 8 slices deep a thread, and slices of A and B fit in L2
    few_nc, transposed_packed = kernels.FEW_NC, not kernels.TRANSPOSED_IN_PLACE
    assert kernels.packs_deep_a(few_nc, few_nc // 2, 16 * kc, 2, True) == transposed_packed
    assert not kernels.packs_deep_a(few_nc, few_nc // 2, 16 * kc, 2, False)
    assert not kernels.packs_deep_a(few_nc, few_nc // 2 + 1, 16 * kc, 2, True)
    assert not kernels.packs_deep_a(few_nc, few_nc // 2, 15 * kc, 2, True)
    assert kernels.slice_count(kc) == 1 and kernels.slice_count(kc + kc // 4 - 1) == 1
    assert kernels.slice_count(kc + kc // 4) == 2 and kernels.slice_count(10) == 1


@pytest.mark.parametrize("m,n,k,transpose_a", [(128, 32, 2048, True), (97, 10, 1100, False), (5, 64, 1024, True),
                                               (128, 128, 1024, False), (13, 77, 1357, True), (100, 500, 2048, True),
                                               (200, 100, 4096, True)])
@pytest.mark.parametrize("column_sums", [False, True])
def test_a_deep_product_cut_in_depth_gives_the_one_thread_floats(rng, m, n, k, transpose_a, column_sums):
    """The few-rows loop with K's slices cut among tasks (two runs, three, four): the first run's
    slices summed into C, every later slice on a page, the pages added in order; each float is
    the one-thread loop's, bit for bit, a row of column sums included (column_sums), and close to
    float64; through fused_matmul too, where cut_in_depth takes the cut."""
    from pyai.kernels.numba_cpu import matmul as kernels
    a, b = operands(rng, m, n, k, transpose_a, False)
    rows = m + 1 if column_sums else m
    flat = (a.reshape(-1), *((1, m) if transpose_a else (k, 1)), m, b.reshape(-1), n, 1)
    epilogue = (kernels.NO_BIAS, False, kernels.NONE, np.float32(0.0))
    one = np.full((rows, n), np.nan, np.float32)
    kernels.gemm_few_rows_one_thread(*flat, one, k, *epilogue, 1, 1, kernels.NO_WORKSPACE)
    for depth_parts in (2, 3, 4):
        cut = np.full((rows, n), np.nan, np.float32)
        kernels.gemm_few_rows(*flat, cut, k, *epilogue, 1, depth_parts, kernels.NO_WORKSPACE)
        np.testing.assert_array_equal(cut, one)
        # and in a workspace of few_rows_floats floats, with NaN past its end left as it was
        floats = kernels.few_rows_floats(rows, n, k, 1, depth_parts)
        space = np.full(floats + 64, np.nan, np.float32)
        cut[:] = np.nan
        kernels.gemm_few_rows(*flat, cut, k, *epilogue, 1, depth_parts, space[:floats])
        np.testing.assert_array_equal(cut, one)
        assert np.isnan(space[floats:]).all()
    product = kernels.fused_matmul(a, b, transpose_a, False, None, None, 0.0, column_sums=column_sums)
    np.testing.assert_array_equal(product, one)
    op_a = a.T if transpose_a else a
    expected = kernels.column_sums_reference(op_a, b) if column_sums else kernels.matmul_reference(op_a, b)
    assert_close("cut in depth vs float64", one, expected, MATMUL_TOL)


def test_the_few_rows_loop_is_for_few_rows_or_a_small_shallow_a_with_columns_for_every_thread():
    from pyai.kernels.numba_cpu import matmul as kernels
    deepest, nr = kernels.DEEPEST, kernels.NR
    most = kernels.FEW_NC // 2                   # rows of a shallow product's A in a quarter of L2
    m = max(most, kernels.FEW_ROWS + 1)
    assert kernels.takes_few_rows_loop(kernels.FEW_ROWS, 1, 4096, 64)
    assert kernels.takes_few_rows_loop(m, 4 * nr, deepest, 2) == (most > kernels.FEW_ROWS)
    assert not kernels.takes_few_rows_loop(m + 1, 4 * nr, deepest, 2)       # A past a quarter of L2
    assert not kernels.takes_few_rows_loop(m, 4 * nr, deepest + 1, 2)       # more than one slice
    assert not kernels.takes_few_rows_loop(m, 4 * nr, deepest, 3)           # a thread without two slivers


@pytest.mark.parametrize("m,n,k", [(1, 16, 700), (7, 33, 2048), (128, 103, 2048), (127, 128, 300), (384, 40, 517),
                                   (131, 250, 64), (600, 128, 33)])
@pytest.mark.parametrize("activation", [None, "leaky_relu"])
def test_a_transposed_a_gives_the_floats_of_its_row_major_copy(rng, m, n, k, activation):
    """A stored transposed with short stored rows is read where it lies (readable_in_place: a
    weight gradient's x^T, few rows or a block of many), else packed; either way the same FMAs in
    the same order as its row-major copy's, read in place or packed: the same floats. Few and
    many rows, ragged last slivers, slices of K, stored rows past IN_PLACE_STRIDE."""
    from pyai.kernels.numba_cpu import matmul as kernels
    stored = rng.standard_normal((k, m)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    for blocking in (None, (2 * kernels.MR, 128)):
        transposed = kernels.fused_matmul(stored, b, True, False, bias, activation, 0.1, blocking=blocking)
        row_major = kernels.fused_matmul(np.ascontiguousarray(stored.T), b, False, False, bias, activation, 0.1,
                                         blocking=blocking)
        np.testing.assert_array_equal(transposed, row_major)
    assert_close("transposed A vs float64", transposed,
                 kernels.matmul_reference(stored.T, b, bias, activation, 0.1), MATMUL_TOL)


@pytest.mark.parametrize("m,n,k", [(150, 150, 300), (131, 157, 519), (140, 133, 256 + 63)])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_short_last_slice_and_panel_keep_the_sums_of_kc_slices(rng, m, n, k, transpose_b):
    """A rest of K under KC // 4 is packed with the last slice and a rest of columns under
    NC // 4 with the last panel (block_end): the products must still be summed per
    KC slice, so every column equals gemv's (which sums per KC slice) bit for bit. Many rows
    and a narrow NC (128) take the blocked loop nest with a merged panel."""
    from pyai.kernels.numba_cpu import matmul as kernels
    a, b = operands(rng, m, n, k, False, transpose_b)
    assert kernels.block_end(k // kernels.KC * kernels.KC - kernels.KC, k, kernels.KC) == k   # the last slice merged
    assert kernels.block_end(0, n, 128) == n                                                  # and the last panel
    tiled = kernels.fused_matmul(a, b, False, transpose_b, None, None, 0.0, blocking=(2 * kernels.MR, 128))
    for j in (0, n - 1):
        column = np.ascontiguousarray(b[j:j + 1] if transpose_b else b[:, j:j + 1])
        one_column = pyai.ops.matmul(a, column, transpose_b=transpose_b)
        np.testing.assert_array_equal(one_column[:, 0], tiled[:, j])
    assert_close("merged slices vs float64", tiled, kernels.matmul_reference(a, b.T if transpose_b else b),
                 MATMUL_TOL)


@pytest.mark.parametrize("m,n,k", [(37, 3001, 300), (5, 2900, 100), (64, 6272, 256)])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_few_rows_times_a_wide_b_go_a_panel_at_a_time(rng, m, n, k, transpose_b):
    """Few rows times a B wider than FEW_NC columns a thread: B packed and multiplied a FEW_NC-column
    panel at a time (so that a packed slice stays in L2), every column still gemv's floats."""
    from pyai.kernels.numba_cpu import matmul as kernels
    a, b = operands(rng, m, n, k, False, transpose_b)
    assert m <= kernels.FEW_ROWS and n > 2 * (kernels.FEW_NC + kernels.FEW_NC // 4)
    out = pyai.ops.matmul(a, b, transpose_b=transpose_b)
    for j in (0, kernels.FEW_NC - 1, kernels.FEW_NC, n - 1):
        column = np.ascontiguousarray(b[j:j + 1] if transpose_b else b[:, j:j + 1])
        np.testing.assert_array_equal(pyai.ops.matmul(a, column, transpose_b=transpose_b)[:, 0], out[:, j])
    assert_close("wide B vs float64", out, kernels.matmul_reference(a, b.T if transpose_b else b), MATMUL_TOL)


@pytest.mark.parametrize("m,n,k", [(389, 67, 700), (300, 5, 2100), (700, 200, 1031)])
@pytest.mark.parametrize("transpose_a", [False, True])
def test_whole_depth_panels_keep_the_floats_of_the_slice_order(rng, m, n, k, transpose_a):
    """B's panel packed for all of K at once (it fits where one KC x NC slice would go), each block
    of C then taking every slice in turn, must give the floats of the order that packs one slice
    at a time and runs it over every block (forced here by an NC too narrow for a whole-depth
    panel): the same sums, slice by slice, in the same order."""
    from pyai.kernels.numba_cpu import matmul as kernels
    a, b = operands(rng, m, n, k, transpose_a, False)
    mc = 2 * kernels.MR
    assert -(-n // kernels.NR) * kernels.NR * k <= 1024 * kernels.KC and k > kernels.DEEPEST
    assert m > kernels.FEW_ROWS and 2 * m * n * k >= kernels.SERIAL_FLOPS   # the blocked loop nest
    whole = kernels.fused_matmul(a, b, transpose_a, False, None, None, 0.0, blocking=(mc, 1024))
    sliced = kernels.fused_matmul(a, b, transpose_a, False, None, None, 0.0, blocking=(mc, kernels.NR))
    np.testing.assert_array_equal(whole, sliced)
    assert_close("whole-depth panels vs float64", whole, kernels.matmul_reference(a.T if transpose_a else a, b),
                 MATMUL_TOL)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "gelu"])
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (64, 1024, 784), (7, 13, 1), (389, 300, 200), (140, 133, 319)])
def test_sigmoid_tanh_gelu_epilogues_give_their_ops_floats(rng, activation, m, k, n):
    """The epilogue applies sigmoid, tanh and gelu in their elementwise ops' own float32
    operations (on a whole block of C, not tile by tile): linear(x, w, b, activation) equals the
    op applied to linear(x, w, b) bit for bit, for few rows, many rows (blocks of MC rows),
    one column (gemv) and the plain matmul of a first run."""
    from pyai.kernels.numba_cpu import matmul as kernels, plain_matmul
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = (rng.standard_normal((k, n)) / np.sqrt(k) * 3).astype(np.float32)   # pre-activations of +-3 or so
    b = rng.standard_normal(n).astype(np.float32)
    op = getattr(pyai.ops, activation)
    for fused_matmul in (kernels.fused_matmul, plain_matmul.fused_matmul):
        pre = fused_matmul(x, w, False, False, b, None, 0.0)
        np.testing.assert_array_equal(fused_matmul(x, w, False, False, b, activation, 0.0), op(pre))
    blocked = kernels.fused_matmul(x, w, False, False, b, activation, 0.0, blocking=(2 * kernels.MR, 128))
    np.testing.assert_array_equal(blocked, op(kernels.fused_matmul(x, w, False, False, b, None, 0.0)))


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (64, 1024, 784), (7, 13, 1), (389, 300, 200), (140, 133, 319),
                                   (5, 1, 33), (2048, 128, 512), (4099, 1031, 1)])
def test_gelu_derivative_epilogue_gives_gelus_floats(rng, m, k, n):
    """linear_with_gelu_derivative makes gelu and its derivative in the product's epilogue (the
    bias, then room for the derivative, in the bias's place: epilogue.GELU_DERIVATIVE): both equal
    gelu_forward_with_derivative of the plain linear bit for bit, with a bias and without, for few
    rows, many rows (blocks of MC rows, and the narrow blocking of a tuned run), one column, one
    step of depth (outer) and the plain matmul of a first run; and float64's gelu and gelu' within
    float32 rounding."""
    from pyai.kernels.numba_cpu import matmul as kernels, plain_matmul
    from pyai.kernels.numba_cpu.gelu import gelu_backward_reference, gelu_forward_reference, gelu_forward_with_derivative
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = (rng.standard_normal((k, n)) / np.sqrt(k) * 3).astype(np.float32)   # pre-activations of +-3 or so
    b = rng.standard_normal(n).astype(np.float32)
    for bias in (b, None):
        pre = kernels.fused_matmul(x, w, False, False, bias, None, 0.0)
        expected = gelu_forward_with_derivative(pre)
        for module in (kernels, plain_matmul):
            for made, want in zip(module.linear_with_gelu_derivative(x, w, bias), expected, strict=True):
                np.testing.assert_array_equal(made, want)
        floats = np.concatenate([np.zeros(n, np.float32) if bias is None else bias, np.full(m * n, np.nan, np.float32)])
        y = kernels.fused_matmul(x, w, False, False, None, None, 0.0, blocking=(2 * kernels.MR, 128), gelu_floats=floats)
        np.testing.assert_array_equal(y, expected[0])
        np.testing.assert_array_equal(floats[n:].reshape(m, n), expected[1])
    # against float64, relative to the outputs' norm, or to 1 where it is smaller: in gelu's far tail
    # (x < -5, gelu(x) ~ 1e-7 and less) the exp's rounded argument puts ~|x|^3 / 10 ulps on the
    # value, which a single such element (1 x 1 x 1) would show against itself
    exact = pre.astype(np.float64)   # the last pass's (no bias)
    for name, made, want in (("gelu", expected[0], gelu_forward_reference(exact)),
                             ("gelu'", expected[1], gelu_backward_reference(np.ones_like(exact), exact))):
        assert np.all(np.isfinite(made)), name
        error = np.linalg.norm(made - want) / max(np.linalg.norm(want), 1.0)
        assert error <= 1e-6, f"{name} vs float64: {error:.2e} > 1e-6"


def test_linear_returns_gelus_derivative_on_every_path(rng, monkeypatch):
    """ops.linear(..., activation="gelu", return_derivative=True): (y, gelu'(x @ w + b)), for a
    batch and a single row, equal to ops.gelu's return_derivative of the plain linear, by the
    backend's fused kernel and by the two ops where a backend has none; clear errors for a flag
    that is not a bool and for another activation."""
    x = rng.standard_normal((37, 29)).astype(np.float32)
    w = rng.standard_normal((29, 45)).astype(np.float32)
    b = rng.standard_normal(45).astype(np.float32)
    expected = pyai.ops.gelu(pyai.ops.linear(x, w, b), return_derivative=True)
    row = pyai.ops.gelu(pyai.ops.linear(x[3], w, b), return_derivative=True)
    implements = pyai.ops.implements
    for fused in (True, False):
        monkeypatch.setattr(pyai.ops, "implements", lambda op, backend=None, fused=fused: (
            (fused or op != "linear_with_gelu_derivative") and implements(op, backend)))
        for made, want in zip(pyai.ops.linear(x, w, b, activation="gelu", return_derivative=True), expected,
                              strict=True):
            np.testing.assert_array_equal(made, want)
        for made, want in zip(pyai.ops.linear(x[3], w, b, activation="gelu", return_derivative=True), row,
                              strict=True):
            assert made.shape == (45,)
            np.testing.assert_array_equal(made, want)
    with pytest.raises(ValueError, match="^return_derivative: only with activation='gelu', got activation='tanh'"):
        pyai.ops.linear(x, w, b, activation="tanh", return_derivative=True)
    with pytest.raises(TypeError, match="^return_derivative: "):
        pyai.ops.linear(x, w, b, activation="gelu", return_derivative="yes")


@pytest.mark.parametrize("m,k,n,transpose_a", [(64, 1024, 784, False), (64, 512, 771, False), (37, 300, 16, False),
                                               (200, 600, 67, False), (96, 257, 35, True), (12, 7, 9, False),
                                               (128, 64, 776, False), (128, 2048, 10, True), (60, 96, 16, False)])
@pytest.mark.parametrize("activation", [None, "leaky_relu"])
def test_a_last_sliver_of_few_columns_is_the_whole_tiles_left_half(rng, m, k, n, transpose_a, activation):
    """A last B sliver of at most WIDTH columns, against a packed A sliver or A in place, runs a
    narrow kernel (half a tile's FMAs), the same FMAs in the same order as a whole tile's left
    half: C equals, bit for bit, the product with B (and the bias) widened by zero columns to
    whole slivers, cut back. A in place and packed, one slice and many, few rows and the blocked
    loop, with and without the epilogue (applied after a narrow tile, in registers in a whole
    one)."""
    from pyai.kernels.numba_cpu import matmul as kernels
    a = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    wide = -(-n // kernels.NR) * kernels.NR
    wide_b = np.zeros((k, wide), np.float32)
    wide_b[:, :n] = b
    wide_bias = np.zeros(wide, np.float32)
    wide_bias[:n] = bias
    out = kernels.fused_matmul(a, b, transpose_a, False, bias, activation, 0.2)
    np.testing.assert_array_equal(out, kernels.fused_matmul(a, wide_b, transpose_a, False, wide_bias, activation,
                                                            0.2)[:, :n])
    reference = bias_then_activation(kernels.matmul_reference(a.T if transpose_a else a, b), bias, activation, 0.2)
    assert_close(f"{m}x{k}x{n} vs float64", out, reference, MATMUL_TOL)


def bias_then_activation(pre, b, activation, alpha):
    """The epilogue as separate float32 steps: + b, then ReLU or leaky ReLU (x if x > 0 else alpha x)."""
    y = pre + b
    if activation is None:
        return y
    return np.where(y > 0, y, np.float32(0) if activation == "relu" else np.float32(alpha) * y)


@pytest.mark.parametrize("activation,alpha", [("relu", 0.0), ("leaky_relu", 0.2), ("leaky_relu", -1.5), (None, 0.0)])
def test_the_epilogue_in_place_keeps_nan_infinities_and_signed_zeros(rng, activation, alpha):
    """apply_epilogue, the pass over a stored tile (whole vectors, then a ragged rest a float at
    a time), as separate float32 ops: + b, then the activation, NaN, infinities, signed zeros and
    subnormals included, bit for bit; the rows and columns outside the tile untouched."""
    from pyai.kernels.numba_cpu.epilogue import ACTIVATIONS, apply_epilogue
    special = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, -1e-40, 1e-40, -1.5, 2.5], np.float32)
    c = rng.standard_normal((5, 61)).astype(np.float32)
    c[1, 3:3 + special.size] = special
    c[2, 50:50 + special.size] = special
    b = rng.standard_normal(61).astype(np.float32)
    b[3:12] = 0.0
    expected = c.copy()
    expected[1:4, 3:60] = bias_then_activation(c[1:4, 3:60], b[3:60], activation, alpha)
    apply_epilogue(c, 1, 3, 3, 57, b, True, ACTIVATIONS[activation], np.float32(alpha))
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(c), nan)
    np.testing.assert_array_equal(c.view(np.uint32)[~nan], expected.view(np.uint32)[~nan])


@pytest.mark.parametrize("m,n", [(1, 1), (7, 13), (128, 256), (129, 6272)])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_one_step_of_depth_is_the_outer_product_then_the_epilogue(rng, m, n, transpose_a, transpose_b):
    """K = 1 (outer): every float is a[i] * b[j] rounded once, whatever the transposes; then
    + b and the activation as the separate float32 ops give them. 129 x 6272 moves more than
    SERIAL_BYTES, so it runs on every thread, a run of rows each."""
    from pyai.kernels.numba_cpu import matmul as kernels
    a, b = operands(rng, m, n, 1, transpose_a, transpose_b)
    product = a.reshape(-1, 1) * b.reshape(1, -1)
    assert (kernels.thread_count(m, n, 1) > 1) == (n == 6272)
    np.testing.assert_array_equal(kernels.fused_matmul(a, b, transpose_a, transpose_b, None, None, 0.0), product)
    bias = rng.standard_normal(n).astype(np.float32)
    for activation, alpha in ((None, 0.0), ("relu", 0.0), ("leaky_relu", -1.5)):
        np.testing.assert_array_equal(kernels.fused_matmul(a, b, transpose_a, transpose_b, bias, activation, alpha),
                                      bias_then_activation(product, bias, activation, alpha))
    for activation in ("sigmoid", "tanh", "gelu"):
        np.testing.assert_array_equal(kernels.fused_matmul(a, b, transpose_a, transpose_b, bias, activation, 0.0),
                                      getattr(pyai.ops, activation)(product + bias))
    assert_close("outer product vs float64", pyai.ops.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b),
                 a.reshape(-1, 1).astype(np.float64) * b.reshape(1, -1), MATMUL_TOL)


@pytest.mark.parametrize("activation,alpha", [(None, 0.0), ("relu", 0.0), ("leaky_relu", 0.01), ("leaky_relu", -1.5)])
@pytest.mark.parametrize("m,k,n,transpose_a", [(1, 1, 1, False), (64, 1024, 784, False), (100, 37, 64, True),
                                               (389, 300, 200, False), (389, 300, 200, True), (2048, 128, 128, False),
                                               (61, 700, 97, True), (133, 517, 45, False)])
def test_bias_and_relus_in_registers_give_the_separate_ops_floats(rng, activation, alpha, m, k, n, transpose_a):
    """Whole tiles add the bias and apply ReLU or leaky ReLU in registers as they are stored
    (matmul_micro.finish), ragged tiles after: either way the floats of the product, then + b,
    then the activation, each rounded to float32 as separate ops round it. Covers few and many
    rows, A packed and read in place, half tiles (rows past a multiple of MR), slices of K and
    blocks of MC rows; alpha -1.5 tells `x if x > 0 else alpha x` from max(x, alpha x)."""
    from pyai.kernels.numba_cpu import matmul as kernels
    x = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    for blocking in (None, (2 * kernels.MR, 128)):
        pre = kernels.fused_matmul(x, w, transpose_a, False, None, None, 0.0, blocking=blocking)
        fused = kernels.fused_matmul(x, w, transpose_a, False, b, activation, alpha, blocking=blocking)
        np.testing.assert_array_equal(fused, bias_then_activation(pre, b, activation, alpha))


@pytest.mark.parametrize("activation,alpha", [(None, 0.0), ("leaky_relu", 0.2)])
def test_conv_bias_and_leaky_relu_in_registers_give_the_separate_ops_floats(rng, activation, alpha):
    """The same for a convolution's implicit GEMM (windows read in place): 40 output channels,
    a whole tile of 32 and a ragged one."""
    x = rng.standard_normal((3, 9, 7, 16)).astype(np.float32)
    w = rng.standard_normal((3, 3, 16, 40)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    pre = pyai.ops.conv2d(x, w)
    fused = pyai.ops.conv2d(x, w, b, activation=activation, alpha=alpha)
    np.testing.assert_array_equal(fused, bias_then_activation(pre, b, activation, alpha))


@pytest.mark.parametrize("activation,alpha", [(None, 0.0), ("leaky_relu", 0.2), ("leaky_relu", 3.0), ("relu", 0.0),
                                              ("sigmoid", 0.0)])
@pytest.mark.parametrize("out_channels", [16, 20])
@pytest.mark.parametrize("x_shape", [(3, 5, 4, 16), (1, 5, 3, 16)])
def test_transposed_conv_epilogue_gives_the_separate_ops_floats(rng, activation, alpha, out_channels, x_shape):
    """A strided transposed convolution computes its stride phases apart, each tile written
    straight to the rows of its pixels in y (conv2d_transpose.phase_conv), the bias and leaky ReLU
    added in registers as it is stored, any other activation on its rows after: the floats of the
    op without them, then + b, then the activation (whole tiles of channels, and 4 more past them;
    60 windows a phase, whole slivers of rows, and 15, a ragged last sliver)."""
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((4, 4, out_channels, 16)).astype(np.float32)
    b = rng.standard_normal(out_channels).astype(np.float32)
    pre = pyai.ops.conv2d_transpose(x, w, stride=2)
    fused = pyai.ops.conv2d_transpose(x, w, b, stride=2, activation=activation, alpha=alpha)
    expected = (pyai.ops.sigmoid(pre + b) if activation == "sigmoid"
                else bias_then_activation(pre, b, activation, alpha))
    np.testing.assert_array_equal(fused, expected)


@pytest.mark.parametrize("activation,alpha", [(None, 0.0), ("relu", 0.0), ("leaky_relu", 0.01), ("leaky_relu", 0.3)])
@pytest.mark.parametrize("channels,out_channels,stride", [(1, 80, 2), (3, 16, 1), (1, 64, 1)])
def test_few_input_conv_activations_in_registers_give_the_ops_floats(rng, activation, alpha, channels, out_channels,
                                                                     stride):
    """A convolution of a 1- or 3-channel image (conv2d_few_inputs.py) applies leaky ReLU to its
    vectors as it stores them, any other activation to the stored row: either way the floats of
    the op on its output (four-vector groups and single vectors)."""
    from pyai.kernels.numba_cpu.conv2d_few_inputs import few_inputs
    from pyai.kernels.numba_cpu.im2col import geometry
    x = rng.standard_normal((5, 11, 9, channels)).astype(np.float32)
    w = rng.standard_normal((3, 3, channels, out_channels)).astype(np.float32)
    b = rng.standard_normal(out_channels).astype(np.float32)
    assert few_inputs(geometry(x.shape[1:], (3, 3), (stride, stride), "same"), out_channels)
    pre = pyai.ops.conv2d(x, w, b, stride=stride)
    fused = pyai.ops.conv2d(x, w, b, stride=stride, activation=activation, alpha=alpha)
    expected = {None: pre, "relu": np.where(pre > 0, pre, np.float32(0)),
                "leaky_relu": np.where(pre > 0, pre, np.float32(alpha) * pre)}[activation]
    np.testing.assert_array_equal(fused, expected)



@pytest.mark.parametrize("m,n,k,transpose_a,col_chunks,depth_parts", [(128, 512, 2048, True, 1, 2),
                                                                      (97, 300, 700, False, 2, 1),
                                                                      (64, 1100, 520, False, 3, 1),
                                                                      (13, 40, 1357, True, 1, 3)])
def test_the_few_rows_loop_works_in_its_workspace_and_no_further(rng, m, n, k, transpose_a, col_chunks, depth_parts):
    """gemm_few_rows cuts its packed A, pages and B buffers from a workspace of few_rows_floats
    floats: the floats of the loop that makes its own, the floats past the workspace untouched;
    fused_matmul lends it memory.scratch where it is memory.POOLED_BYTES or more."""
    from pyai.kernels.numba_cpu import matmul as kernels
    from pyai.kernels.numba_cpu import memory
    a, b = operands(rng, m, n, k, transpose_a, False)
    flat = (a.reshape(-1), *((1, m) if transpose_a else (k, 1)), m, b.reshape(-1), n, 1)
    epilogue = (kernels.NO_BIAS, False, kernels.NONE, np.float32(0.0))
    own = np.full((m, n), np.nan, np.float32)
    kernels.gemm_few_rows(*flat, own, k, *epilogue, col_chunks, depth_parts, kernels.NO_WORKSPACE)
    floats = kernels.few_rows_floats(m, n, k, col_chunks, depth_parts)
    space = np.full(floats + 64, np.nan, np.float32)
    given = np.full((m, n), np.nan, np.float32)
    kernels.gemm_few_rows(*flat, given, k, *epilogue, col_chunks, depth_parts, space[:floats])
    np.testing.assert_array_equal(given, own)
    assert np.isnan(space[floats:]).all() and not np.isnan(space[:floats]).all()
    assert_close("few-rows loop in a workspace vs float64", given,
                 kernels.matmul_reference(a.T if transpose_a else a, b), MATMUL_TOL)
    kept = kernels.few_rows_kept(m, n, k, col_chunks, depth_parts)
    assert kept == (floats if 4 * floats >= memory.POOLED_BYTES else 0)
    workspace = kernels.few_rows_workspace(m, n, k, col_chunks, depth_parts)
    assert workspace.size >= kept if kept else workspace.size == 0


def test_numba_threads_reads_the_count_numba_gives():
    """numba_threads, which reads Numba's thread count without its check that the pool is up
    once it is: the count numba.get_num_threads gives, as numba.set_num_threads leaves it."""
    import numba
    from pyai.kernels.numba_cpu import matmul as kernels
    previous = numba.get_num_threads()   # (starts the pool)
    try:
        for count in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(count)
            assert kernels.numba_threads() == numba.get_num_threads() == count
    finally:
        numba.set_num_threads(previous)


@pytest.mark.parametrize("m,n,k,column_sums", [(64, 512, 784, False), (128, 2048, 512, True), (13, 40, 1357, False),
                                               (256, 256, 256, False), (1024, 1024, 1024, False), (5, 7, 9, True)])
def test_route_gives_the_few_rows_loops_their_workspace_size(m, n, k, column_sums):
    """route's fourth item, the floats fused_matmul takes from memory.scratch: few_rows_kept's for
    the few-rows loop it chose (its parts of columns, depth or rows), 0 for any other loop."""
    from pyai.kernels.numba_cpu import matmul as kernels
    rows = m + 1 if column_sums else m
    for threads in (1, 2):
        loop, parts, depth_parts, kept = kernels.route(m, n, k, False, False, kernels.NONE, False, column_sums,
                                                       threads, False)
        expected = {kernels.ONE_THREAD: kernels.few_rows_kept(rows, n, k, 1, 1),
                    kernels.BY_ROWS: kernels.few_rows_kept(rows, n, k, 1, 1, parts),
                    kernels.FEW_ROWS_PARTS: kernels.few_rows_kept(rows, n, k, parts, depth_parts)}.get(loop, 0)
        assert kept == expected


@pytest.mark.parametrize("m,n,k,transpose_a", [(129, 300, 256, False), (250, 31, 700, True), (397, 64, 300, False),
                                               (640, 97, 257, True), (144, 1, 512, False), (37, 100, 784, False),
                                               (64, 256, 300, True), (128, 7, 100, False)])
@pytest.mark.parametrize("epilogue", ["bias_leaky_relu", "times", "leaky_relu_grad", "column_sums"])
def test_row_parts_of_the_few_rows_loop_give_its_floats(rng, m, n, k, transpose_a, epilogue):
    """gemm_few_rows_by_rows, C's rows in two or three runs of whole slivers, each run the
    one-thread few-rows loop on its rows: the floats of that loop on all of C, bit for bit, with
    a bias and leaky ReLU, a matrix of factors (each run's own rows of it), a leaky ReLU's
    gradient, or a row of column sums (in the last run), and close to float64."""
    from pyai.kernels.numba_cpu import matmul as kernels
    a, b = operands(rng, m, n, k, transpose_a, False)
    rows = m + 1 if epilogue == "column_sums" else m
    flat = (a.reshape(-1), *((1, m) if transpose_a else (k, 1)), m, b.reshape(-1), n, 1)
    factors = rng.standard_normal((rows, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    code, floats, has_bias = {"bias_leaky_relu": (kernels.ACTIVATIONS["leaky_relu"], bias, True),
                              "times": (kernels.TIMES, factors.reshape(-1), False),
                              "leaky_relu_grad": (kernels.LEAKY_RELU_GRAD, factors.reshape(-1), False),
                              "column_sums": (kernels.NONE, kernels.NO_BIAS, False)}[epilogue]
    one = np.full((rows, n), np.nan, np.float32)
    kernels.gemm_few_rows_one_thread(*flat, one, k, floats, has_bias, code, np.float32(0.1), 1, 1,
                                     kernels.NO_WORKSPACE)
    for parts in (2, 3):
        by_rows = np.full((rows, n), np.nan, np.float32)
        kernels.gemm_few_rows_by_rows(*flat, by_rows, k, floats, has_bias, code, np.float32(0.1), parts,
                                      kernels.few_rows_workspace(rows, n, k, 1, 1, parts))
        np.testing.assert_array_equal(by_rows, one)
    op_a = a.T if transpose_a else a
    if epilogue == "column_sums":
        expected = kernels.column_sums_reference(op_a, b)
    elif epilogue == "bias_leaky_relu":
        expected = kernels.matmul_reference(op_a, b, bias, "leaky_relu", 0.1)
    else:
        product = op_a.astype(np.float64) @ b
        expected = product * (factors if epilogue == "times" else np.where(factors > 0, 1.0, 0.1))
    assert_close("row parts of the few-rows loop vs float64", one, expected, MATMUL_TOL)


def test_row_parts_take_deep_products_of_a_few_hundred_rows_on_several_threads():
    """by_row_parts: a product the blocked loop would take, K at least KC, FEW_ROWS < M <=
    ROW_PARTS_ROWS, a grid of row parts, or one of at most FEW_ROWS rows, few columns and a
    row-major B; not GELU_DERIVATIVE, several threads, and a run's slices of A and B and its rows
    of C under half of L2 (FEW_NC x KC floats)."""
    from pyai.kernels.numba_cpu import matmul as kernels
    kc, few_nc, none, mr = kernels.KC, kernels.FEW_NC, kernels.NONE, kernels.MR

    def fits(m, n, threads=2):
        part = -(-(-(-m // mr)) // threads) * mr
        return part * kc + kc * min(n, few_nc) + part * n < few_nc * kc

    m, n, k = 2 * kernels.FEW_ROWS, kernels.FEW_ROWS, 2 * kc   # of the sizes where by_row_parts may say yes
    assert kernels.by_row_parts(m, n, k, 2, none) == fits(m, n)
    assert not kernels.by_row_parts(m, n, k, 1, none)
    # one NR sliver of columns: not the few-rows loop's, so the blocked loop's, in row parts only K deep
    assert kernels.by_row_parts(m, kernels.NR, k, 2, none) == fits(m, kernels.NR)
    assert not kernels.by_row_parts(m, kernels.NR, kc - 1, 2, none)
    # few rows take row parts only with few columns (FEW_COLUMN_SLIVERS a thread), a sliver of rows a thread
    few_columns = 2 * kernels.FEW_COLUMN_SLIVERS * kernels.NR
    assert kernels.by_row_parts(kernels.FEW_ROWS, few_columns, k, 2, none) == fits(kernels.FEW_ROWS, few_columns)
    assert kernels.by_row_parts(64, 100, 100, 2, none) == fits(64, 100)   # at any depth
    assert not kernels.by_row_parts(kernels.FEW_ROWS, few_columns + 1, k, 2, none)
    assert not kernels.by_row_parts(mr, few_columns, k, 2, none) and not kernels.by_row_parts(64, 100, 100, 1, none)
    assert not kernels.by_row_parts(64, 100, 100, 2, none, transpose_b=True)   # B packed by a pass of its own
    assert not kernels.by_row_parts(kernels.ROW_PARTS_ROWS + 1, 16, k, 2, none)
    assert not kernels.by_row_parts(m, n, k, 2, kernels.GELU_DERIVATIVE)
    assert kernels.by_row_parts(384, 384, 384, 2, none) == fits(384, 384) == (few_nc >= 1024)   # a 2 MB L2
    assert not kernels.by_row_parts(512, 512, 512, 2, none)


def test_row_parts_take_the_few_rows_loops_products_of_more_rows_where_b_is_small(monkeypatch):
    """by_row_parts for a product the few-rows loop takes with more than FEW_ROWS rows (one slice
    deep): row parts where B is row-major, its slice at most a quarter of L2 (FEW_NC x KC / 2
    floats) and every thread has ROW_PART_SLIVERS slivers of rows; FEW_NC as a 2 MB L2 makes it."""
    from pyai.kernels.numba_cpu import matmul as kernels
    monkeypatch.setattr(kernels, "FEW_NC", 1024)
    kc, mr, nr, none = kernels.KC, kernels.MR, kernels.NR, kernels.NONE
    fewest = 2 * kernels.ROW_PART_SLIVERS * mr   # rows of the fewest slivers that take row parts
    for m in [m for m in (kernels.FEW_ROWS + 1, fewest - mr, fewest, 512) if m > kernels.FEW_ROWS]:
        many_rows = -(-m // mr) >= 2 * kernels.ROW_PART_SLIVERS
        for n, k in ((256, kc), (512, kc), (512 + nr, kc), (1024, kc // 2), (1024, kc // 2 + 1), (100, 64)):
            assert kernels.takes_few_rows_loop(m, n, k, 2)
            expected = many_rows and k * n <= 1024 * kc // 2
            assert kernels.by_row_parts(m, n, k, 2, none) == expected, (m, n, k)
            assert kernels.by_row_parts(m, n, k, 2, kernels.LEAKY_RELU_GRAD) == expected
            assert not kernels.by_row_parts(m, n, k, 2, none, transpose_b=True)   # B packed by a pass of its own
            assert not kernels.by_row_parts(m, n, k, 1, none)
            assert not kernels.by_row_parts(m, n, k, 2, kernels.GELU_DERIVATIVE)
