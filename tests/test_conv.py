"""conv2d and conv2d_transpose, and their gradients, against TensorFlow (tf.nn.conv2d,
tf.nn.conv2d_transpose, GradientTape) and Keras's Conv2D / Conv2DTranspose layers with pyai's weights.

Tolerance: 1e-5 relative (||pyai - tf|| / ||tf||): float32 on both sides, sums of at most a few
hundred products (kh*kw*C, or N*OH*OW for a weight gradient) added in different orders. A
misplaced window, a wrong padding side or a lost image is off by far more. The bias gradient is
held to 1e-5 of its terms' size, ||sum |dy|||, instead: with 1 to 3 output channels it is 1 to 3
sums of N*OH*OW values of mean 0, which may cancel to near 0 (seen: 1.5e-5 of the sum itself over
144 terms), while a dropped pixel moves it by ~1/N*OH*OW of that size.

The shapes are chosen to be awkward: 1x1 images, odd and non-square sizes, 1 and many channels,
strides 1, 2 and (1, 2), both paddings, a kernel as large as a 'valid' input, 1x1 kernels
(which skip im2col), kernels smaller than the stride (output pixels no window reaches), and
Conv2D layers of 1 to 3 output channels (computed directly, without the matmul). Images of
fewer channels than a vector go through im2col, or are summed directly where their windows are
short and the output channels whole vectors; the shapes of 16 or more channels (the first
ones a whole vector with AVX-512, 31 and 33 a vector and a ragged rest) through the implicit
GEMM (implicit_gemm.py), for the forward, the input gradient at stride 1 and the weight
gradient, and at a stride that divides the kernel, the stride phases' implicit GEMM.
"""

import numba
import numpy as np
import pytest

from conftest import assert_close, require, skip_in_cuda_simulator
from pyai import ops
from pyai.kernels.numba_cpu import im2col, implicit_gemm

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

TOLERANCE = 1e-5

# (batch, height, width, in channels, kernel height, kernel width, out channels, stride, padding)
SHAPES = [
    (2, 1, 1, 1, 3, 3, 5, 1, "same"),
    (3, 7, 5, 1, 3, 3, 8, 2, "same"),
    (2, 6, 9, 13, 4, 4, 6, 2, "same"),
    (2, 9, 7, 5, 3, 2, 17, (1, 2), "valid"),
    (1, 5, 4, 3, 5, 4, 2, 1, "valid"),
    (2, 8, 5, 37, 1, 1, 33, 1, "valid"),
    (2, 5, 7, 3, 1, 1, 2, 2, "same"),
    (2, 4, 3, 6, 1, 2, 3, 3, "valid"),
    (2, 6, 11, 9, 3, 3, 1, 1, "same"),        # few outputs: interior windows 4 at a time, edges alone
    (2, 7, 13, 5, 3, 2, 3, (1, 2), "same"),
    (3, 6, 7, 9, 3, 3, 1, 2, "same"),
    (2, 9, 8, 32, 3, 3, 1, 1, "same"),        # 1 to 3 outputs over whole vectors of channels
    (3, 7, 6, 20, 3, 2, 3, (2, 1), "valid"),   # ... and a rest past the last vector
    (2, 9, 29, 32, 3, 3, 1, 1, "same"),       # rows wide enough for eight outputs (or pixels of a phase) at once
    (2, 6, 19, 16, 3, 3, 2, 1, "valid"),      # ... three kernel columns over whole vectors: each pixel loaded once
    (3, 5, 13, 48, 3, 3, 3, 1, "same"),
    (2, 3, 2, 16, 3, 3, 1, 1, "same"),        # ... rows of two pixels and of one: every pixel at an end
    (1, 4, 1, 32, 3, 3, 2, 1, "same"),
    (2, 7, 20, 24, 4, 4, 1, 2, "same"),       # ... a transpose into one channel at stride 2, 24 = 16 + 8 channels
    (2, 5, 40, 3, 3, 3, 1, 1, "same"),        # ... and of 3 channels, under a vector
    (2, 1, 1, 17, 3, 3, 20, 1, "same"),
    (3, 7, 5, 16, 3, 3, 18, 2, "same"),
    (2, 9, 7, 33, 3, 2, 17, (1, 2), "valid"),
    (1, 5, 9, 31, 5, 3, 16, 1, "valid"),
    (2, 6, 5, 20, 4, 4, 35, 2, "valid"),
    (2, 13, 11, 24, 3, 3, 40, 1, "same"),
    # strided transposes whose stride divides the kernel, of 16 or more input channels: every
    # stride phase in one implicit GEMM (conv2d_transpose.py), and a Conv2D's input gradient so
    (2, 1, 1, 19, 4, 4, 21, 2, "same"),
    (3, 7, 5, 17, 4, 4, 16, 2, "same"),
    (2, 5, 6, 16, 4, 2, 33, (2, 1), "same"),
    (2, 7, 4, 18, 3, 3, 17, 3, "valid"),
    (2, 3, 5, 16, 2, 4, 20, 2, "valid"),
    # ... and where it does not: an implicit GEMM a phase over the taps that phase has (3x3 at
    # stride 2: 2x2, 2x1, 1x2 and 1x1 taps; a stride past the kernel: phases with no tap)
    (2, 6, 5, 16, 3, 3, 24, 2, "same"),
    (3, 5, 4, 20, 3, 2, 17, (2, 3), "valid"),
    (2, 4, 3, 16, 2, 2, 18, 3, "valid"),
    # a Conv2D of a few-channel image into whole vectors of output channels, summed directly
    # (conv2d_few_inputs.py): 1 and 3 channels, 3x3 and 5x5, four vectors, single vectors, both
    (2, 9, 8, 1, 3, 3, 32, 2, "same"),
    (3, 6, 7, 3, 3, 3, 48, 1, "valid"),
    (2, 1, 1, 1, 5, 5, 80, 1, "same"),
    (2, 9, 33, 1, 3, 3, 64, 2, "same"),       # dx into one channel, phases of 16 and 17 pixels
    (2, 1, 1, 1, 3, 3, 64, 1, "same"),        # ... dw three taps at a time: one pixel, two of its taps outside
    (2, 3, 2, 2, 3, 3, 80, 1, "same"),        # ... two pixels a row, every output at an end
    (2, 8, 7, 2, 3, 3, 64, (2, 1), "valid"),
    # ... windows inside the image read at offsets from their corner, the others listed: a border
    # of 2 under 5x5 'same', a 3x2 kernel at strides (1, 2)
    (2, 11, 9, 1, 5, 5, 40, 1, "same"),
    (3, 10, 7, 3, 3, 2, 24, (1, 2), "same"),
]
IDS = ["x".join(map(str, shape[:4])) + f"-k{shape[4]}x{shape[5]}-o{shape[6]}-s{shape[7]}-{shape[8]}"
       for shape in SHAPES]


def strides_of(stride):
    return (stride, stride) if isinstance(stride, int) else stride


def normal(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


def conv_case(rng, shape, transpose):
    n, h, w, c, kh, kw, o, stride, padding = shape
    x = normal(rng, n, h, w, c)
    kernel = normal(rng, kh, kw, o, c) if transpose else normal(rng, kh, kw, c, o)
    return x, kernel, normal(rng, o), stride, padding


def tf_forward(x, kernel, stride, padding, transpose, out_shape):
    if transpose:
        return tf.nn.conv2d_transpose(x, kernel, out_shape, strides_of(stride), padding.upper())
    return tf.nn.conv2d(x, kernel, strides_of(stride), padding.upper())


@pytest.mark.parametrize("transpose", [False, True], ids=["conv2d", "conv2d_transpose"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_forward_and_gradients_match_tensorflow(backend, rng, shape, transpose):
    op, grad = ("conv2d_transpose", "conv2d_transpose_grad") if transpose else ("conv2d", "conv2d_grad")
    require(op, backend)
    require(grad, backend)
    # ~5 s a case there: tests/test_numba_cuda_conv.py runs the simulator's few
    skip_in_cuda_simulator(backend, f"{op} over {len(SHAPES)} shapes, {shape} among them")
    x, kernel, bias, stride, padding = conv_case(rng, shape, transpose)
    y = getattr(ops, op)(x, kernel, bias, stride=stride, padding=padding, activation="leaky_relu", alpha=0.1)

    x_var, kernel_var, bias_var = tf.Variable(x), tf.Variable(kernel), tf.Variable(bias)
    with tf.GradientTape() as tape:
        pre = tf_forward(x_var, kernel_var, stride, padding, transpose, y.shape) + bias_var
    expected = tf.nn.leaky_relu(pre, alpha=0.1).numpy()
    where = f"{op} {shape} ({backend})"
    assert_close(f"{where}: output", y, expected, TOLERANCE)

    dy = normal(rng, *y.shape)
    expected_grads = tape.gradient(pre, [x_var, kernel_var, bias_var], output_gradients=dy)
    dx, dw, db = getattr(ops, grad)(dy, x, kernel, stride=stride, padding=padding)
    assert_close(f"{where}: dx", dx, expected_grads[0].numpy(), TOLERANCE)
    assert_close(f"{where}: dw", dw, expected_grads[1].numpy(), TOLERANCE)
    assert_sum_close(f"{where}: db", db, expected_grads[2].numpy(), np.abs(dy), TOLERANCE)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "gelu"])
@pytest.mark.parametrize("shape", [SHAPES[8], SHAPES[11], (3, 7, 5, 2, 3, 3, 1, 1, "same"), SHAPES[2],
                                   (2, 5, 6, 17, 3, 3, 5, 1, "same")],
                         ids=["direct-1-out", "direct-1-out-32ch", "direct-1-out-2ch", "im2col-matmul",
                              "implicit-gemm"])
def test_expensive_activations_match_tensorflow(rng, shape, activation):
    """tanh, sigmoid and gelu applied in the products' epilogue, over whole rows of the output at
    once where a tile or block holds whole rows (a DCGAN generator's one tanh channel), equal
    TensorFlow's activation of the convolution."""
    x, kernel, bias, stride, padding = conv_case(rng, shape, False)
    y = ops.conv2d(x, kernel, bias, stride=stride, padding=padding, activation=activation)
    pre = tf_forward(tf.constant(x), tf.constant(kernel), stride, padding, False, y.shape) + bias
    activate = {"tanh": tf.tanh, "sigmoid": tf.sigmoid, "gelu": lambda t: tf.nn.gelu(t, approximate=True)}
    expected = activate[activation](pre)
    assert_close(f"conv2d {shape} {activation}", y, expected.numpy(), TOLERANCE)


def assert_sum_close(name, out, ref, terms, tol):
    """out and ref sum `terms` over every axis but the last: held to tol of ||sum |terms|||."""
    assert np.shape(out) == ref.shape, f"{name}: shape {np.shape(out)} != {ref.shape}"
    assert np.all(np.isfinite(out)), f"{name}: not finite"
    size = np.linalg.norm(terms.reshape(-1, terms.shape[-1]).sum(axis=0, dtype=np.float64))
    error = np.linalg.norm(np.asarray(out, np.float64) - ref) / size
    assert error <= tol, f"{name}: error {error:.3e} of the terms' size > tolerance {tol:.1e}"


@pytest.mark.parametrize("transpose", [False, True], ids=["conv2d", "conv2d_transpose"])
def test_skipped_gradients_are_none_and_the_rest_unchanged(rng, transpose):
    op = ops.conv2d_transpose_grad if transpose else ops.conv2d_grad
    x, kernel, _, stride, padding = conv_case(rng, SHAPES[2], transpose)
    forward = ops.conv2d_transpose if transpose else ops.conv2d
    dy = normal(rng, *forward(x, kernel, stride=stride, padding=padding).shape)
    dx, dw, db = op(dy, x, kernel, stride=stride, padding=padding)
    only_dx = op(dy, x, kernel, stride=stride, padding=padding, weight_gradient=False)
    only_weights = op(dy, x, kernel, stride=stride, padding=padding, input_gradient=False)
    assert only_dx[1] is None and only_dx[2] is None and only_weights[0] is None
    assert np.array_equal(only_dx[0], dx)
    assert np.array_equal(only_weights[1], dw) and np.array_equal(only_weights[2], db)


@pytest.mark.parametrize("transpose", [False, True], ids=["conv2d", "conv2d_transpose"])
def test_images_in_many_chunks_give_one_chunks_result(rng, monkeypatch, transpose):
    """A workspace too small for two images: every image is its own chunk, and the weight
    gradient adds up the chunks' products."""
    x, kernel, bias, stride, padding = conv_case(rng, (5, 7, 6, 3, 3, 3, 4, 2, "same"), transpose)
    forward, grad = ((ops.conv2d_transpose, ops.conv2d_transpose_grad) if transpose
                     else (ops.conv2d, ops.conv2d_grad))
    y = forward(x, kernel, bias, stride=stride, padding=padding, activation="tanh")
    dy = normal(rng, *y.shape)
    grads = grad(dy, x, kernel, stride=stride, padding=padding)
    monkeypatch.setattr(im2col, "WORKSPACE_FLOATS", 1)
    assert_close("output in chunks", forward(x, kernel, bias, stride=stride, padding=padding,
                                             activation="tanh"), y, 1e-6)
    for name, got, ref in zip(("dx", "dw", "db"), grad(dy, x, kernel, stride=stride, padding=padding),
                              grads, strict=True):
        assert_close(f"{name} in chunks", got, ref, 1e-6)


# (images, H, W, C, grid height, grid width, step, tap rows, tap columns, columns of B): 1x1
# images, odd grids, steps of 1 to 3, taps past every edge, more rows than a block (MC), C with a
# ragged rest past the last vector, depths cut mid-tap by the slices (KC deep for window_weight_product's
# packed windows, WINDOW_KC for window_product's), N not a multiple of NR, B's panel packed for all of K
# and (a B too wide for that) a slice at a time
WINDOWS = [
    (2, 1, 1, 17, 1, 1, (1, 1), [-1, 0, 1], [-1, 0, 1], 5),
    (3, 7, 5, 3, 4, 3, (2, 2), [-1, 0, 1], [-1, 0, 1], 17),
    (4, 9, 9, 70, 5, 5, (2, 2), [0, 1, 2, 3], [-1, 0, 1, 2], 33),
    (5, 11, 8, 16, 11, 8, (1, 1), [1, 0, -1], [2, 1, 0, -1], 40),
    (2, 12, 10, 37, 4, 3, (3, 3), [0, 1, 2], [-2, 0, 2], 64),
    (3, 6, 5, 32, 3, 3, (2, 2), [-1, 0, 1], [-1, 0, 1], 24),      # taps of whole B sliver rows
    (8, 24, 23, 16, 24, 23, (1, 1), [-1, 0, 1], [-1, 0, 1], 40),  # several blocks of windows a thread
    (2, 6, 6, 70, 3, 3, (2, 2), [-1, 0, 1, 2], [-1, 0, 1, 2], 48),   # two window slices, 512 + 608 deep
    (2, 5, 5, 80, 5, 5, (1, 1), [-1, 0, 1], [-1, 0, 1], 1100),    # B too wide for a whole-depth panel
]


@pytest.mark.parametrize("case", WINDOWS, ids=[f"{c[0]}x{c[1]}x{c[2]}x{c[3]}-grid{c[4]}x{c[5]}-step{c[6][0]}"
                                              for c in WINDOWS])
def test_implicit_gemm_products_match_the_windows_matrix(rng, case):
    """Both products over windows packed from the image, against the float64 windows matrix."""
    n, h, w, c, grid_h, grid_w, step, tap_rows, tap_cols, columns = case
    image = normal(rng, n, h, w, c)
    windows = implicit_gemm.Windows(h, w, c, grid_h, grid_w, step, tap_rows, tap_cols)
    matrix = implicit_gemm.windows_reference(image.astype(np.float64), windows)
    b, bias = normal(rng, windows.depth, columns), normal(rng, columns)
    expected = np.tanh(matrix @ b + bias)
    assert_close(f"window_product {case}", implicit_gemm.window_product(image, windows, b, bias, "tanh"),
                 expected, TOLERANCE)
    d = normal(rng, len(matrix), columns)
    assert_close(f"window_weight_product {case}", implicit_gemm.window_weight_product(d, image, windows),
                 d.T @ matrix, TOLERANCE)


# (images, height, width, channels in NR slivers, kernel, stride, rows of D^T): a tile's rows
# ragged, a half tile whole and ragged, one row, one block of rows and more; K of one slice, of
# slices with a merged last one (5 x 13 x 13 = 845 = 3 x 256 + 77; 40 x 8 x 8 = 2560, ten)
IN_PLACE_WEIGHTS = [
    (3, 7, 5, 1, 3, 1, 13),
    (2, 14, 14, 2, 4, 2, "half"),
    (2, 14, 14, 2, 4, 2, "half+2"),
    (1, 5, 5, 1, 3, 2, 1),
    (5, 13, 13, 1, 3, 1, "block"),
    (2, 9, 7, 1, 3, 1, "blocks"),
    (40, 8, 8, 3, 2, 1, 29),
]


@pytest.mark.parametrize("case", IN_PLACE_WEIGHTS, ids=[f"{c[0]}x{c[1]}x{c[2]}-slivers{c[3]}-k{c[4]}-s{c[5]}-m{c[6]}"
                                                        for c in IN_PLACE_WEIGHTS])
def test_weight_gradient_windows_read_in_place_give_the_matmul_s_floats(rng, case):
    """D^T @ windows with the windows' rows read where they lie (implicit_gemm.weight_rectangle:
    channels a whole number of NR slivers) sums the slices and tiles as the matmul does over the
    stored windows matrix: the same floats, on one thread and with the rectangle cut among
    threads by columns and by rows, with D packed and read in place (whichever PACKS_D picks for
    this CPU, and the other); and float64's."""
    from pyai.kernels.common import ACTIVATIONS
    from pyai.kernels.numba_cpu.blocking import MC, NC
    from pyai.kernels.numba_cpu.conv2d import conv_windows
    from pyai.kernels.numba_cpu.matmul import fused_matmul
    from pyai.kernels.numba_cpu.matmul_micro import MR, NO_BIAS, NR, ROWS_PER_GROUP
    n, h, w, slivers, kernel, stride, rows = case
    m = {"half": MR + ROWS_PER_GROUP, "half+2": MR + 2, "block": MC + MC // 4, "blocks": 2 * MC + 7}.get(rows, rows)
    image = normal(rng, n, h, w, slivers * NR)
    windows = conv_windows(im2col.geometry(image.shape[1:], (kernel, kernel), (stride, stride), "same"))
    d = normal(rng, n * windows.per_image, m)
    assert implicit_gemm.reads_windows_in_place(image.shape[3])
    matrix = implicit_gemm.windows_reference(image.astype(np.float64), windows)
    stored = fused_matmul(d, matrix.astype(np.float32), True, False, None, None, 0.0, blocking=(MC, NC))
    for grid in ((1, 1), (1, 2), (1, 3), (2, 1), (3, 2)):
        c = np.full((m, windows.depth), np.nan, np.float32)
        implicit_gemm.window_gemm(image.reshape(-1), windows.shape, windows.tap_rows, windows.tap_cols, d.reshape(-1),
                                  False, c, m, len(d), NO_BIAS, False, ACTIVATIONS[None], np.float32(0), *grid, MC, NC)
        np.testing.assert_array_equal(c, stored)
    for pack_d in (True, False):
        c = np.full((m, windows.depth), np.nan, np.float32)
        implicit_gemm.weight_rectangle(d.reshape(-1), m, image.reshape(-1), windows.shape, windows.tap_rows,
                                       windows.tap_cols, c, 0, len(d), 0, m, 0, windows.depth, MC, pack_d)
        np.testing.assert_array_equal(c, stored)
    assert_close(f"in-place weight product {case}", stored, d.astype(np.float64).T @ matrix, TOLERANCE)


# (images, H, W, C, O, kernel, stride): windows past the image on two sides (stride 2, even sizes)
# and on all four, kernels of 2 to 5 rows, C and O not whole tiles, odd sizes
BORDERS = [(2, 14, 14, 32, 40, 3, 2), (3, 9, 7, 16, 33, 5, 2), (2, 8, 11, 32, 17, 4, 3), (2, 13, 6, 16, 64, 5, 1),
           (2, 7, 7, 48, 35, 2, 1), (1, 3, 3, 16, 20, 3, 1)]


@pytest.mark.parametrize("case", BORDERS, ids=[f"{c[0]}x{c[1]}x{c[2]}x{c[3]}-o{c[4]}-k{c[5]}-s{c[6]}" for c in BORDERS])
def test_conv_in_border_grids_multiplies_only_the_taps_inside(rng, case):
    """conv2d.border_product: the windows in grids of the taps they read inside the image, each
    multiplying only those, against float64: with bias and leaky ReLU, and times a leaky ReLU's
    gradient; y filled with NaN first."""
    from pyai.kernels.numba_cpu import conv2d
    n, h, w, c, o, kernel, stride = case
    x, weights, bias = normal(rng, n, h, w, c), normal(rng, kernel, kernel, c, o), normal(rng, o)
    g = im2col.geometry(x.shape[1:], (kernel, kernel), (stride, stride), "same")
    plan = conv2d.border_plan(g)
    assert plan is not None and plan.skipped_taps > 0
    y = np.full((n * g.out_height * g.out_width, o), np.nan, np.float32)
    conv2d.border_product(x, weights, g, bias, "leaky_relu", 0.1, y, None, plan)
    expected = conv2d.conv2d_reference(x, weights, bias, (stride, stride), "same", "leaky_relu", 0.1)
    assert_close(f"border grids {case}", y.reshape(expected.shape), expected, TOLERANCE)
    z = normal(rng, *y.shape)
    y[:] = np.nan
    conv2d.border_product(x, weights, g, None, None, 0.1, y, z, plan)
    plain = conv2d.conv2d_reference(x, weights, None, (stride, stride), "same").reshape(y.shape)
    assert_close(f"border grids, leaky ReLU gradient {case}", y, plain * np.where(z > 0, 1.0, 0.1), TOLERANCE)


def test_border_grids_are_taken_where_they_pay():
    """The DCGAN discriminator's 128 x 14x14x64 -> 7x7x128 at stride 2 (9.3% of its FLOPs in
    padding) takes the grids on two threads; 8 x 28x28x128 -> 256 at stride 1, whose border grids'
    B outweighs the 4.7% skipped, and a 'valid' layer do not."""
    from pyai.kernels.numba_cpu import conv2d
    dcgan = im2col.geometry((14, 14, 64), (3, 3), (2, 2), "same")
    assert conv2d.splits_borders(conv2d.border_plan(dcgan), 128, 2)
    wide = im2col.geometry((28, 28, 128), (3, 3), (1, 1), "same")
    assert not conv2d.splits_borders(conv2d.border_plan(wide), 8, 2)
    assert conv2d.border_plan(im2col.geometry((14, 14, 64), (3, 3), (1, 1), "valid")) is None


# (images, height, width, parts): K of 2 slices and a ragged rest (2 x 13 x 13 = 338) in 2 and 3
# parts (one with no slice), of 33 slices in 2 (more than a part's KC run is merged into)
DEPTH_PARTS = [(2, 13, 13, 2), (2, 13, 13, 3), (1, 92, 92, 2)]


@pytest.mark.parametrize("case", DEPTH_PARTS, ids=[f"{c[0]}x{c[1]}x{c[2]}-parts{c[3]}" for c in DEPTH_PARTS])
def test_weight_gradient_split_by_depth_adds_the_parts(rng, case):
    """A deep in-place weight product as a sum over runs of the windows, one a thread
    (implicit_gemm.weight_gemm_by_depth), against float64, the partials not zeroed first."""
    from pyai.kernels.numba_cpu.blocking import MC
    from pyai.kernels.numba_cpu.conv2d import conv_windows
    from pyai.kernels.numba_cpu.matmul_micro import NR
    n, h, w, parts = case
    image = normal(rng, n, h, w, 2 * NR)
    windows = conv_windows(im2col.geometry(image.shape[1:], (3, 3), (1, 1), "same"))
    m = 20
    d = normal(rng, n * windows.per_image, m)
    c = np.full((m, windows.depth), np.nan, np.float32)
    partials = np.full((parts - 1, m, windows.depth), np.nan, np.float32)
    implicit_gemm.weight_gemm_by_depth(d.reshape(-1), m, image.reshape(-1), windows.shape, windows.tap_rows,
                                       windows.tap_cols, c, partials, len(d), MC)
    matrix = implicit_gemm.windows_reference(image.astype(np.float64), windows)
    assert_close(f"weight product in {parts} parts {case}", c, d.astype(np.float64).T @ matrix, TOLERANCE)


def test_deep_weight_gradient_runs_split_by_depth(rng, monkeypatch):
    """window_weight_product of K of DEPTH_SPLIT_SLICES slices a thread or more takes the split
    on two threads, against float64."""
    from pyai.kernels.numba_cpu.conv2d import conv_windows
    from pyai.kernels.numba_cpu.matmul import KC
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("the split needs two threads")
    side = int(np.ceil(np.sqrt(2 * implicit_gemm.DEPTH_SPLIT_SLICES * KC)))
    image = normal(rng, 1, side, side, 32)
    windows = conv_windows(im2col.geometry(image.shape[1:], (3, 3), (1, 1), "same"))
    d = normal(rng, windows.per_image, 16)
    calls = []
    split = implicit_gemm.weight_gemm_by_depth
    monkeypatch.setattr(implicit_gemm, "weight_gemm_by_depth", lambda *args: calls.append(1) or split(*args))
    previous = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        got = implicit_gemm.window_weight_product(d, image, windows)
    finally:
        numba.set_num_threads(previous)
    assert calls == [1]
    matrix = implicit_gemm.windows_reference(image.astype(np.float64), windows)
    assert_close("deep weight product", got, d.astype(np.float64).T @ matrix, TOLERANCE)


def test_a_conv_geometry_s_windows_are_its_im2col_matrix(rng):
    from pyai.kernels.numba_cpu.conv2d import conv_windows
    x = normal(rng, 2, 7, 6, 3)
    for stride, padding in (((2, 1), "same"), ((1, 3), "valid")):
        g = im2col.geometry(x.shape[1:], (3, 2), stride, padding)
        assert np.array_equal(implicit_gemm.windows_reference(x, conv_windows(g)),
                              im2col.im2col_reference(x, g))


@pytest.mark.parametrize("transpose", [False, True], ids=["Conv2D", "Conv2DTranspose"])
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[3], SHAPES[6], (2, 5, 4, 2, 4, 4, 3, 2, "valid")],
                         ids=["odd-s2-same", "valid-s1x2", "1x1-s2-same", "k4-s2-valid"])
def test_keras_layers_with_pyai_weights_compute_the_same(rng, shape, transpose):
    """Keras's own layers: the same output shapes (Keras's rules) and values from the same weights."""
    x, kernel, bias, stride, padding = conv_case(rng, shape, transpose)
    layer_class = keras.layers.Conv2DTranspose if transpose else keras.layers.Conv2D
    layer = layer_class(kernel.shape[3 if not transpose else 2], kernel.shape[:2], strides=stride,
                        padding=padding, activation="sigmoid")
    layer.build(x.shape)
    layer.set_weights([kernel, bias])
    forward = ops.conv2d_transpose if transpose else ops.conv2d
    y = forward(x, kernel, bias, stride=stride, padding=padding, activation="sigmoid")
    assert_close(f"{layer_class.__name__} {shape}", y, layer(x).numpy(), TOLERANCE)


@pytest.mark.parametrize("call, message", [
    (lambda x, w: ops.conv2d(x[0], w), r"^x: expected a 4-d array"),
    (lambda x, w: ops.conv2d(x, w[..., 0]), r"^w: expected a 4-d array"),
    (lambda x, w: ops.conv2d(x, w[:, :, :2]), r"^w: expected 3 input channels in dimension 2"),
    (lambda x, w: ops.conv2d_transpose(x, w), r"^w: expected 3 input channels in dimension 3"),
    (lambda x, w: ops.conv2d(x, w, np.zeros(5)), r"^b: expected shape \(4,\)"),
    (lambda x, w: ops.conv2d(x[:, :2], w, padding="valid"), r"^w: a 3x3 kernel does not fit x's 2x5 images"),
    (lambda x, w: ops.conv2d(x, w, stride=0), r"^stride: expected a positive integer or a pair"),
    (lambda x, w: ops.conv2d(x, w, stride=(1, 2, 1)), r"^stride: expected a positive integer or a pair"),
    (lambda x, w: ops.conv2d(x, w, padding="full"), r"^padding: expected one of \('same', 'valid'\)"),
    (lambda x, w: ops.conv2d(x, w, activation="swish"), r"^activation: expected one of"),
    (lambda x, w: ops.conv2d(x, w, alpha=-1), r"^alpha: expected a finite number"),
    (lambda x, w: ops.conv2d_grad(np.ones((2, 4, 5, 4)), x, w, stride=2), r"^dy: expected the forward "
                                                                          r"output's shape \(2, 2, 3, 4\)"),
    (lambda x, w: ops.conv2d(x[:, :, :0], w), r"^x: has an empty dimension"),
])
def test_bad_input_is_a_clear_error(call, message):
    x, w = np.ones((2, 4, 5, 3), np.float32), np.ones((3, 3, 3, 4), np.float32)
    with pytest.raises(ValueError, match=message):
        call(x, w)


def test_bad_dtypes_are_a_type_error():
    with pytest.raises(TypeError, match="^x: expected an array of real numbers"):
        ops.conv2d(np.ones((1, 3, 3, 1), bool), np.ones((1, 1, 1, 1)))
    with pytest.raises(TypeError, match="^w: expected an array of real numbers"):
        ops.conv2d_transpose(np.ones((1, 3, 3, 1)), np.ones((1, 1, 1, 1), complex))


def test_other_backends_say_the_op_is_missing():
    """Until a GPU backend fills its row, the op is a clear NotImplementedError there."""
    from pyai import dispatch
    for name in dispatch.BACKENDS:
        if "conv2d" not in dispatch.ops_of(name) and dispatch.unavailable_reason(name) is None:
            with pytest.raises(NotImplementedError, match=f"op 'conv2d' is not implemented on backend '{name}'"):
                ops.conv2d(np.ones((1, 3, 3, 1)), np.ones((1, 1, 1, 1)), backend=name)


@pytest.mark.parametrize("stride, kernel, padding, size", [
    (2, 4, "same", 7), (2, 4, "valid", 5), (3, 3, "valid", 4), (2, 2, "same", 1), (3, 6, "same", 5), (2, 3, "same", 6)])
def test_the_stride_phases_hold_each_output_pixel_once(rng, stride, kernel, padding, size):
    """The phases' blocks, taps and kernel rows are the transposed convolution (1-d, float64):
    output row h = stride*(first_of[p] + g) + offset + p is phase p's g-th block, every row of y
    in exactly one block and phase, and no block of a phase outside y."""
    from pyai.kernels.common import conv_padding, conv_transpose_output_size
    from pyai.kernels.numba_cpu.conv2d_transpose import Phases
    out_size = conv_transpose_output_size(size, kernel, stride, padding)
    pad = conv_padding(out_size, size, kernel, stride) if padding == "same" else 0
    phases = Phases(stride, kernel, pad, out_size)
    x, w = rng.standard_normal(size), rng.standard_normal(kernel)
    expected = np.zeros(out_size)
    for t in range(size):                       # y[t*stride - pad + i] += x[t] w[i]
        for i in range(kernel):
            if 0 <= t * stride - pad + i < out_size:
                expected[t * stride - pad + i] += x[t] * w[i]
    got = np.full(out_size, np.nan)
    rows = phases.kernel_rows()
    for p in range(stride):
        for g in range(phases.blocks_of[p]):
            h = stride * (phases.first_of[p] + g) + phases.offset + p
            assert 0 <= h < out_size, f"phase {p}'s block {g} holds row {h}, outside y"
            assert np.isnan(got[h]), f"row {h} in two blocks"
            inputs = g + phases.phase_tap_rows(p)
            got[h] = sum(x[t] * w[rows[tap, p]] for tap, t in enumerate(inputs)
                         if 0 <= t < size and rows[tap, p] < kernel)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_direct_weight_gradient_keeps_a_pixel_out_of_the_taps_that_never_read_it(rng, padding):
    """A 3x3 stride-1 conv into one channel sums each input row once for its three kernel
    columns; a pixel at a row's end that a column's tap never reads (the last column of 'same'
    padding for the first kernel column, and the first for the last) must not enter that tap's
    sum, even as 0 times an infinity. Against TensorFlow with the infinity in place: the taps
    that read it are inf or NaN there, the others finite and equal."""
    x = normal(rng, 2, 6, 19, 32)
    x[1, 2, -1, 5] = np.inf
    x[0, 3, 0, 7] = -np.inf
    kernel, dy_shape = normal(rng, 3, 3, 32, 1), (2, 6, 19, 1) if padding == "same" else (2, 4, 17, 1)
    dy = normal(rng, *dy_shape)
    _, dw, _ = ops.conv2d_grad(dy, x, kernel, padding=padding, input_gradient=False)
    x_var = tf.constant(x)
    kernel_var = tf.Variable(kernel)
    with tf.GradientTape() as tape:
        pre = tf.nn.conv2d(x_var, kernel_var, 1, padding.upper())
    expected = tape.gradient(pre, kernel_var, output_gradients=dy).numpy()
    finite = np.isfinite(expected)
    assert not finite.all() and finite.any()
    np.testing.assert_array_equal(np.isfinite(dw), finite)
    assert_close(f"dw {padding}, finite taps", dw[finite], expected[finite], TOLERANCE)
    if padding == "same":   # the first kernel column never reads the last pixel of a row, the last the first
        assert np.isfinite(dw[:, 0, 5]).all() and np.isfinite(dw[:, 2, 7]).all()
