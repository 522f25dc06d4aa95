"""Conv2D and Conv2DTranspose on the numba-cuda backend (kernels/numba_cuda/conv2d*.py: im2col,
the tiled matmul and a col2im gather) against the float64 references of the numba-cpu files.

tests/test_conv.py holds every backend to TensorFlow over many shapes and tests/test_golden.py
to TensorFlow's saved outputs; without a GPU both take only what the CUDA simulator runs in
reasonable time (it runs each GPU thread as a Python thread: a small matmul takes ~1 s), so
this file covers the geometry with the smallest shapes that reach each case: strides 1, 2 and
(1, 2), both paddings, 1x1 (the gather skipped at stride 1), 2x3, 3x3 and 4x4 kernels, a kernel
smaller than its stride (output pixels no window reaches), 1x1 images, 1 and several channels,
every activation of the forward epilogues (the matmul's for Conv2D, col2im's for the transpose).

Tolerance: 1e-5 relative (||out - ref|| / ||ref||), float32 sums of at most a few dozen products
against float64. The bias gradient is held to 1e-5 of ||sum |dy|||, its terms' size, instead:
with 1 to 3 output channels its sums of N*OH*OW values of mean 0 may cancel to near 0.
"""

import numpy as np
import pytest

import pyai
from conftest import assert_close
from pyai import device, dispatch, ops
from pyai.kernels.common import conv_output_size, conv_transpose_output_size, geometry, transpose_geometry
from pyai.kernels.numba_cpu.bias_grad import bias_grad_reference
from pyai.kernels.numba_cpu.conv2d import conv2d_reference
from pyai.kernels.numba_cpu.conv2d_backward import conv2d_backward_reference
from pyai.kernels.numba_cpu.conv2d_transpose import conv2d_transpose_reference
from pyai.kernels.numba_cpu.conv2d_transpose_backward import conv2d_transpose_backward_reference

BACKEND = "numba-cuda"
TOL = 1e-5
REASON = dispatch.unavailable_reason(BACKEND)
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"numba-cuda is not usable: {REASON}")

# (batch, height, width, in channels, kernel height, kernel width, out channels, stride, padding,
# the forward's activation); in and out are Conv2D's, the transpose maps the other way
CASES = [
    (2, 5, 4, 2, 3, 3, 3, 1, "same", "leaky_relu"),
    (1, 5, 5, 1, 3, 3, 2, 2, "valid", "relu"),
    (1, 6, 5, 3, 4, 4, 1, 2, "same", "sigmoid"),
    (2, 4, 5, 2, 2, 3, 3, (1, 2), "valid", "tanh"),
    (2, 1, 1, 3, 3, 3, 2, 1, "same", "gelu"),
    (1, 3, 4, 2, 1, 1, 3, 1, "same", None),
    (1, 3, 3, 2, 1, 1, 2, 2, "valid", "leaky_relu"),   # a transpose's pixels between the strides: bias only
]
IDS = [f"{c[0]}x{c[1]}x{c[2]}x{c[3]}-k{c[4]}x{c[5]}-o{c[6]}-s{c[7]}-{c[8]}-{c[9]}" for c in CASES]
ALPHA = 0.1


@pytest.fixture
def numba_cuda():
    from numba import cuda
    with pyai.use_backend(BACKEND):
        yield cuda


def normal(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


def strides_of(stride):
    return (stride, stride) if isinstance(stride, int) else stride


def conv_case(rng, case, transpose):
    """x, w (in the op's Keras layout), the bias (None without an activation), stride, padding."""
    n, h, w, c, kh, kw, o, stride, padding, activation = case
    if transpose:   # from Conv2D's output shape back to its input's: x has O channels, y C
        h, w, c, o = *out_size((h, w), (kh, kw), stride, padding, False), o, c
    kernel = normal(rng, kh, kw, o, c) if transpose else normal(rng, kh, kw, c, o)
    return normal(rng, n, h, w, c), kernel, None if activation is None else normal(rng, o), stride, padding


def out_size(size, kernel, stride, padding, transpose):
    """(OH, OW) of the op, as Keras computes them."""
    rule = conv_transpose_output_size if transpose else conv_output_size
    return tuple(rule(*each, padding) for each in zip(size, kernel, strides_of(stride)))


def random_dy(rng, x, w, stride, padding, transpose):
    out_channels = w.shape[2 if transpose else 3]
    return normal(rng, x.shape[0], *out_size(x.shape[1:3], w.shape[:2], stride, padding, transpose), out_channels)


def assert_bias_gradient_close(name, db, dy, ref):
    scale = np.linalg.norm(np.abs(dy.astype(np.float64)).reshape(-1, dy.shape[3]).sum(axis=0))
    error = np.linalg.norm(np.asarray(db, np.float64) - ref) / scale
    assert error <= TOL, f"{name}: error {error:.3e} of ||sum |dy|||, tolerance {TOL:.1e}"


OPS = {False: (ops.conv2d, ops.conv2d_grad, conv2d_reference, conv2d_backward_reference),
       True: (ops.conv2d_transpose, ops.conv2d_transpose_grad, conv2d_transpose_reference,
              conv2d_transpose_backward_reference)}


def assert_matches_the_references(rng, transpose, inputs, activation, where):
    """y (bias and activation), then dx, dw and db of a random dy, against the float64 references."""
    forward, gradient, forward_reference, gradient_reference = OPS[transpose]
    x, w, b, stride, padding = inputs
    y = forward(x, w, b, stride=stride, padding=padding, activation=activation, alpha=ALPHA)
    assert_close(f"{where}: y", y, forward_reference(x, w, b, strides_of(stride), padding, activation, ALPHA), TOL)
    dy = normal(rng, *y.shape)
    dx, dw, db = gradient(dy, x, w, stride=stride, padding=padding)
    dx_ref, dw_ref, db_ref = gradient_reference(dy, x, w, strides_of(stride), padding)
    assert_close(f"{where}: dx", dx, dx_ref, TOL)
    assert_close(f"{where}: dw", dw, dw_ref, TOL)
    assert_bias_gradient_close(f"{where}: db", db, dy, db_ref)


@pytest.mark.parametrize("transpose", [False, True], ids=["conv2d", "conv2d_transpose"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_and_gradients_match_the_references(numba_cuda, rng, case, transpose):
    assert_matches_the_references(rng, transpose, conv_case(rng, case, transpose), case[9],
                                  f"{OPS[transpose][0].__name__} {case} ({BACKEND})")


@pytest.mark.parametrize("transpose", [False, True], ids=["conv2d", "conv2d_transpose"])
def test_skipped_gradients_are_none_and_the_rest_unchanged(numba_cuda, rng, transpose):
    _, gradient, _, gradient_reference = OPS[transpose]
    x, w, _, stride, padding = conv_case(rng, CASES[3], transpose)
    dy = random_dy(rng, x, w, stride, padding, transpose)
    dx_ref, dw_ref, db_ref = gradient_reference(dy, x, w, strides_of(stride), padding)
    options = {"stride": stride, "padding": padding}
    dx, dw, db = gradient(dy, x, w, weight_gradient=False, **options)
    assert dw is None and db is None
    assert_close("dx alone", dx, dx_ref, TOL)
    dx, dw, db = gradient(dy, x, w, input_gradient=False, **options)
    assert dx is None
    assert_close("dw without dx", dw, dw_ref, TOL)
    assert_bias_gradient_close("db without dx", db, dy, db_ref)
    assert gradient(dy, x, w, input_gradient=False, weight_gradient=False, **options) == (None, None, None)


def test_results_of_gpu_arrays_stay_on_the_gpu_and_out_of_the_pool(numba_cuda, rng):
    """y, dx, dw and db of device arrays are device arrays, the caller's: the products write y
    and dw in place through 2-d views, and a later call on numpy arrays of the same shapes, which
    reuses pooled memory (its copy of x has dx's shape), leaves them as they were."""
    x, w, b, stride, padding = conv_case(rng, CASES[5], False)
    y = ops.conv2d(numba_cuda.to_device(x), w, b, stride=stride, padding=padding)
    dy = normal(rng, *y.shape)
    grads = ops.conv2d_grad(numba_cuda.to_device(dy), x, w, stride=stride, padding=padding)
    assert all(device.is_device_array(array) for array in (y, *grads))
    other = normal(rng, *x.shape)
    ops.conv2d_grad(normal(rng, *y.shape), other, w, stride=stride, padding=padding)
    ops.conv2d(other, w, b, stride=stride, padding=padding)
    assert_close("y left on the GPU", y.copy_to_host(), conv2d_reference(x, w, b, strides_of(stride), padding), TOL)
    references = conv2d_backward_reference(dy, x, w, strides_of(stride), padding)
    for name, out, ref in zip(("dx", "dw"), grads, references):
        assert_close(f"{name} left on the GPU", out.copy_to_host(), ref, TOL)
    assert_bias_gradient_close("db left on the GPU", grads[2].copy_to_host(), dy, references[2])


@pytest.mark.parametrize("transpose", [False, True], ids=["conv2d", "conv2d_transpose"])
def test_chunks_of_images_give_the_references(numba_cuda, rng, monkeypatch, transpose):
    """A workspace of two images' cols takes 3 images in chunks of 2 and 1 (im2col.image_chunks):
    y, dx, dw (the chunks' products added in order) and db as the references."""
    from pyai.kernels.numba_cuda import im2col as cuda_im2col
    case = (3, 4, 3, 2, 3, 3, 3, 2, "same", "relu")
    inputs = conv_case(rng, case, transpose)
    x, w, _, stride, padding = inputs
    g = (transpose_geometry(x.shape, w.shape, strides_of(stride), padding) if transpose
         else geometry(x.shape[1:], w.shape[:2], strides_of(stride), padding))
    monkeypatch.setattr(cuda_im2col, "WORKSPACE_FLOATS", 2 * g.windows * g.depth + 1)
    assert cuda_im2col.image_chunks(g, 3) == [(0, 2), (2, 1)]
    assert_matches_the_references(rng, transpose, inputs, "relu", f"{OPS[transpose][0].__name__} {case} in chunks")


def test_gathers_loop_over_elements_when_the_grid_is_capped(numba_cuda, rng, monkeypatch):
    """One block of 256 threads for im2col's 2430 floats and col2im's 270: each thread takes
    several, as on a GPU every thread does past MAX_BLOCKS blocks."""
    import pyai.kernels.numba_cuda as package
    monkeypatch.setattr(package, "MAX_BLOCKS", 1)
    x, w, _, stride, padding = conv_case(rng, (1, 5, 6, 9, 3, 3, 2, 1, "same", None), False)
    dy = random_dy(rng, x, w, stride, padding, False)
    dx_ref, dw_ref, db_ref = conv2d_backward_reference(dy, x, w, strides_of(stride), padding)
    dx, dw, db = ops.conv2d_grad(dy, x, w, stride=stride, padding=padding)
    assert_close("dx, one block", dx, dx_ref, TOL)
    assert_close("dw, one block", dw, dw_ref, TOL)
    assert_bias_gradient_close("db, one block", db, dy, db_ref)


@pytest.mark.parametrize("shape", [(1,), (3, 2), (64, 5), (2, 9, 7, 3), (70, 300)])
def test_bias_gradient_sums_runs_of_rows_in_order(rng, monkeypatch, shape):
    """Row counts under, at and past a run of PART_ROWS (64) rows, 1-d to 4-d; one block of 256
    threads, which (70, 300)'s 600 partials and 300 sums make loop."""
    import pyai.kernels.numba_cuda as package
    from pyai._backends.numba_cuda import on_device
    from pyai.kernels.numba_cuda.bias_grad import bias_grad
    monkeypatch.setattr(package, "MAX_BLOCKS", 1)
    dy = normal(rng, *shape)
    assert_close(f"bias gradient of {shape}", on_device(bias_grad)(dy), bias_grad_reference(dy), TOL)
