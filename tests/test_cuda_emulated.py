"""The CUDA C++ kernels of cuda_src/ on the CPU, under the host emulation of tests/cuda_emu/.

Every kernel runs (1) the golden TensorFlow cases of tests/golden/ through the cuda backend's own
Python code (pyai/_backends/cuda.py, with the emulated build standing in for pyai._cuda), and
(2) an edge-shape sweep called directly, against float64 references: sizes 1, primes, sizes
that are not multiples of any tile (matmul 128 x 128, 128 x 64 and 64 x 64 by 16 or 32 deep,
attention blocks of 64 or 32 rows and tiles of 32, layer norm 8 rows x 32 columns, float4 groups),
and operands that start 1 float past an aligned address. The sweep runs each block's threads in
lane order and in reverse order (a missing
barrier gives a wrong result in one of them). Any call also fails on a fault the emulator
counts: a barrier or shuffle reached after a thread exited, threads stuck at different barriers,
a misaligned float4 access, an invalid launch. test_cuda_emulated_bugs.py shows these checks
catch bugs planted in the kernels.

Tolerance: 1e-5 relative, as tests/test_golden.py (float32 sums of at most ~1000 terms);
Adam 1e-6 against its float32 reference, whose operations it follows one for one; the binary
cross-entropy loss 1e-12 (double terms summed in double) and its gradient 1e-6 (double values
rounded once to float32, as the reference's). What the
emulation cannot check (device rounding of expf/tanhf and FMA contraction, speed, memory
coalescing) is in tests/cuda_emu/README.md.
"""

import functools
import re

import numpy as np
import pytest

import pyai

from conftest import assert_close
from cuda_emu import fake_cuda, harness
from cuda_emu.harness import output, placed, pointer
from pyai._backends import cuda as cuda_row
from pyai.kernels.common import ACTIVATIONS
from pyai.kernels.numba_cpu import (adam, attention_backward, attention_forward, binary_crossentropy, embedding,
                                    gelu, layer_norm, leaky_relu, matmul, sigmoid, softmax, softmax_cross_entropy,
                                    tanh)
import test_golden
import test_gpu_machine
import test_models_on_gpu

TOL = 1e-5
ADAM_TOL = 1e-6
LOSS_TOL = 1e-12       # binary cross-entropy's loss: double terms, double sums over a tree of depth ~log2(n)
LOSS_GRAD_TOL = 1e-6   # its gradient: a double rounded once to float32 (the reference rounds the same value)


def on_the_cuda_row(path):
    op = test_golden.op_of(path)
    return all(needed in cuda_row.ROW for needed in test_golden.OPS_NEEDED.get(op, (op,)))


# the golden cases of the ops the cuda backend implements
CUDA_FILES = [path for path in test_golden.FILES if on_the_cuda_row(path)]


def test_the_cuda_golden_cases_are_most_of_them():
    assert len(CUDA_FILES) >= 20 and len(CUDA_FILES) >= len(test_golden.FILES) - 10


@pytest.mark.parametrize("path", CUDA_FILES, ids=[path.stem for path in CUDA_FILES])
def test_golden_case_on_emulated_cuda_backend(kernels, path):
    with harness.as_cuda_extension(kernels):
        test_golden.CHECKS[test_golden.op_of(path)](f"emulated cuda {path.stem}", test_golden.load(path))


def test_gpt_trains_on_the_emulated_cuda_backend(kernels, rng):
    """tests/test_models_on_gpu.py's GPT check, which runs on a GPU, here on the emulation: three
    Adam steps of a small GPT on the cuda row, losses and parameters against numba-cpu's."""
    steps, _, gpt_sizes, batch = test_models_on_gpu.SIZES[False]
    batches = test_models_on_gpu.gpt_batches(rng, steps, gpt_sizes, batch)
    with harness.as_cuda_extension(kernels):
        test_models_on_gpu.assert_same_training("cuda", test_models_on_gpu.gpt_steps, batches, gpt_sizes)


def test_gan_trains_on_the_emulated_cuda_backend(kernels, rng):
    """Every op of a GAN step (GAN.TRAINING_OPS) is on the cuda row: two steps of a small
    GAN run there. The first discriminator loss is numba-cpu's within 1e-5 (float32 products
    summed in another order); the losses after an Adam update within 1e-3, since Adam's
    m / sqrt(v) can turn rounding in a near-zero gradient into a learning-rate-sized step (over
    30 draws all four agreed to 3e-8)."""
    def two_steps():
        gan = pyai.models.GAN(image_shape=(5, 7), noise_dim=6, generator_sizes=(9, 33), discriminator_sizes=(17,))
        return [gan.train_step(*step_inputs) for step_inputs in inputs]

    inputs = [(rng.uniform(-1, 1, (11, 35)).astype(np.float32), normal(rng, 11, 6), normal(rng, 11, 6))
              for _ in range(2)]
    with harness.as_cuda_extension(kernels):
        on_cuda = two_steps()
    with pyai.use_backend("numba-cpu"):
        on_cpu = two_steps()
    for step in (0, 1):
        for name in ("discriminator_loss", "generator_loss"):
            tol = TOL if (step, name) == (0, "discriminator_loss") else 1e-3
            assert_close(f"GAN step {step} {name}", np.array([on_cuda[step][name]]), np.array([on_cpu[step][name]]),
                         tol)


def test_ops_on_numpy_arrays_reuse_device_buffers(kernels, rng, monkeypatch):
    """The second op of the same sizes allocates no DeviceBuffer: the first one's are pooled."""
    created = []

    class CountedBuffer(fake_cuda.DeviceBuffer):
        def __init__(self, nbytes):
            super().__init__(nbytes)
            created.append(nbytes)

    monkeypatch.setattr(cuda_row, "POOL", cuda_row.BufferPool())
    a, b = rng.standard_normal((37, 29), np.float32), rng.standard_normal((29, 53), np.float32)
    with harness.as_cuda_extension(kernels) as module:
        module.DeviceBuffer = CountedBuffer
        first = pyai.ops.matmul(a, b)
        allocated = len(created)
        second = pyai.ops.matmul(2 * a, b)
    assert allocated == 3 and len(created) == 3, created   # a, b, c once
    assert_close("matmul", first, matmul.matmul_reference(a, b), TOL)
    assert_close("matmul with reused buffers", second, matmul.matmul_reference(2 * a, b), TOL)


def normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


MATMUL_SHAPES = [(1, 1, 1, False, False, None), (1, 131, 5, False, True, "relu"),
                 (129, 3, 9, True, False, "sigmoid"), (37, 53, 29, True, True, "tanh"),
                 (130, 129, 17, False, False, "gelu"), (7, 13, 128, False, True, "leaky_relu"),
                 (600, 70, 33, False, False, "relu")]   # 10 row tiles of 64: two swizzle groups


def run_matmul(launcher, rng, m, n, k, transpose_a, transpose_b, activation, offset):
    """c from `launcher` (matmul_forward or matmul_tf32_forward) on fresh operands placed at
    `offset`: (c, op(a), op(b), bias)."""
    a = normal(rng, *((k, m) if transpose_a else (m, k)))
    b = normal(rng, *((n, k) if transpose_b else (k, n)))
    bias = normal(rng, n)
    c = output((m, n), offset)
    operands = [placed(array, offset) for array in (a, b, bias)]
    launcher(*map(pointer, operands), pointer(c), m, n, k, transpose_a, transpose_b, ACTIVATIONS[activation], 0.2, 0)
    return c, (a.T if transpose_a else a), (b.T if transpose_b else b), bias


MATMUL_TILES = {"128x128": 0, "128x64": 1, "64x64": 2}   # cuda_src/matmul.cuh


@pytest.mark.parametrize("tiles", MATMUL_TILES)
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("m, n, k, transpose_a, transpose_b, activation", MATMUL_SHAPES)
def test_matmul_sweep(kernels, order, rng, m, n, k, transpose_a, transpose_b, activation, offset, tiles):
    """Every tile configuration of the SGEMM on every shape (matmul_forward picks one by shape)."""
    launcher = functools.partial(kernels.matmul_forward_tiles, MATMUL_TILES[tiles])
    c, a, b, bias = run_matmul(launcher, rng, m, n, k, transpose_a, transpose_b, activation, offset)
    expected = matmul.matmul_reference(a, b, bias, activation)
    assert_close(f"matmul {tiles} {m}x{n}x{k} {order} offset {offset}", c, expected, TOL)


def test_matmul_tiles_are_chosen_so_the_grid_fills_a_large_gpu(kernels):
    """The largest tile whose grid has at least 132 blocks (an H100's SMs), else 64 x 64."""
    tiles_for = kernels.library.w_matmul_tiles_for
    assert tiles_for(4096, 4096) == MATMUL_TILES["128x128"]      # 1024 blocks
    assert tiles_for(1408, 1536) == MATMUL_TILES["128x128"]      # 11 x 12 = 132
    assert tiles_for(1024, 1536) == MATMUL_TILES["128x64"]       # 8 x 12 = 96; 8 x 24 = 192 of 128 x 64
    assert tiles_for(256, 768) == MATMUL_TILES["64x64"]          # 24 of 128 x 64
    assert tiles_for(1, 1) == MATMUL_TILES["64x64"]


def tf32(x):
    """x rounded to TF32 as the tensor cores take it: 10 mantissa bits, to nearest, ties away."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


TF32_SHAPES = [(1, 1, 1, False, False, None), (65, 70, 17, False, True, "relu"), (17, 130, 9, True, False, "gelu"),
               (64, 64, 16, True, True, "sigmoid"), (3, 5, 40, False, False, "leaky_relu")]


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("m, n, k, transpose_a, transpose_b, activation", TF32_SHAPES)
def test_tf32_matmul_sweep(kernels, order, rng, m, n, k, transpose_a, transpose_b, activation, offset):
    """Against the float64 product of the TF32-rounded operands at float32's tolerance (a wrong
    fragment, tile or mask is far off), and against the exact product within TF32's bound: each
    operand rounded by at most 2^-11, so each sum by at most 2^-10 of the sum of |a| |b| (relative to
    C itself it is unbounded where the products and the bias cancel); the activations here change
    a difference by at most 1.13 times."""
    c, a, b, bias = run_matmul(kernels.matmul_tf32_forward, rng, m, n, k, transpose_a, transpose_b, activation,
                               offset)
    name = f"tf32 matmul {m}x{n}x{k} {order} offset {offset}"
    assert_close(name, c, matmul.matmul_reference(tf32(a), tf32(b), bias, activation), TOL)
    error = np.abs(c - matmul.matmul_reference(a, b, bias, activation))
    bound = 1.13 * 2.0 ** -10 * matmul.matmul_reference(np.abs(a), np.abs(b)) + 1e-6
    assert np.all(error <= bound), f"{name} vs exact: {np.max(error / bound):.2f} times TF32's bound"


BF16_SHAPES = [(1, 1, 1, False, False, None), (65, 70, 33, False, True, "relu"), (17, 130, 9, True, False, "gelu"),
               (70, 129, 40, True, True, "sigmoid"), (3, 5, 72, False, False, "leaky_relu"),
               (600, 40, 24, False, False, "tanh")]


@pytest.mark.parametrize("tiles", MATMUL_TILES)
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("m, n, k, transpose_a, transpose_b, activation", BF16_SHAPES)
def test_bf16_matmul_sweep(kernels, order, rng, m, n, k, transpose_a, transpose_b, activation, offset, tiles):
    """bf16 operands (offset 1: 2 bytes past alignment, so the copies go element by element)
    against the float64 product of the same bf16 values at float32's tolerance: the products of
    bf16 values are exact in float32 and the sums are float32, so a wrong fragment, layout, tile or
    mask is far off. (Against the float32 operands before rounding, bf16's 8 significant bits
    make the difference up to 2^-8 of the sum of |a| |b|, the caller's rounding, not the kernel's.)"""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    a = normal(rng, *((k, m) if transpose_a else (m, k))).astype(ml_dtypes.bfloat16)
    b = normal(rng, *((n, k) if transpose_b else (k, n))).astype(ml_dtypes.bfloat16)
    bias = normal(rng, n)
    c = output((m, n), offset)
    operands = [placed(array, offset) for array in (a, b, bias)]
    kernels.matmul_bf16_forward_tiles(MATMUL_TILES[tiles], *map(pointer, operands), pointer(c), m, n, k, transpose_a,
                                      transpose_b, ACTIVATIONS[activation], 0.2, 0)
    a, b = (x.astype(np.float32) for x in (a, b))   # exact
    expected = matmul.matmul_reference(a.T if transpose_a else a, b.T if transpose_b else b, bias, activation)
    assert_close(f"bf16 matmul {tiles} {m}x{n}x{k} {order} offset {offset}", c, expected, TOL)


ELEMENTWISE_SIZES = [1, 3, 4, 5, 1031]


@pytest.mark.parametrize("offset", [0, 1, 3])
@pytest.mark.parametrize("n", ELEMENTWISE_SIZES)
def test_elementwise_sweep(kernels, order, rng, n, offset):
    """sigmoid and tanh on x out to +-12 (both saturate there); their backward from their output."""
    x, dy = normal(rng, n), normal(rng, n)
    wide = 4 * x
    y_sigmoid, y_tanh = sigmoid.sigmoid_forward_reference(wide), tanh.tanh_forward_reference(wide)
    dy64 = dy.astype(np.float64)
    cases = (("leaky_relu_forward", (x,), (0.2,), leaky_relu.leaky_relu_forward_reference(x.astype(np.float64), 0.2)),
             ("leaky_relu_backward", (dy, x), (0.2,),
              leaky_relu.leaky_relu_backward_reference(dy64, x.astype(np.float64), 0.2)),
             ("gelu_forward", (x,), (), gelu.gelu_forward_reference(x)),
             ("gelu_backward", (dy, x), (), gelu.gelu_backward_reference(dy64, x)),
             ("sigmoid_forward", (wide,), (), y_sigmoid),
             ("sigmoid_backward", (dy, y_sigmoid), (),
              sigmoid.sigmoid_backward_reference(dy64, y_sigmoid.astype(np.float64))),
             ("tanh_forward", (wide,), (), y_tanh),
             ("tanh_backward", (dy, y_tanh), (), tanh.tanh_backward_reference(dy64, y_tanh.astype(np.float64))))
    for name, inputs, scalars, expected in cases:
        out, operands = output(n, offset), [placed(array, offset) for array in inputs]
        getattr(kernels, name)(*map(pointer, operands), pointer(out), n, *scalars, 0)
        if name == "gelu_backward":
            # relative to the size of its two terms, which cancel where GELU's slope crosses 0
            # (x near -0.75): a lone element there is off by far more than 1e-5 of itself
            error = np.linalg.norm(out - expected) / np.linalg.norm(gelu_backward_terms(dy, x))
            assert error <= TOL, f"{name} n={n} {order} offset {offset}: error {error:.3e} of its terms"
        else:
            assert_close(f"{name} n={n} {order} offset {offset}", out, expected, TOL)


def test_sigmoid_and_tanh_saturate_and_keep_nan(kernels):
    """Exactly 0, 1 and +-1 past where float32 saturates, never NaN from an overflowing exp; NaN
    stays NaN (the CPU kernels' limits; sigmoid(-100) here is a subnormal float32, which a GPU
    built without --use_fast_math keeps too, where the CPU kernel flushes it to 0)."""
    x = np.array([-np.inf, -1e30, -1000, -100, -88, 0, 20, 88, 1000, 1e30, np.inf, np.nan], np.float32)
    y_sigmoid, y_tanh = output(x.size), output(x.size)
    kernels.sigmoid_forward(pointer(x), pointer(y_sigmoid), x.size, 0)
    kernels.tanh_forward(pointer(x), pointer(y_tanh), x.size, 0)
    np.testing.assert_array_equal(y_sigmoid[[0, 1, 2, 5, 7, 8, 9, 10]], [0, 0, 0, 0.5, 1, 1, 1, 1])
    np.testing.assert_array_equal(y_tanh[[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]], [-1, -1, -1, -1, -1, 0, 1, 1, 1, 1, 1])
    assert_close("sigmoid of -100 and -88", y_sigmoid[3:5], sigmoid.sigmoid_forward_reference(x[3:5]), TOL)
    assert np.isnan(y_sigmoid[-1]) and np.isnan(y_tanh[-1])


def gelu_backward_terms(dy, x):
    """|dy| (|s| + |2 x s (1 - s) u'|): the size of gelu_backward's two terms (float64)."""
    x = x.astype(np.float64)
    u = np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)
    du = np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * x**2)
    s = 1 / (1 + np.exp(-2 * u))
    return np.abs(dy) * (s + np.abs(2 * x * s * (1 - s) * du))


@pytest.mark.parametrize("rows, columns", [(1, 1), (3, 257), (2, 1031), (9, 33)])
def test_softmax_and_cross_entropy_sweep(kernels, order, rng, rows, columns):
    x = 4 * normal(rng, rows, columns)
    x_on_device, y = placed(x, 1), output((rows, columns), 1)
    kernels.softmax_forward(pointer(x_on_device), pointer(y), rows, columns, 0)
    assert_close(f"softmax {rows}x{columns} {order}", y, softmax.softmax_reference(x), TOL)

    targets = rng.integers(0, columns, rows)
    targets_on_device, losses, dz = placed(targets, 1), output(rows, 1), output((rows, columns), 1)
    kernels.softmax_cross_entropy(*map(pointer, (x_on_device, targets_on_device, losses, dz)), rows, columns, 0)
    loss, expected_dz = softmax_cross_entropy.softmax_cross_entropy_reference(x, targets)
    assert_close(f"cross-entropy loss {rows}x{columns} {order}", np.array([losses.astype(np.float64).mean()]),
                 np.array([loss]), TOL)
    assert_close(f"cross-entropy dlogits {rows}x{columns} {order}", dz, expected_dz, TOL)


def test_softmax_and_cross_entropy_of_non_finite_rows_match_the_cpu_backend(kernels, order, rng):
    """Rows of -inf only (every position masked: 0s), with some -inf, with a +inf, with logits
    of +-1e4: the one-pass statistics give what the CPU backend's passes give, NaN where it has
    NaN (the +inf row)."""
    x = rng.standard_normal((5, 300)).astype(np.float32)
    x[0] = -np.inf
    x[1, ::3] = -np.inf
    x[2, 7] = np.inf
    x[3, ::2] = 1e4
    x[4, ::2] = -1e4
    y = output(x.shape)
    kernels.softmax_forward(pointer(x), pointer(y), 5, 300, 0)
    targets = np.array([0, 1, 2, 3, 4])
    losses, dz = output(5), output(x.shape)
    kernels.softmax_cross_entropy(*map(pointer, (x, targets, losses, dz)), 5, 300, 0)
    expected_loss, expected_dz = pyai.ops.softmax_cross_entropy(x, targets, backend="numba-cpu")
    for name, out, expected in (("softmax", y, pyai.ops.softmax(x, backend="numba-cpu")), ("dlogits", dz, expected_dz)):
        np.testing.assert_array_equal(np.isnan(out), np.isnan(expected), err_msg=f"{name} {order}: NaN positions")
        finite = ~np.isnan(expected)
        assert_close(f"{name} {order}", out[finite], expected[finite], TOL)
    assert np.isnan(expected_loss) == np.isnan(losses.astype(np.float64).mean())


def binary_crossentropy_inputs(rng, n):
    """Logits 4 x normal, a fifth of them +-(30 to 1e30); targets a mix of 0, 1 and values between."""
    z = 4 * normal(rng, n)
    large = rng.random(n) < 0.2
    z[large] = np.sign(z[large]) * 10.0 ** rng.uniform(1.5, 30, np.count_nonzero(large))
    t = rng.choice([0.0, 1.0, 0.3, 0.999], n).astype(np.float32)
    return z, t


def binary_crossentropy_on_emulated_kernels(kernels, z, t):
    """(loss, dz) from the two launchers; the loss's double is read from 2 float32 slots."""
    loss, partial_sums = output(2), output(2 * cuda_row.BINARY_CROSSENTROPY_MAX_BLOCKS)
    dz = output(z.shape)
    kernels.binary_crossentropy_logits_forward(*map(pointer, (z, t, loss, partial_sums)), z.size, 0)
    kernels.binary_crossentropy_logits_backward(*map(pointer, (z, t, dz)), z.size, 0)
    return float(loss.view(np.float64)[0]), dz


# 257: two blocks, the second with one element; 262147: past the 1024 blocks of 256 threads, so the
# loss's grid-stride loop takes a second lap and the final pass sums 1024 partial sums
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("n", [1, 5, 257, 1031, 262147])
def test_binary_crossentropy_from_logits_sweep(kernels, order, rng, n, offset):
    z, t = binary_crossentropy_inputs(rng, n)
    loss, dz = binary_crossentropy_on_emulated_kernels(kernels, placed(z, offset), placed(t, offset))
    name = f"binary cross-entropy n={n} {order} offset {offset}"
    assert_close(f"{name} loss", np.array([loss]), np.array([binary_crossentropy.bce_logits_forward_reference(z, t)]),
                 LOSS_TOL)
    assert_close(f"{name} dz", dz, binary_crossentropy.bce_logits_backward_reference(z, t), LOSS_GRAD_TOL)


def test_binary_crossentropy_from_huge_logits_is_finite_and_exact(kernels):
    """Logits of +-1e30 and +-100: each term is max(z, 0) - z t + log1p(exp(-|z|)) in double, so a
    right answer costs 0 (not NaN from inf - inf), a wrong one |z| (not inf); the gradient is
    (0 or 1 - t) / n."""
    z = np.array([1e30, -1e30, 1e30, -1e30, 100, -100], np.float32)
    t = np.array([1, 0, 0, 1, 1, 1], np.float32)
    loss, dz = binary_crossentropy_on_emulated_kernels(kernels, z, t)
    expected = (2 * np.float64(z[0]) + 100 + 2 * np.log1p(np.exp(-100.0))) / 6
    assert np.isfinite(loss) and abs(loss - expected) <= 1e-15 * expected, (loss, expected)
    np.testing.assert_array_equal(dz, np.array([0, 0, 1, -1, 0, -1], np.float32) / np.float32(6))


def test_activations_and_loss_through_the_ops_api(kernels, rng):
    """pyai.ops on the cuda backend: any shape in, the same shape out; the loss a Python float;
    each within its tolerance of numba-cpu."""
    x, dy = 4 * normal(rng, 3, 5, 7), normal(rng, 3, 5, 7)
    z, t = binary_crossentropy_inputs(rng, 35)
    z, t = z.reshape(5, 7), t.reshape(5, 7)

    def results():
        y_sigmoid, y_tanh = pyai.ops.sigmoid(x), pyai.ops.tanh(x)
        return {"sigmoid": y_sigmoid, "sigmoid_grad": pyai.ops.sigmoid_grad(dy, y_sigmoid), "tanh": y_tanh,
                "tanh_grad": pyai.ops.tanh_grad(dy, y_tanh),
                "loss": pyai.ops.binary_crossentropy(z, t, from_logits=True),
                "dz": pyai.ops.binary_crossentropy_grad(z, t, from_logits=True)}

    with harness.as_cuda_extension(kernels):
        on_cuda = results()
    with pyai.use_backend("numba-cpu"):
        on_cpu = results()
    assert type(on_cuda["loss"]) is float
    assert_close("loss", np.array([on_cuda["loss"]]), np.array([on_cpu["loss"]]), LOSS_TOL)
    for name in ("sigmoid", "sigmoid_grad", "tanh", "tanh_grad", "dz"):
        assert on_cuda[name].shape == on_cpu[name].shape and on_cuda[name].dtype == np.float32, name
        assert_close(name, on_cuda[name], on_cpu[name], TOL)


def test_binary_crossentropy_loss_is_the_same_bits_in_both_orders(kernels, rng):
    """The loss's sums run in a fixed order (no atomics): the same double in lane and reverse order."""
    z, t = binary_crossentropy_inputs(rng, 70001)
    losses = []
    for reverse in (False, True):
        kernels.set_reverse(reverse)
        losses.append(binary_crossentropy_on_emulated_kernels(kernels, z, t)[0])
    kernels.set_reverse(False)
    assert losses[0] == losses[1], losses


@pytest.mark.parametrize("rows, channels", [(1, 1), (9, 31), (17, 33), (3, 300), (131, 37), (8300, 40)])
def test_layer_norm_sweep(kernels, order, rng, rows, channels):
    x, dy = 3 + normal(rng, rows, channels), normal(rng, rows, channels)
    gamma, beta = normal(rng, channels), normal(rng, channels)
    y, mean, rstd = output((rows, channels), 1), output(rows, 1), output(rows, 1)
    inputs = [placed(array, 1) for array in (x, gamma, beta, dy)]
    kernels.layer_norm_forward(*map(pointer, inputs[:3] + [y, mean, rstd]), rows, channels, 1e-5, 0)
    expected = layer_norm.layer_norm_forward_reference(x, gamma, beta, 1e-5)
    for name, out, ref in zip(("y", "mean", "rstd"), (y, mean, rstd), expected):
        assert_close(f"layer norm {name} {rows}x{channels} {order}", out, ref, TOL)

    dx, dgamma, dbeta = output((rows, channels), 1), output(channels, 1), output(channels, 1)
    scratch = output(4 * cuda_row.LAYER_NORM_MAX_ROW_CHUNKS * channels)
    kernels.layer_norm_backward(*map(pointer, (inputs[3], inputs[0], inputs[1], mean, rstd, dx, dgamma, dbeta,
                                               scratch)), rows, channels, 0)
    expected = layer_norm.layer_norm_backward_reference(dy, x, gamma, 1e-5)
    for name, out, ref in zip(("dx", "dgamma", "dbeta"), (dx, dgamma, dbeta), expected):
        # dx is ~rstd * (g - its mean): at C = 1 it is ~1e-3 of the terms, so it gets an absolute floor
        assert_close(f"layer norm {name} {rows}x{channels} {order}", out, ref, TOL if channels > 1 else 1e-2)


@pytest.mark.parametrize("count, vocab, channels", [(1, 1, 1), (37, 11, 33), (5, 300, 4)])
def test_embedding_sweep(kernels, order, rng, count, vocab, channels):
    ids, table, dout = rng.integers(0, vocab, count), normal(rng, vocab, channels), normal(rng, count, channels)
    out, inputs = output((count, channels), 1), [placed(array, 1) for array in (ids, table, dout)]
    kernels.embedding_forward(*map(pointer, inputs[:2] + [out]), count, channels, 0)
    assert_close(f"embedding {order}", out, embedding.embedding_forward_reference(ids, table), TOL)
    dtable = output((vocab, channels), 1)
    kernels.embedding_backward(*map(pointer, (inputs[2], inputs[0], dtable)), count, vocab, channels, 0)
    assert_close(f"embedding grad {order}", dtable, embedding.embedding_backward_reference(dout, ids, vocab), TOL)


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("n", [1, 5, 1031])
def test_adam_sweep(kernels, order, rng, n, offset):
    param, grad, m, v = normal(rng, n), normal(rng, n), normal(rng, n), np.abs(normal(rng, n))
    on_device = [placed(array, offset) for array in (param, grad, m, v)]
    alpha = float(adam.adam_step_size(1e-3, 0.9, 0.999, 3))
    kernels.adam_update(*map(pointer, on_device), n, alpha, float(np.float32(0.1)), float(np.float32(0.001)),
                        float(np.float32(1e-7)), 0)
    adam.adam_update_reference(param, grad, m, v, 1e-3, 0.9, 0.999, 1e-7, 3)
    for name, out, ref in zip(("param", "m", "v"), (on_device[0], on_device[2], on_device[3]), (param, m, v)):
        assert_close(f"adam {name} n={n} {order}", out, ref, ADAM_TOL)


ATTENTION_SHAPES = [(1, 1, 1, 1, False), (1, 1, 1, 1, True), (2, 17, 33, 5, True), (1, 33, 17, 24, False),
                    (1, 40, 45, 128, True), (1, 31, 31, 33, True), (1, 1, 70, 64, False),
                    (1, 130, 161, 16, True),   # 3 blocks of 64 queries, 6 tiles of 32 keys, the last ragged
                    (1, 67, 131, 64, True),    # backward: 3 blocks of 64 keys, causal tiles skipped
                    (1, 97, 89, 128, False),   # backward at D 128: blocks of 32 rows, Tq > Tk
                    (1, 37, 71, 65, True)]     # the D 128 blocking at D 65


@pytest.mark.parametrize("heads, n_queries, n_keys, depth, causal", ATTENTION_SHAPES)
def test_attention_sweep(kernels, order, rng, heads, n_queries, n_keys, depth, causal):
    q, do = normal(rng, 1, heads, n_queries, depth), normal(rng, 1, heads, n_queries, depth)
    k, v = normal(rng, 1, heads, n_keys, depth), normal(rng, 1, heads, n_keys, depth)
    scale = depth ** -0.5
    o, lse = output(q.shape, 1), output(q.shape[:3], 1)
    inputs = [placed(array, 1) for array in (q, k, v, do)]
    kernels.attention_forward(*map(pointer, inputs[:3] + [o, lse]), heads, n_queries, n_keys, depth, causal, scale, 0)
    expected_o, expected_lse = attention_forward.attention_forward_reference(q, k, v, causal, scale)
    name = f"attention {heads}x{n_queries}x{n_keys}x{depth} causal={causal} {order}"
    assert_close(f"{name} o", o, expected_o, TOL)
    assert_close(f"{name} lse", lse, expected_lse, TOL)
    delta, dq, dk, dv = output(q.shape[:3], 1), output(q.shape, 1), output(k.shape, 1), output(k.shape, 1)
    kernels.attention_backward(*map(pointer, inputs[3:] + inputs[:3] + [o, lse, delta, dq, dk, dv]), heads,
                               n_queries, n_keys, depth, causal, scale, 0)
    expected = attention_backward.attention_backward_reference(do, q, k, v, causal, scale)
    for tensor, out, ref in zip(("dq", "dk", "dv"), (dq, dk, dv), expected):
        assert_close(f"{name} {tensor}", out, ref, TOL)


BF16_ATTENTION_SHAPES = [(1, 1, 1, 1, False), (2, 17, 33, 5, True), (1, 33, 17, 24, False), (1, 40, 45, 128, True),
                         (1, 130, 161, 16, True), (1, 67, 131, 64, False)]
BF16_TOL = 1e-2   # p (and ds) and the outputs rounded to bf16, 2^-9 relative each; sums in float32


def bf16(rng, *shape):
    """Fresh normal values as bfloat16 (the inputs), and the same values as float64."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values = rng.standard_normal(shape).astype(ml_dtypes.bfloat16)
    return values, values.astype(np.float64)


def test_emulated_bf16_conversion_rounds_as_the_device(kernels, rng):
    """__float2bfloat16 rounds to nearest, ties to even (cvt.rn.bf16.f32), as ml_dtypes does:
    random floats, exact ties, the largest values that round to finite, infinities, NaN."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    ties = (rng.integers(0, 2**15, 200, dtype=np.uint32) << 16 | 0x8000).view(np.float32)
    special = np.array([0.0, -0.0, 1.0, np.inf, -np.inf, np.nan, 3.3895e38, 3.4e38, 1e-40, -1e-45], np.float32)
    randoms = (rng.standard_normal(300) * 10.0 ** rng.integers(-30, 30, 300)).astype(np.float32)
    values = np.concatenate([randoms, ties, special])
    bits = np.array([kernels.float_to_bf16(float(x)) for x in values], np.uint16)
    with np.errstate(invalid="ignore"):   # ml_dtypes warns when it casts a NaN
        expected = values.astype(ml_dtypes.bfloat16)
    nan = np.isnan(values)
    np.testing.assert_array_equal(bits[~nan], expected[~nan].view(np.uint16))
    assert np.isnan(bits[nan].view(ml_dtypes.bfloat16).astype(np.float32)).all()


def bf16_output(shape):
    """bfloat16 bits placed as `output`, all NaN (0xFFFF), so an element never written shows."""
    return placed(np.full(shape, 0xFFFF, np.uint16))


@pytest.mark.parametrize("heads, n_queries, n_keys, depth, causal", BF16_ATTENTION_SHAPES)
def test_bf16_attention_sweep(kernels, order, rng, heads, n_queries, n_keys, depth, causal):
    """Against the float64 attention (and gradients) of the bf16 inputs themselves: o, dq, dk, dv
    within BF16_TOL (p and ds are rounded to bf16 too, and delta comes from the bf16 o), lse
    (float32 statistics of exact bf16 products) within TOL. The inputs start 1 element (2 bytes)
    past an aligned address: the kernels stage them element by element."""
    (q, q64), (k, k64), (v, v64), (do, do64) = (bf16(rng, 1, heads, rows, depth)
                                                for rows in (n_queries, n_keys, n_keys, n_queries))
    scale = depth ** -0.5
    o, lse = bf16_output(q.shape), output(q.shape[:3])
    inputs = [placed(array.view(np.uint16), 1) for array in (q, k, v, do)]
    kernels.attention_forward_bf16(*map(pointer, inputs[:3] + [o, lse]), heads, n_queries, n_keys, depth, causal,
                                   scale, 0)
    expected_o, expected_lse = attention_forward.attention_forward_reference(q64, k64, v64, causal, scale)
    name = f"bf16 attention {heads}x{n_queries}x{n_keys}x{depth} causal={causal} {order}"
    assert_close(f"{name} o", o.view(q.dtype).astype(np.float32), expected_o, BF16_TOL)
    assert_close(f"{name} lse", lse, expected_lse, TOL)
    delta, dq, dk, dv = output(q.shape[:3]), bf16_output(q.shape), bf16_output(k.shape), bf16_output(k.shape)
    kernels.attention_backward_bf16(*map(pointer, inputs[3:] + inputs[:3] + [o, lse, delta, dq, dk, dv]), heads,
                                    n_queries, n_keys, depth, causal, scale, 0)
    expected = attention_backward.attention_backward_reference(do64, q64, k64, v64, causal, scale)
    for tensor, out, ref in zip(("dq", "dk", "dv"), (dq, dk, dv), expected):
        assert_close(f"{name} {tensor}", out.view(q.dtype).astype(np.float32), ref, BF16_TOL)


def test_bf16_attention_through_the_ops_api(kernels, rng):
    """pyai.ops.attention and attention_grad on the cuda backend take bfloat16 numpy arrays and
    return o, dq, dk, dv in bfloat16 and lse in float32."""
    (q, q64), (k, k64), (v, v64), (do, do64) = (bf16(rng, 2, 3, rows, 40) for rows in (37, 50, 50, 37))
    with harness.as_cuda_extension(kernels):
        o, lse = pyai.ops.attention(q, k, v, causal=True, return_lse=True)
        gradients = pyai.ops.attention_grad(do, q, k, v, o, lse, causal=True)
        with pytest.raises(TypeError, match="v: expected a bfloat16 numpy array .* got dtype float32"):
            pyai.ops.attention(q, k, v.astype(np.float32))
        with pytest.raises(TypeError, match="o: expected a bfloat16 numpy array .* got dtype float32"):
            pyai.ops.attention_grad(do, q, k, v, o.astype(np.float32), lse, causal=True)
    assert o.dtype == q.dtype and o.shape == q.shape and lse.dtype == np.float32
    expected_o, expected_lse = attention_forward.attention_forward_reference(q64, k64, v64, True, 40 ** -0.5)
    assert_close("bf16 attention o", o.astype(np.float32), expected_o, BF16_TOL)
    assert_close("bf16 attention lse", lse, expected_lse, TOL)
    expected = attention_backward.attention_backward_reference(do64, q64, k64, v64, True, 40 ** -0.5)
    for tensor, gradient, ref, like in zip(("dq", "dk", "dv"), gradients, expected, (q, k, v)):
        assert gradient.dtype == q.dtype and gradient.shape == like.shape, tensor
        assert_close(f"bf16 attention {tensor}", gradient.astype(np.float32), ref, BF16_TOL)


def test_bf16_attention_on_a_float32_backend_is_a_type_error(rng):
    (q, _), (k, _) = bf16(rng, 1, 1, 5, 8), bf16(rng, 1, 1, 5, 8)
    lse = np.zeros((1, 1, 5), np.float32)
    with pytest.raises(TypeError, match="bfloat16 inputs are taken by the cuda backend only; backend 'numba-cpu'"):
        pyai.ops.attention(q, k, k, backend="numba-cpu")
    with pytest.raises(TypeError, match="bfloat16 inputs are taken by the cuda backend only; backend 'numba-cpu'"):
        pyai.ops.attention_grad(q, q, k, k, q, lse, backend="numba-cpu")


def test_gpu_benchmark_attention_rows_run_on_the_emulated_kernels(kernels, monkeypatch):
    """benchmarks/gpu_cuda.py's attention rows on CPU tensors, the emulation standing in for
    pyai._cuda (untimed): the pointers, argument orders and the errors it reports against torch's
    SDPA are right before the benchmark ever meets a GPU."""
    torch = pytest.importorskip("torch")
    benchmark, calls = test_gpu_machine.untimed_gpu_benchmark(kernels, monkeypatch)
    torch.manual_seed(0)
    rows = benchmark.attention_rows(37, 24, True, None, None, heads=2, device="cpu")
    errors = [float(re.search(r"\d\.\de[+-]\d+", row[-1]).group()) for row in rows[:3]]   # "rel err ... 2.1e-03"
    assert max(errors[:2]) < BF16_TOL and errors[2] < 1e-5, rows
    assert len(calls) == 2 * len(rows)   # each row timed pyai's kernel and its peer


@pytest.mark.parametrize("header, name", fake_cuda.HEADER_CONSTANTS)
def test_cuda_backend_constants_are_the_headers(header, name):
    assert getattr(cuda_row, name) == fake_cuda.header_constant(header, name)


def test_launch_past_the_grid_limits_raises(kernels):
    """The launchers check their grids, touching no memory: matmul's 1-D grid past 2^31 - 1 blocks
    raises before the launch, attention's grid.y past 65535 through cudaGetLastError."""
    with pytest.raises(RuntimeError, match="matmul: M x N = 2147483647 x 2147483647 needs .* past CUDA's grid"):
        kernels.matmul_forward(0, 0, 0, 0, 2**31 - 1, 2**31 - 1, 1, False, False, 0, 0.0, 0)
    with pytest.raises(RuntimeError, match="invalid configuration"):
        kernels.attention_forward(0, 0, 0, 0, 0, 65536, 1, 1, 1, False, 1.0, 0)
