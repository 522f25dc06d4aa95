"""The cuda backend's Conv2D and Conv2DTranspose (cuda_src/conv2d*.cu, im2col.cu, bias_grad.cu) on
the CPU, under the host emulation of tests/cuda_emu/ (README.md there), against the float64
references of the numba-cpu kernels.

The ops run through pyai.ops and the cuda row's own Python code (pyai/_backends/cuda.py: the
geometry, TensorFlow's padding, the workspace and its chunks of images), the emulated build
standing in for pyai._cuda, in lane order and in reverse order (a missing barrier gives a wrong
result in one of them). Shapes: kernels 1x1 (the pointwise path, plain GEMMs), 3x3, 4x4 and 2x3;
strides 1, 2, (1, 2) and one past the kernel (pixels no window reads); both paddings; 1x1 images;
1 and several channels; GEMMs of sizes that are not multiples of any tile (64 or 128 by 16 deep).
TensorFlow's own outputs (tests/golden/conv2d*.npz) run in test_cuda_emulated.py, with every
golden case of the cuda row.

Tolerance: 1e-5 relative, as tests/test_golden.py: float32 products summed in float32 over at
most a few hundred terms (~sqrt(n) * 6e-8), db in double; a wrong tap, pad or chunk is far off.
"""

import re

import numpy as np
import pytest

import pyai

from conftest import assert_close
from cuda_emu import harness
from cuda_emu.harness import output, placed, pointer
from pyai._backends import cuda as cuda_row
from pyai.kernels.common import ACTIVATIONS, geometry, transpose_geometry
from pyai.kernels.numba_cpu.conv2d import conv2d_reference
from pyai.kernels.numba_cpu.conv2d_backward import conv2d_backward_reference
from pyai.kernels.numba_cpu.conv2d_transpose import conv2d_transpose_reference
from pyai.kernels.numba_cpu.conv2d_transpose_backward import conv2d_transpose_backward_reference
from pyai.models import DCGAN
import test_gpu_machine
import test_models_on_gpu

TOL = 1e-5
GRADIENTS = ("dx", "dw", "db")

# (N, H, W, C, (kh, kw), stride, padding, O): x is (N, H, W, C); O is y's channels for both ops
CASES = [
    (2, 5, 6, 3, (1, 1), (1, 1), "same", 4),       # pointwise: plain GEMMs, no cols
    (2, 5, 6, 3, (1, 1), (2, 2), "valid", 4),      # 1x1 at stride 2: every other row and column
    (3, 7, 5, 3, (3, 3), (1, 1), "same", 4),
    (2, 9, 8, 5, (3, 3), (2, 2), "same", 6),       # TensorFlow's padding at stride 2: after the image only
    (2, 9, 8, 5, (3, 3), (2, 2), "valid", 6),
    (2, 7, 7, 4, (4, 4), (2, 2), "same", 3),       # the DCGAN's Conv2DTranspose kernel
    (1, 6, 7, 2, (4, 4), (1, 1), "valid", 3),
    (2, 6, 9, 2, (2, 3), (1, 2), "same", 5),
    (2, 6, 9, 2, (2, 3), (1, 2), "valid", 5),
    (2, 4, 5, 3, (2, 2), (3, 3), "same", 2),       # stride past the kernel: pixels no window reads
    (3, 1, 1, 5, (3, 3), (1, 1), "same", 4),       # 1x1 images: every tap but the centre is padding
    (3, 1, 1, 5, (1, 1), (2, 2), "valid", 4),
    (2, 6, 6, 1, (3, 3), (2, 2), "same", 1),       # one channel in and out
    (3, 11, 13, 7, (3, 3), (1, 1), "same", 70),    # GEMM 429 x 70 x 63: ragged in every dimension
    (2, 12, 10, 17, (3, 3), (1, 1), "same", 9),    # depth 153: 10 slices of 16, the last ragged
    (4, 16, 17, 3, (3, 3), (1, 1), "same", 5),     # dw over 1088 rows: its product cut in 2 runs of K
    (2, 37, 36, 2, (3, 3), (1, 1), "same", 3),     # 2664 rows: 5 runs, 34 slices of 16 each, the last 31
]
CASE_IDS = [f"{n}x{h}x{w}x{c}-k{k[0]}x{k[1]}-s{s[0]}x{s[1]}-{p}-o{o}" for n, h, w, c, k, s, p, o in CASES]


def normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


class Conv:
    """One case of one op: its inputs, its pyai.ops functions and its float64 references."""

    def __init__(self, rng, case, transpose):
        images, height, width, channels, kernel, self.stride, self.padding, out_channels = case
        self.transpose = transpose
        self.x = normal(rng, images, height, width, channels)
        w_shape = (*kernel, out_channels, channels) if transpose else (*kernel, channels, out_channels)
        self.w, self.b = normal(rng, *w_shape), normal(rng, out_channels)
        self.dy = normal(rng, *self.reference(None, 0.2).shape)
        self.name = f"{'conv2d_transpose' if transpose else 'conv2d'} {case}"

    def options(self):
        return {"stride": self.stride, "padding": self.padding}

    def forward(self, activation, alpha):
        op = pyai.ops.conv2d_transpose if self.transpose else pyai.ops.conv2d
        return op(self.x, self.w, self.b, activation=activation, alpha=alpha, **self.options())

    def gradients(self, input_gradient=True, weight_gradient=True):
        op = pyai.ops.conv2d_transpose_grad if self.transpose else pyai.ops.conv2d_grad
        return op(self.dy, self.x, self.w, input_gradient=input_gradient, weight_gradient=weight_gradient,
                  **self.options())

    def reference(self, activation, alpha):
        reference = conv2d_transpose_reference if self.transpose else conv2d_reference
        return reference(self.x, self.w, self.b, self.stride, self.padding, activation, alpha)

    def reference_gradients(self):
        reference = conv2d_transpose_backward_reference if self.transpose else conv2d_backward_reference
        return reference(self.dy, self.x, self.w, self.stride, self.padding)


def geometry_of(conv):
    """(kernels/common.py's Geometry, the launchers' geometry) of the conv, as the cuda row makes them."""
    if conv.transpose:
        g = transpose_geometry(conv.x.shape, conv.w.shape, conv.stride, conv.padding)
    else:
        g = geometry(conv.x.shape[1:], conv.w.shape[:2], conv.stride, conv.padding)
    return g, cuda_row.kernel_geometry(g, conv.x.shape[0], conv.w.shape[3])


def assert_gradients(conv, gradients, label):
    for tensor, out, ref in zip(GRADIENTS, gradients, conv.reference_gradients()):
        assert out.dtype == np.float32, f"{conv.name} {tensor}: {out.dtype}"
        assert_close(f"{conv.name} {label} {tensor}", out, ref, TOL)


@pytest.mark.parametrize("transpose", [False, True], ids=["conv2d", "conv2d_transpose"])
@pytest.mark.parametrize("index", range(len(CASES)), ids=CASE_IDS)
def test_conv_forward_and_gradients(kernels, order, rng, index, transpose):
    """y with the bias and an activation (each case the next one in ACTIVATIONS), then dx, dw, db."""
    conv = Conv(rng, CASES[index], transpose)
    activation = list(ACTIVATIONS)[index % len(ACTIVATIONS)]
    with harness.as_cuda_extension(kernels):
        y = conv.forward(activation, 0.2)
        gradients = conv.gradients()
    assert_close(f"{conv.name} {activation} {order} y", y, conv.reference(activation, 0.2), TOL)
    assert_gradients(conv, gradients, order)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("transpose", [False, True], ids=["conv2d", "conv2d_transpose"])
def test_every_activation_in_both_epilogues(kernels, order, rng, transpose, activation):
    """The SGEMM's epilogue (Conv2D; a pointwise Conv2DTranspose) and col2im's (Conv2DTranspose)."""
    for case in (CASES[0], CASES[5]):
        conv = Conv(rng, case, transpose)
        with harness.as_cuda_extension(kernels):
            y = conv.forward(activation, 0.3)
        assert_close(f"{conv.name} {activation} {order} y", y, conv.reference(activation, 0.3), TOL)


@pytest.mark.parametrize("transpose", [False, True], ids=["conv2d", "conv2d_transpose"])
def test_gradients_not_asked_for_are_none(kernels, rng, transpose):
    conv = Conv(rng, CASES[3], transpose)
    dx_ref, dw_ref, db_ref = conv.reference_gradients()
    with harness.as_cuda_extension(kernels):
        dx, dw, db = conv.gradients(input_gradient=False)
        assert dx is None
        assert_close(f"{conv.name} dw alone", dw, dw_ref, TOL)
        assert_close(f"{conv.name} db alone", db, db_ref, TOL)
        dx, dw, db = conv.gradients(weight_gradient=False)
        assert dw is None and db is None
        assert_close(f"{conv.name} dx alone", dx, dx_ref, TOL)
        assert conv.gradients(input_gradient=False, weight_gradient=False) == (None, None, None)


@pytest.mark.parametrize("transpose", [False, True], ids=["conv2d", "conv2d_transpose"])
def test_chunks_of_images_give_the_whole_batch(kernels, rng, monkeypatch, transpose):
    """A workspace of two images' cols takes 5 images in chunks of 2, 2 and 1: y and dx the same
    bits as in one chunk (each row of a product is the same dot products in the same order), dw
    (the chunks' products added in order) and db within the tolerance of the reference."""
    conv = Conv(rng, (5, 6, 7, 3, (3, 3), (2, 2), "same", 4), transpose)
    with harness.as_cuda_extension(kernels):
        whole = conv.forward("relu", 0.2), *conv.gradients()
        g = geometry_of(conv)[0]
        monkeypatch.setattr(cuda_row, "CONV_WORKSPACE_FLOATS", 2 * g.windows * g.depth + 1)
        assert cuda_row.conv_chunks(g, 5)[0] == 2
        chunked = conv.forward("relu", 0.2), *conv.gradients()
    np.testing.assert_array_equal(chunked[0], whole[0], err_msg=f"{conv.name} y in chunks")
    np.testing.assert_array_equal(chunked[1], whole[1], err_msg=f"{conv.name} dx in chunks")
    assert_gradients(conv, chunked[1:], "in chunks")


@pytest.mark.parametrize("transpose", [False, True], ids=["conv2d", "conv2d_transpose"])
def test_gradients_are_the_same_bits_in_both_orders(kernels, rng, transpose):
    """No atomics: col2im and the column sums add in one fixed order, whatever order threads run in."""
    conv = Conv(rng, (3, 9, 8, 5, (3, 3), (2, 2), "same", 40), transpose)
    runs = []
    with harness.as_cuda_extension(kernels):
        for reverse in (False, True, False):
            kernels.set_reverse(reverse)
            runs.append(conv.gradients())
    kernels.set_reverse(False)
    for run in runs[1:]:
        for tensor, first, again in zip(GRADIENTS, runs[0], run):
            np.testing.assert_array_equal(again, first, err_msg=f"{conv.name} {tensor}")


def launch(kernels, conv, chunk_images, offset):
    """(y, dx, dw, db) from the conv's launchers called directly, every array (the cols workspace
    too, NaN until written) starting `offset` floats past an aligned address, chunks of
    chunk_images images; y with the bias and leaky ReLU 0.2."""
    g, kernel_geometry = geometry_of(conv)
    x, w, b, dy = (placed(array, offset) for array in (conv.x, conv.w, conv.b, conv.dy))
    cols = output(chunk_images * g.windows * g.depth, offset)
    partial = output(max(1, kernels.conv_partial_floats(kernel_geometry, chunk_images)), offset)
    sums = placed(np.full(cuda_row.BIAS_GRAD_MAX_ROW_CHUNKS * b.size, np.nan))
    y, dx, dw, db = (output(array.shape, offset) for array in (conv.dy, x, w, b))
    forward = kernels.conv2d_transpose_forward if conv.transpose else kernels.conv2d_forward
    backward = kernels.conv2d_transpose_backward if conv.transpose else kernels.conv2d_backward
    forward(*map(pointer, (x, w, b, y)), kernel_geometry, ACTIVATIONS["leaky_relu"], 0.2, pointer(cols), chunk_images,
            0)
    backward(*map(pointer, (dy, x, w, dx, dw, db)), kernel_geometry, pointer(cols), chunk_images, pointer(partial),
             pointer(sums), 0)
    return y, dx, dw, db


@pytest.mark.parametrize("transpose", [False, True], ids=["conv2d", "conv2d_transpose"])
def test_launchers_on_pointers_past_alignment(kernels, order, rng, transpose):
    """The launchers called directly, every array 1 float past alignment (the SGEMM's copies and
    stores go float by float), in chunks of 2 of 3 images."""
    conv = Conv(rng, (3, 7, 6, 5, (3, 3), (2, 1), "same", 6), transpose)
    y, *gradients = launch(kernels, conv, 2, 1)
    assert_close(f"{conv.name} {order} y", y, conv.reference("leaky_relu", 0.2), TOL)
    assert_gradients(conv, gradients, order)


@pytest.mark.parametrize("case, chunk_images, pages", [
    ((3, 7, 5, 3, (3, 3), (1, 1), "same", 4), 3, 0),       # 105 rows: one product, into dw itself
    ((3, 7, 5, 3, (3, 3), (1, 1), "same", 4), 2, 1),       # chunks: the later ones' products beside dw
    ((4, 16, 17, 3, (3, 3), (1, 1), "same", 5), 4, 2),     # 1088 rows, one 64 x 64 tile: 2 runs of >= 512
    ((2, 37, 36, 2, (3, 3), (1, 1), "same", 3), 2, 5),
    ((2, 37, 36, 2, (3, 3), (1, 1), "same", 3), 1, 2),     # chunks of 1332 rows
    ((4, 64, 64, 8, (1, 1), (1, 1), "same", 8), 1, 32),    # pointwise, 16384 rows: 32 runs of 512
    ((1, 90, 90, 64, (3, 3), (1, 1), "same", 1024), 1, 0),   # 576 x 1024: 144 tiles of 64 x 64, not cut
    ((2, 90, 90, 64, (3, 3), (1, 1), "same", 256), 2, 4),    # 36 tiles: 4 runs fill 132 SMs
])
def test_weight_gradient_is_cut_in_depth_where_its_tiles_leave_sms_idle(kernels, case, chunk_images, pages):
    """conv_partial_floats: dw's pages for the products after the first chunk, or for a product cut
    in depth where its tiles fill at most half of 132 SMs: runs enough to fill them, each at least
    512 deep (matmul.cuh)."""
    images, height, width, channels, kernel, stride, padding, out_channels = case
    g = geometry((height, width, channels), kernel, stride, padding)
    geometry_ints = cuda_row.kernel_geometry(g, images, out_channels)
    assert kernels.conv_partial_floats(geometry_ints, chunk_images) == pages * g.depth * out_channels


def test_launchers_refuse_a_geometry_that_is_not_13_ints(kernels):
    with pytest.raises(TypeError, match="conv2d_forward: expected a sequence of 13 ints for the geometry"):
        kernels.conv2d_forward(0, 0, 0, 0, (1, 2, 3), 0, 0.0, 0, 1, 0)
    with pytest.raises(RuntimeError, match="conv: chunk_images is 0, not >= 1"):
        kernels.conv2d_forward(0, 0, 0, 0, (3, 3, 1, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1), 0, 0.0, 0, 0, 0)


def test_gpu_benchmark_conv_rows_run_on_the_emulated_kernels(kernels, monkeypatch):
    """benchmarks/gpu_cuda.py's conv rows on CPU tensors at small sizes, the emulation standing in
    for pyai._cuda (untimed): the pointers, geometries, layouts and the errors it reports against
    torch's convolutions are right before the benchmark ever meets a GPU."""
    torch = pytest.importorskip("torch")
    benchmark, calls = test_gpu_machine.untimed_gpu_benchmark(kernels, monkeypatch)
    torch.manual_seed(0)
    convs = [("up", (2, 3, 3, 8), (4, 4, 5, 8), 2, True), ("down", (2, 9, 9, 3), (3, 3, 3, 6), 2, False),
             ("out", (2, 6, 6, 5), (3, 3, 5, 1), 1, False)]
    rows = benchmark.conv_rows(None, convs, device="cpu")
    assert len(rows) == 2 * len(convs) and len(calls) == 2 * len(rows)   # each row timed pyai's kernel and its peer
    for row in rows:
        errors = [float(error) for error in re.findall(r"\d\.\de[+-]\d+", row[-1])]
        assert errors and max(errors) < TOL, row


def test_dcgan_trains_on_the_emulated_cuda_backend(kernels, rng):
    """tests/test_models_on_gpu.py's DCGAN check, which runs on a GPU, here on the emulation: three
    steps of a small DCGAN (every op of its step on the cuda row, the convolutions through the
    layers), its losses and parameters against numba-cpu's at that file's tolerances."""
    steps, batch, _, _ = test_models_on_gpu.SIZES[False]
    options = test_models_on_gpu.SMALL_DCGAN[False]
    pixels, noise = options["image_shape"][0] * options["image_shape"][1], options["noise_dim"]
    batches = [(rng.uniform(-1, 1, (batch, pixels)).astype(np.float32), normal(rng, batch, noise),
                normal(rng, batch, noise)) for _ in range(steps)]
    with harness.as_cuda_extension(kernels):
        test_models_on_gpu.assert_same_training("cuda", test_models_on_gpu.gan_steps, batches, DCGAN, options)
