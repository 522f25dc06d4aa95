"""The numba-cuda backend's own behaviour: GPU arrays in and out, explicit transfers, the errors
for GPU arrays, and the kernel paths the shared op tests leave to a GPU because their sizes are
too large for the CUDA simulator (several thread blocks, Tq > Tk, rows looped over by a block).

The shared backend-parametrized tests (test_matmul.py, test_attention.py, ...) check every op's
numbers against TensorFlow; here the outputs are compared with the float64 references at their
tolerance, 1e-5 relative (float32 sums of at most a few hundred products).
Without a GPU this file runs under numba's CUDA simulator (see conftest.py): the kernels take
their shared-memory path instead of warp shuffles, and float32 rounding is not modelled.
"""

import importlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pyai
from conftest import CUDA_SIMULATOR, assert_close, no_nvidia_driver
from pyai import device, dispatch, ops
from pyai.kernels.numba_cuda import binary_crossentropy as cuda_binary_crossentropy
from pyai.kernels.numba_cuda import layer_norm as cuda_layer_norm
from pyai.kernels.numba_cpu.adam import adam_update_reference
from pyai.kernels.numba_cpu.attention_backward import attention_backward_reference
from pyai.kernels.numba_cpu.attention_forward import attention_forward_reference
from pyai.kernels.numba_cpu.binary_crossentropy import bce_logits_backward_reference, bce_logits_forward_reference
from pyai.kernels.numba_cpu.gelu import gelu_backward_reference
from pyai.kernels.numba_cpu.layer_norm import layer_norm_backward_reference, layer_norm_forward_reference
from pyai.kernels.numba_cpu.softmax_cross_entropy import softmax_cross_entropy_reference

BACKEND = "numba-cuda"
TOL = 1e-5
ONE_ROUNDING = 1.2e-7   # an ulp of float32 at 1: the activations compute in float64 and round once
REASON = dispatch.unavailable_reason(BACKEND)
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"numba-cuda is not usable: {REASON}")


@pytest.fixture
def numba_cuda():
    """GPU arrays are checked against the current backend , and a per-call backend= works too; these tests
    choose numba-cuda for the whole test."""
    from numba import cuda
    with pyai.use_backend(BACKEND):
        yield cuda


def normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_the_simulator_stands_in_for_a_missing_gpu():
    if no_nvidia_driver() and os.environ.get("PYAI_NO_CUDASIM") != "1":
        assert CUDA_SIMULATOR and REASON is None


def test_device_arrays_in_give_device_arrays_out(numba_cuda, rng):
    a, b = normal(rng, 7, 5), normal(rng, 5, 3)
    out = ops.matmul(numba_cuda.to_device(a), numba_cuda.to_device(b))
    assert device.is_device_array(out) and out.shape == (7, 3)
    assert_close("matmul of device arrays", out.copy_to_host(), a.astype(np.float64) @ b, TOL)


def test_one_device_array_is_enough_to_keep_the_results_on_the_gpu(numba_cuda, rng):
    x, gamma, beta = normal(rng, 4, 9), normal(rng, 9), normal(rng, 9)
    y, mean, rstd = ops.layer_norm(x, numba_cuda.to_device(gamma), beta, return_stats=True)
    assert all(device.is_device_array(array) for array in (y, mean, rstd))
    assert_close("layer_norm y", y.copy_to_host(),
                 layer_norm_forward_reference(x, gamma, beta, 1e-5)[0], TOL)


def test_numpy_arrays_in_give_numpy_arrays_out(numba_cuda, rng):
    out = ops.leaky_relu(normal(rng, 6), 0.1)
    assert type(out) is np.ndarray and out.dtype == np.float32


def test_zero_dimensional_inputs_keep_their_shape(numba_cuda, rng):
    """A 0-d array in gives a 0-d result (and one 0-d id an embedding row), on the host and on the GPU."""
    x, table = np.float32(rng.standard_normal()) * np.ones((), np.float32), normal(rng, 5, 3)
    assert ops.leaky_relu(x, 0.1).shape == ()
    assert device.to_device(x).shape == ()
    out = ops.embedding(np.array(3), table)
    assert out.shape == (3,) and np.array_equal(out, table[3])


def test_scalar_results_are_python_floats_either_way(numba_cuda, rng):
    logits, targets = normal(rng, 2, 5), np.array([1, 4])
    loss, dlogits = ops.softmax_cross_entropy(numba_cuda.to_device(logits), targets)
    assert type(loss) is float and device.is_device_array(dlogits)


def test_to_device_and_to_host_are_explicit_copies(numba_cuda, rng):
    x = normal(rng, 3, 4)
    on_gpu = device.to_device(x)
    assert device.is_device_array(on_gpu) and device.to_device(on_gpu) is on_gpu
    back = device.to_host(on_gpu)
    assert type(back) is np.ndarray and back is not x
    np.testing.assert_array_equal(back, x)
    assert device.to_host(x) is x


def test_a_per_call_backend_takes_device_arrays(rng):
    from numba import cuda
    a = cuda.to_device(normal(rng, 2, 2))
    assert device.is_device_array(ops.matmul(a, a, backend=BACKEND))


def test_adam_updates_device_arrays_in_place(numba_cuda, rng):
    """pyai.ops.adam_update takes numpy arrays only; the backend's function takes GPU ones."""
    param, grad, m = normal(rng, 300), normal(rng, 300), normal(rng, 300)
    v = rng.uniform(0, 0.1, 300).astype(np.float32)
    on_gpu = [numba_cuda.to_device(array) for array in (param, grad, m, v)]
    dispatch.implementation("adam_update", BACKEND)(*on_gpu, 0.01, 0.9, 0.999, 1e-7, 3)
    adam_update_reference(param, grad, m, v, 0.01, 0.9, 0.999, 1e-7, 3)
    for name, out, expected in zip(("param", "m", "v"), (on_gpu[0], on_gpu[2], on_gpu[3]),
                                   (param, m, v)):
        assert_close(f"adam {name}", out.copy_to_host(), expected, TOL)


class CountingPool:
    """A fresh pool for the backend that records the device arrays it had to allocate."""

    def __init__(self, monkeypatch):
        from pyai.kernels.numba_cuda import buffers
        self.allocated = []
        outer = self

        class Pool(buffers.BufferPool):
            def allocate(self, shape, dtype):
                outer.allocated.append((buffers.shape_tuple(shape), np.dtype(dtype).str))
                return super().allocate(shape, dtype)

        self.pool = Pool()
        monkeypatch.setattr(buffers, "POOL", self.pool)

    def pooled(self):
        return [array for arrays in self.pool.free.values() for array in arrays]


def test_ops_on_numpy_arrays_reuse_device_buffers(numba_cuda, rng, monkeypatch):
    """The second forward and backward of the same sizes allocate nothing on the device: input
    copies, outputs and temporaries (the backward's partial sums) come from the first's, pooled;
    and the reused memory gives the second call's own results."""
    counting = CountingPool(monkeypatch)
    for call in range(2):
        x, gamma, beta, dy = normal(rng, 2, 37), normal(rng, 37), normal(rng, 37), normal(rng, 2, 37)
        y, mean, rstd = ops.layer_norm(x, gamma, beta, return_stats=True)
        grads = ops.layer_norm_grad(dy, x, gamma, mean, rstd)
        if call == 0:
            first = len(counting.allocated)
            assert first >= 10, counting.allocated   # 3 + 5 copies, 3 + 3 outputs, 2 partials at least
        for name, out, ref in zip(("y", "mean", "rstd", "dx", "dgamma", "dbeta"), (y, mean, rstd, *grads),
                                  (*layer_norm_forward_reference(x, gamma, beta, 1e-5),
                                   *layer_norm_backward_reference(dy, x, gamma, 1e-5))):
            assert_close(f"layer_norm {name}, call {call}", out, ref, TOL)
    assert len(counting.allocated) == first, counting.allocated[first:]


def test_pooled_buffers_are_never_shared_by_two_live_arrays(numba_cuda, rng, monkeypatch):
    """Square operands of one shape, a product of that shape: three pooled arrays of one key live
    in one call, each its own (were two one array, the product would be of the wrong operands)."""
    counting = CountingPool(monkeypatch)
    for _ in range(3):
        a, b = normal(rng, 9, 9), normal(rng, 9, 9)
        assert_close("matmul of pooled square operands", ops.matmul(a, b), a.astype(np.float64) @ b, TOL)
    assert len(counting.allocated) == 3, counting.allocated


def test_results_left_on_the_gpu_are_never_pooled(numba_cuda, rng, monkeypatch):
    """Results returned on the GPU are the caller's: later ops on numpy arrays of the same shape
    (which reuse pooled arrays) leave them as they were; the op's input copy and temporaries of
    a GPU-path call are pooled."""
    counting = CountingPool(monkeypatch)
    x, gamma, beta = normal(rng, 2, 9), normal(rng, 9), normal(rng, 9)
    y, mean, rstd = ops.layer_norm(x, numba_cuda.to_device(gamma), beta, return_stats=True)
    pooled = counting.pooled()
    assert pooled and not any(array is result for array in pooled for result in (y, mean, rstd))
    for _ in range(2):
        ops.layer_norm(normal(rng, 2, 9), gamma, beta, return_stats=True)
    for name, out, ref in zip(("y", "mean", "rstd"), (y, mean, rstd),
                              layer_norm_forward_reference(x, gamma, beta, 1e-5)):
        assert_close(f"layer_norm {name} left on the GPU", out.copy_to_host(), ref, TOL)


class ForeignGpuArray:
    """Any library's GPU array, as far as the checks see it: only __cuda_array_interface__."""

    def __init__(self, shape, typestr="<f4", strides=None):
        """shape None: an array whose interface raises when read (a PyTorch tensor that
        requires grad does)."""
        self.interface = shape and {"shape": shape, "typestr": typestr, "strides": strides,
                                    "data": (0, False), "version": 3}

    @property
    def __cuda_array_interface__(self):
        if self.interface is None:
            raise RuntimeError("Can't export tensors that require gradient, use tensor.detach()")
        return self.interface


@pytest.mark.parametrize("array,error,message", [
    (ForeignGpuArray((3, 4), "<f8"), TypeError, r"^a: expected a float32 GPU array, got float64"),
    (ForeignGpuArray((3, 4), strides=(4, 12)), ValueError, r"^a: expected a C-contiguous GPU"),
    (ForeignGpuArray((12,)), ValueError, r"^a: expected a 2-d array, got shape \(12,\)"),
    (ForeignGpuArray((3, 0)), ValueError, r"^a: has an empty dimension"),
    (ForeignGpuArray(None), TypeError, r"^a: its __cuda_array_interface__ cannot be read: Can't"),
])
def test_gpu_arrays_are_checked_not_converted(numba_cuda, array, error, message):
    with pytest.raises(error, match=message):
        ops.matmul(array, np.ones((4, 2), np.float32))


def test_strided_device_views_are_refused(numba_cuda):
    strided = numba_cuda.to_device(np.ones((4, 6), np.float32))[:, ::2]
    with pytest.raises(ValueError, match=r"^x: expected a C-contiguous GPU array"):
        ops.leaky_relu(strided)


def test_other_backends_refuse_gpu_arrays(numba_cuda):
    with pyai.use_backend("numba-cpu"):
        with pytest.raises(TypeError, match=r"^x: .*GPU array.*copy it to the host first"):
            ops.leaky_relu(numba_cuda.to_device(np.ones(3, np.float32)))


@pytest.mark.parametrize("transpose_a,transpose_b", [(False, False), (True, True)])
def test_matmul_over_several_blocks(numba_cuda, rng, transpose_a, transpose_b):
    """130 x 260: a 2 x 3 grid of 128 x 128 tiles, the last ones ragged."""
    a = normal(rng, *((5, 130) if transpose_a else (130, 5)))
    b = normal(rng, *((260, 5) if transpose_b else (5, 260)))
    out = ops.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    exact = (a.T if transpose_a else a).astype(np.float64) @ (b.T if transpose_b else b)
    assert_close(f"matmul 130x260x5 ta={transpose_a} tb={transpose_b}", out, exact, TOL)


def test_depth_splits_fill_the_sms_with_runs_at_least_512_deep():
    from pyai.kernels.numba_cuda.matmul import depth_splits
    assert depth_splits(512, 64, 12544) == 24       # 4 tiles: 33 runs would fill 132 SMs; 24 of 512 deep
    assert depth_splits(130, 260, 100000) == 22     # 6 tiles
    assert depth_splits(1, 1, 10 ** 6) == 64        # at most 64
    assert depth_splits(128, 128, 1023) == 1        # two runs would be under 512 deep
    assert depth_splits(1024, 1024, 4096) == 3      # 64 tiles: 3 runs give 192 blocks
    assert depth_splits(1152, 1024, 4096) == 1      # 72 tiles: over half the SMs busy


def test_a_product_cut_in_depth_adds_its_runs_in_order(numba_cuda, rng, monkeypatch):
    """With runs of at least 16 (not 512) deep, x^T w of K = 50 (a weight gradient's layout) is cut
    into 3 runs (24, 24 and 2 deep, whole slices of 8): each run's page summed in order, the bias
    and leaky ReLU after."""
    from pyai.kernels.numba_cuda import matmul as cuda_matmul
    monkeypatch.setattr(cuda_matmul, "SPLIT_MIN_DEPTH", 16)
    assert cuda_matmul.depth_splits(100, 7, 50) == 3
    x, w, bias = normal(rng, 50, 100), normal(rng, 50, 7), normal(rng, 7)
    out = cuda_matmul.fused_matmul(*map(numba_cuda.to_device, (x, w)), True, False, numba_cuda.to_device(bias),
                                   "leaky_relu", 0.3)
    y = x.T.astype(np.float64) @ w + bias
    assert_close("x^T w 100x7x50 in 3 runs", out.copy_to_host(), np.where(y > 0, y, 0.3 * y), TOL)


def test_linear_epilogue_over_several_blocks(numba_cuda, rng):
    x, w, b = normal(rng, 130, 3), normal(rng, 3, 129), normal(rng, 129)
    out = ops.linear(x, w, b, activation="leaky_relu", alpha=0.3)
    y = x.astype(np.float64) @ w + b
    assert_close("linear 130x3->129, leaky_relu", out, np.where(y > 0, y, 0.3 * y), TOL)


@pytest.mark.parametrize("shape", [(13,), (2, 1, 2, 33)])
def test_layer_norm_of_1d_and_4d_inputs(numba_cuda, rng, shape):
    x, gamma, beta, dy = normal(rng, *shape), normal(rng, shape[-1]), normal(rng, shape[-1]), \
        normal(rng, *shape)
    y, mean, rstd = ops.layer_norm(x, gamma, beta, return_stats=True)
    for name, out, ref in zip(("y", "mean", "rstd"), (y, mean, rstd),
                              layer_norm_forward_reference(x, gamma, beta, 1e-5)):
        assert_close(f"layer_norm {name} {shape}", out, ref, TOL)
    grads = ops.layer_norm_grad(dy, x, gamma, mean, rstd)
    for name, out, ref in zip(("dx", "dgamma", "dbeta"), grads,
                              layer_norm_backward_reference(dy, x, gamma, 1e-5)):
        assert_close(f"layer_norm {name} {shape}", out, ref, TOL)


def test_layer_norm_backward_with_several_rows_per_block(numba_cuda, rng, monkeypatch):
    """Two blocks for seven rows: each block loops over rows and adds into its partials."""
    monkeypatch.setattr(cuda_layer_norm, "BACKWARD_BLOCKS", 2)
    x, gamma, dy = normal(rng, 7, 130), normal(rng, 130), normal(rng, 7, 130)
    _, mean, rstd = ops.layer_norm(x, gamma, gamma, return_stats=True)
    grads = ops.layer_norm_grad(dy, x, gamma, mean, rstd)
    for name, out, ref in zip(("dx", "dgamma", "dbeta"), grads,
                              layer_norm_backward_reference(dy, x, gamma, 1e-5)):
        assert_close(f"layer_norm {name}, 2 blocks", out, ref, TOL)


def test_cross_entropy_over_rows_longer_than_a_block(numba_cuda, rng):
    logits, targets = 3 * normal(rng, 3, 300), rng.integers(0, 300, 3)
    loss, dlogits = ops.softmax_cross_entropy(logits, targets)
    exact_loss, exact_dlogits = softmax_cross_entropy_reference(logits, targets)
    assert_close("cross-entropy loss", loss, exact_loss, TOL)
    assert_close("cross-entropy dlogits", dlogits, exact_dlogits, TOL)


@pytest.mark.parametrize("shape,causal", [((1, 1, 40, 5, 8), False), ((1, 1, 20, 70, 8), True),
                                          ((1, 1, 70, 70, 8), True)],
                         ids=["more-queries-than-keys", "causal-offset", "causal-square"])
def test_attention_over_several_tiles(numba_cuda, rng, shape, causal):
    """Key tiles of 32 and query tiles of 32 or 64: several of each, ragged, the causal diagonal
    crossing tiles with and without an offset (Tk - Tq)."""
    batch, heads, n_queries, n_keys, depth = shape
    q, do = normal(rng, batch, heads, n_queries, depth), normal(rng, batch, heads, n_queries, depth)
    k, v = normal(rng, batch, heads, n_keys, depth), normal(rng, batch, heads, n_keys, depth)
    scale = 1 / np.sqrt(depth)
    o, lse = ops.attention(q, k, v, causal=causal, return_lse=True)
    for name, out, ref in zip(("o", "lse"), (o, lse),
                              attention_forward_reference(q, k, v, causal, scale)):
        assert_close(f"attention {name} {shape} causal={causal}", out, ref, TOL)
    grads = ops.attention_grad(do, q, k, v, o, lse, causal=causal)
    for name, out, ref in zip(("dq", "dk", "dv"), grads,
                              attention_backward_reference(do, q, k, v, causal, scale)):
        assert_close(f"attention {name} {shape} causal={causal}", out, ref, TOL)


def test_attention_depth_is_limited(numba_cuda):
    q = np.ones((1, 1, 2, 129), np.float32)
    with pytest.raises(ValueError, match=r"^q: the numba-cuda attention supports a head depth"):
        ops.attention(q, q, q)


def test_activation_and_loss_results_stay_on_the_gpu(numba_cuda, rng):
    x, t = normal(rng, 3, 7), rng.uniform(0, 1, (3, 7)).astype(np.float32)
    on_gpu = numba_cuda.to_device(x)
    y, derivative = ops.gelu(on_gpu, return_derivative=True)
    results = {"sigmoid": ops.sigmoid(on_gpu), "tanh_grad": ops.tanh_grad(on_gpu, x), "gelu": y,
               "gelu derivative": derivative, "bce gradient": ops.binary_crossentropy_grad(on_gpu, t, from_logits=True)}
    for name, out in results.items():
        assert device.is_device_array(out) and out.shape == (3, 7), name
    assert type(ops.binary_crossentropy(on_gpu, t, from_logits=True)) is float


def test_embedding_results_stay_on_the_gpu_with_ids_from_the_host(numba_cuda, rng):
    ids, table, dout = rng.integers(0, 5, (2, 3)), normal(rng, 5, 4), normal(rng, 2, 3, 4)
    out = ops.embedding(ids, numba_cuda.to_device(table))
    assert device.is_device_array(out)
    np.testing.assert_array_equal(out.copy_to_host(), table[ids])
    dtable = ops.embedding_grad(numba_cuda.to_device(dout), ids, 5)
    assert device.is_device_array(dtable) and dtable.shape == (5, 4)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "gelu"])
def test_activations_loop_over_elements_when_the_grid_is_capped(numba_cuda, rng, monkeypatch, name):
    """Two blocks of 256 threads for 1031 elements: each thread takes two or three, as on a GPU
    every thread does for arrays past MAX_BLOCKS blocks."""
    module = importlib.import_module(f"pyai.kernels.numba_cuda.{name}")
    kernels = importlib.import_module("pyai.kernels.numba_cuda")
    monkeypatch.setattr(kernels, "MAX_BLOCKS", 2)
    assert kernels.grid_size(1031) == 2
    x, dy = 3 * normal(rng, 1031), normal(rng, 1031)
    y = getattr(ops, name)(x)
    assert_close(f"{name} y, 2 blocks", y, getattr(module, f"{name}_forward_reference")(x), ONE_ROUNDING)
    if name == "gelu":
        assert_close("gelu dx, 2 blocks", ops.gelu_grad(dy, x), gelu_backward_reference(dy, x), TOL)
    else:
        assert_close(f"{name} dx, 2 blocks", getattr(ops, f"{name}_grad")(dy, y),
                     getattr(module, f"{name}_backward_reference")(dy, y), TOL)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "gelu"])
def test_activations_are_within_an_ulp_everywhere(numba_cuda, name):
    """Each element one rounding from float64 (within an ulp), on a grid over [-100, 100] and on
    tiny inputs: test_elementwise.py's dense grid, thinned for the simulator. Outputs below the
    smallest normal float32 (sigmoid of x < -87.3) are subnormals, within a step of theirs."""
    grid = np.linspace(-100, 100, 2001, dtype=np.float32)
    tiny = np.geomspace(1e-30, 1, 300, dtype=np.float32)
    x = np.concatenate([grid, tiny, -tiny])
    module = importlib.import_module(f"pyai.kernels.numba_cuda.{name}")
    np.testing.assert_allclose(getattr(ops, name)(x), getattr(module, f"{name}_forward_reference")(x),
                               rtol=ONE_ROUNDING, atol=1.5e-45, err_msg=name)


def test_binary_crossentropy_from_logits_adds_over_blocks(numba_cuda, rng, monkeypatch):
    """1031 logits, some of them huge, in two blocks: each thread adds several elements, each
    block's sum goes to its own partial, and the host adds the partials."""
    monkeypatch.setattr(cuda_binary_crossentropy, "LOSS_BLOCKS", 2)
    monkeypatch.setattr(importlib.import_module("pyai.kernels.numba_cuda"), "MAX_BLOCKS", 2)   # the gradient's
    z, t = 5 * normal(rng, 1031), rng.uniform(0, 1, 1031).astype(np.float32)
    z[::97] = rng.choice([-3e38, -1e4, 1e4, 3e38], z[::97].size)
    loss = ops.binary_crossentropy(z, t, from_logits=True)
    d = ops.binary_crossentropy_grad(z, t, from_logits=True)
    assert np.isfinite(loss) and np.all(np.isfinite(d))
    assert_close("bce logits loss, 2 blocks", loss, bce_logits_forward_reference(z, t), TOL)
    assert_close("bce logits gradient, 2 blocks", d, bce_logits_backward_reference(z, t), TOL)


def test_embedding_grad_gives_the_cpu_kernels_floats(numba_cuda, rng):
    """Each id's rows are added in float32 in increasing position, as numba-cpu adds them: the
    same floats, whatever the thread count, with one id repeated 30 times and more, two never seen."""
    ids = rng.integers(0, 7, (3, 41))
    ids[0, :30] = 4
    dout = normal(rng, 3, 41, 19)
    dtable = ops.embedding_grad(dout, ids, 9)
    np.testing.assert_array_equal(dtable, ops.embedding_grad(dout, ids, 9, backend="numba-cpu"))
    np.testing.assert_array_equal(dtable[7:], 0)


PTX_SCRIPT = textwrap.dedent("""
    import sys
    try:
        import numba.cuda.dispatcher as dispatcher
        from numba import boolean, cuda, float32, float64, int64
        from numba.cuda.cudadrv.error import NvvmSupportError
    except ImportError as error:
        sys.exit(f"skip: {error}")

    class Device:   # device functions ask the current device for its compute capability
        compute_capability = (9, 0)

    dispatcher.get_current_device = lambda: Device
    from pyai.kernels.numba_cuda import adam as cuda_adam
    from pyai.kernels.numba_cuda import binary_crossentropy as cuda_binary_crossentropy
    from pyai.kernels.numba_cuda import embedding as cuda_embedding
    from pyai.kernels.numba_cuda import gelu as cuda_gelu
    from pyai.kernels.numba_cuda import attention_backward as cuda_attention_backward
    from pyai.kernels.numba_cuda import attention_forward as cuda_attention_forward
    from pyai.kernels.numba_cuda import layer_norm as cuda_layer_norm
    from pyai.kernels.numba_cuda import leaky_relu as cuda_leaky_relu
    from pyai.kernels.numba_cuda import matmul as cuda_matmul
    from pyai.kernels.numba_cuda import sigmoid as cuda_sigmoid
    from pyai.kernels.numba_cuda import softmax_cross_entropy as cuda_softmax_cross_entropy
    from pyai.kernels.numba_cuda import tanh as cuda_tanh
    m, v, h, i = float32[:, ::1], float32[::1], float32[:, :, ::1], int64[::1]
    keys, queries = cuda_attention_backward.backward_kernels(64)
    kernels = [
        (cuda_matmul.gemm_kernel(True, False, True, 3), (m, m, v, float32, int64, h)),
        (cuda_matmul.sum_pages_kernel, (v, v, boolean, int64, float32, v)),
        (cuda_leaky_relu.leaky_relu_backward_kernel, (v, v, float32, v)),
        (cuda_adam.adam_update_kernel, (v, v, v, v, float32, float32, float32, float32)),
        (cuda_layer_norm.layer_norm_forward_kernel, (m, v, v, float64, m, v, v)),
        (cuda_layer_norm.layer_norm_backward_kernel,
         (m, m, v, v, v, m, float64[:, ::1], float64[:, ::1])),
        (cuda_layer_norm.column_sums_kernel, (float64[:, ::1], v)),
        (cuda_softmax_cross_entropy.cross_entropy_kernel, (m, int64[::1], float64[::1], m)),
        (cuda_attention_forward.forward_kernel(64), (h, h, h, boolean, float32, h, m)),
        (keys, (h, h, h, h, m, m, boolean, float32, h, h)),
        (queries, (h, h, h, h, m, m, boolean, float32, h)),
        (cuda_attention_backward.delta_kernel, (m, m, v)),
        (cuda_sigmoid.sigmoid_forward_kernel, (v, v)),
        (cuda_sigmoid.sigmoid_backward_kernel, (v, v, v)),
        (cuda_tanh.tanh_forward_kernel, (v, v)),
        (cuda_tanh.tanh_backward_kernel, (v, v, v)),
        (cuda_binary_crossentropy.bce_logits_forward_kernel, (v, v, float64[::1])),
        (cuda_binary_crossentropy.bce_logits_backward_kernel, (v, v, float64, v)),
        (cuda_gelu.gelu_forward_kernel, (v, v)),
        (cuda_gelu.gelu_backward_kernel, (v, v, v)),
        (cuda_embedding.embedding_forward_kernel, (i, m, m)),
        (cuda_embedding.embedding_backward_kernel, (m, i, i, m)),
    ]
    for kernel, signature in kernels:
        try:
            cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))
        except NvvmSupportError as error:
            sys.exit(f"skip: {error}")
""")


def test_kernels_compile_to_ptx_for_a_gpu():
    """The simulator never compiles a kernel, nor runs the warp-shuffle paths: compile them to
    sm_90 PTX (NVVM, no GPU needed) in a process without the simulator. This is what catches
    numba typing errors such as a builtin max(a, b), which numba 0.66+ cannot compile for CUDA."""
    environment = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    result = subprocess.run([sys.executable, "-c", PTX_SCRIPT], env=environment,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and result.stderr.strip().startswith("skip: "):
        pytest.skip(result.stderr.strip()[6:])
    assert result.returncode == 0, result.stderr[-3000:]


class Shape:
    """Only a shape: the launch-size checks run before any memory is touched."""

    def __init__(self, *shape):
        self.shape = shape


def test_launches_past_the_grid_y_limit_raise_naming_the_size():
    from pyai.kernels.numba_cuda import attention_backward, attention_forward, matmul
    with pytest.raises(ValueError, match="matmul: M = 8388481 rows need more than 65535 row tiles"):
        matmul.matmul(Shape(128 * 65535 + 1, 4), Shape(4, 4), False, False)
    q, k = Shape(2, 32768, 4, 8), Shape(2, 32768, 4, 8)
    with pytest.raises(ValueError, match="q: B \\* H = 65536 is past the 65535 heads"):
        attention_forward.attention_forward(q, k, k, False, 0.5)
    with pytest.raises(ValueError, match="q: B \\* H = 65536 is past the 65535 heads"):
        attention_backward.attention_backward(q, q, k, k, q, Shape(2, 32768, 4), False, 0.5)
