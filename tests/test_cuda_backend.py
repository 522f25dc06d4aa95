"""The cuda backend's build and its behaviour on machines with and without a GPU.

On a machine without a GPU these check that the extension was built, imports, and says why it
cannot run; the backend then refuses with that reason, for every op of its row. The Python side
of the row (pointer and layout checks on `__cuda_array_interface__`, size limits, where results
go) is checked with stand-in objects that expose the interface but own no GPU memory: nothing
is launched. The numerical results of the ops are checked by the backend-parametrized op tests
and tests/test_golden.py; the tests here marked `needs_gpu` check only what those cannot reach:
DeviceBuffer, the kernels' misaligned-pointer path and GPU arrays in and out.
"""

import importlib
import inspect
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from pyai import dispatch, ops
from pyai._backends import cuda as cuda_row
from pyai._backends import numba_cpu
from pyai.kernels.common import ACTIVATIONS

pytestmark = pytest.mark.skipif(
    shutil.which("nvcc") is None, reason="nvcc is not on PATH, so pyai._cuda was not built")


@pytest.fixture(scope="module")
def cuda():
    return importlib.import_module("pyai._cuda")


@pytest.fixture(scope="module")
def status(cuda):
    return cuda.runtime_status()


@pytest.fixture
def needs_gpu(status):
    if status is not None:
        pytest.skip(f"needs a CUDA device: {status}")


@pytest.fixture
def without_gpu(status):
    if status is None:
        pytest.skip("a CUDA device is present")


KERNELS = ("runtime_status", "leaky_relu_forward", "leaky_relu_backward", "DeviceBuffer", "matmul_forward",
           "matmul_forward_tiles", "matmul_tiles_for", "matmul_tf32_forward", "matmul_bf16_forward",
           "matmul_bf16_forward_tiles",
           "attention_forward", "attention_forward_bf16", "attention_backward", "attention_backward_bf16",
           "layer_norm_forward", "layer_norm_backward",
           "gelu_forward", "gelu_backward", "sigmoid_forward", "sigmoid_backward", "tanh_forward", "tanh_backward",
           "binary_crossentropy_logits_forward", "binary_crossentropy_logits_backward", "softmax_forward",
           "softmax_cross_entropy", "embedding_forward", "embedding_backward", "adam_update", "conv_partial_floats",
           "conv2d_forward",
           "conv2d_backward", "conv2d_transpose_forward", "conv2d_transpose_backward", "synchronize")


class FakeDeviceArray:
    """Exposes `__cuda_array_interface__` (on the class, as GPU arrays do) over a made-up
    address; never dereferenced."""

    def __init__(self, shape, typestr="<f4", strides=None, read_only=False, mask=None, address=0xDEAD0000):
        self.shape = tuple(shape)
        self.interface = {"shape": self.shape, "typestr": typestr, "strides": strides,
                          "data": (address, read_only), "version": 3, "mask": mask}

    @property
    def __cuda_array_interface__(self):
        return self.interface


class FakeShape:
    """Only a shape: for the size checks that run before any memory is touched."""

    def __init__(self, *shape):
        self.shape = shape


def test_extension_exposes_the_kernels(cuda):
    for name in KERNELS:
        assert hasattr(cuda, name), f"pyai._cuda has no {name}"


def test_attention_depth_limit_matches_the_kernels(cuda):
    assert cuda_row.ATTENTION_MAX_DEPTH == cuda.ATTENTION_MAX_DEPTH


def test_layer_norm_scratch_size_matches_the_kernels(cuda):
    assert cuda_row.LAYER_NORM_MAX_ROW_CHUNKS == cuda.LAYER_NORM_MAX_ROW_CHUNKS


def test_binary_crossentropy_scratch_size_matches_the_kernels(cuda):
    assert cuda_row.BINARY_CROSSENTROPY_MAX_BLOCKS == cuda.BINARY_CROSSENTROPY_MAX_BLOCKS


def test_bias_grad_scratch_size_matches_the_kernels(cuda):
    assert cuda_row.BIAS_GRAD_MAX_ROW_CHUNKS == cuda.BIAS_GRAD_MAX_ROW_CHUNKS


def test_runtime_status_is_none_or_a_sentence(status):
    assert status is None or (isinstance(status, str) and status.startswith(
        ("no CUDA device: ", "the CUDA context is unusable after an earlier error")))


def test_probe_reports_runtime_status(status):
    reason = dispatch.unavailable_reason("cuda")
    if status is None:
        assert reason is None
    else:
        assert status in reason


def test_probe_says_when_extension_is_missing(monkeypatch):
    # As if never built: no attribute on the package, and importing it raises ImportError.
    monkeypatch.delattr(importlib.import_module("pyai"), "_cuda", raising=False)
    monkeypatch.setitem(sys.modules, "pyai._cuda", None)
    reason = dispatch.unavailable_reason("cuda")
    assert reason.startswith("the CUDA extension pyai._cuda was not built")


ROW = tuple(cuda_row.ROW)


def test_activation_codes_of_the_cuda_sources_are_the_python_ones():
    """cuda_src/matmul.cuh spells the epilogue's codes in C++; they must be pyai's."""
    header = (Path(__file__).parent.parent / "cuda_src" / "matmul.cuh").read_text()
    body = re.search(r"enum Activation : int \{([^}]*)\}", header).group(1)
    codes = {name.strip(): int(code) for name, code in (item.split("=") for item in body.split(","))}
    expected = {("NONE" if name is None else name.upper()): code for name, code in ACTIVATIONS.items()}
    assert codes == expected


def required(function):
    return [name for name, parameter in inspect.signature(function).parameters.items()
            if parameter.default is inspect.Parameter.empty]


@pytest.mark.parametrize("op", ROW)
def test_row_takes_the_same_arguments_as_numba_cpu(op):
    """The cuda functions take a Call first (added by gpu_op), then the arguments pyai.ops passes
    numba-cpu's: its required ones. (Its optional extras, such as the convolutions'
    leaky_relu_output, are the fused paths pyai.nn's layers call on numba-cpu alone: kernel_ready.)"""
    ours, theirs = required(cuda_row.ROW[op]), required(numba_cpu.ROW[op])
    assert len([name for name in ours if name != "call"]) == len(theirs), f"{op}: {ours} vs {theirs}"


def test_takes_device_arrays():
    assert dispatch.takes_device_arrays("cuda")


@pytest.mark.parametrize("op", ROW)
def test_unusable_backend_raises_with_reason(without_gpu, status, op):
    with pytest.raises(dispatch.BackendUnavailableError, match="backend 'cuda' is not usable here") as error:
        dispatch.implementation(op, "cuda")
    assert status in str(error.value)


def test_public_op_on_unusable_backend_raises(without_gpu):
    with pytest.raises(dispatch.BackendUnavailableError, match="backend 'cuda'"):
        ops.matmul(np.ones((2, 3)), np.ones((3, 4)), backend="cuda")


def test_device_pointer_reads_the_address():
    array = FakeDeviceArray((3, 4), address=1234)
    assert cuda_row.device_pointer("x", array) == 1234
    assert cuda_row.device_pointer("ids", FakeDeviceArray((5,), "<i8"), np.int64) == 0xDEAD0000


def test_device_pointer_accepts_c_order_strides_and_unit_dimensions():
    assert cuda_row.device_pointer("x", FakeDeviceArray((3, 4), strides=(16, 4)))
    assert cuda_row.device_pointer("x", FakeDeviceArray((1, 4), strides=(999, 4)))


@pytest.mark.parametrize("typestr", ["<f8", "<f2", "<i4", "|b1"])
def test_device_pointer_refuses_other_dtypes(typestr):
    with pytest.raises(TypeError, match="x: expected a float32 GPU array"):
        cuda_row.device_pointer("x", FakeDeviceArray((3, 4), typestr))


def test_device_pointer_refuses_float_ids():
    with pytest.raises(TypeError, match="ids: expected a int64 GPU array, got float32"):
        cuda_row.device_pointer("ids", FakeDeviceArray((3,)), np.int64)


@pytest.mark.parametrize("strides", [(4, 12), (32, 4), (16, 8)], ids=["transposed", "row-padded", "every-other"])
def test_device_pointer_refuses_non_contiguous(strides):
    with pytest.raises(ValueError, match="x: expected a C-contiguous GPU array"):
        cuda_row.device_pointer("x", FakeDeviceArray((3, 4), strides=strides))


def test_device_pointer_refuses_masked_arrays():
    with pytest.raises(ValueError, match="x: masked GPU arrays are not supported"):
        cuda_row.device_pointer("x", FakeDeviceArray((3,), mask=FakeDeviceArray((3,), "|b1")))


def test_device_pointer_refuses_read_only_targets_of_in_place_updates():
    read_only = FakeDeviceArray((3,), read_only=True)
    assert cuda_row.device_pointer("param", read_only) == 0xDEAD0000
    with pytest.raises(ValueError, match="param: updated in place, but the GPU array is read-only"):
        cuda_row.device_pointer("param", read_only, writable=True)


def test_results_stay_on_the_gpu_when_any_argument_is_there():
    where = cuda_row.gpu_op(lambda call, *arguments: call.on_device)
    assert where(np.ones(3), FakeDeviceArray((3,)), None, 0.5)
    assert not where(np.ones(3), np.ones(3), None, 0.5)


def test_host_result_describes_its_buffer(cuda):
    result = cuda_row.HostResult(cuda.DeviceBuffer(0), (0, 5))
    interface = result.__cuda_array_interface__
    assert interface["shape"] == (0, 5) and interface["typestr"] == "<f4" and interface["version"] == 3
    assert result.copy_to_host().shape == (0, 5)


@pytest.mark.parametrize("a_shape,b_shape,transpose_a,transpose_b,message", [
    ((2**31, 4), (4, 4), False, False, "matmul M: 2147483648 is past"),
    ((4, 4), (4, 2**31), False, False, "matmul N: 2147483648 is past"),
    ((2**31, 4), (4, 2**31), True, True, "matmul K: 2147483648 is past"),
])
def test_matmul_refuses_sizes_past_the_kernels_limits(cuda, a_shape, b_shape, transpose_a, transpose_b, message):
    call = cuda_row.Call(on_device=False)
    with pytest.raises(ValueError, match=message):
        cuda_row.fused_matmul(call, FakeShape(*a_shape), FakeShape(*b_shape), transpose_a, transpose_b, None,
                              None, 0.0)


def test_attention_refuses_depth_past_the_kernels_limit():
    with pytest.raises(ValueError, match="q: depth D = 129; the cuda attention kernels take D <= 128"):
        cuda_row.attention_sizes(FakeShape(1, 1, 4, 129), FakeShape(1, 1, 4, 129))
    with pytest.raises(ValueError, match="B \\* H = 65536"):
        cuda_row.attention_sizes(FakeShape(2, 32768, 4, 8), FakeShape(2, 32768, 4, 8))
    assert cuda_row.attention_sizes(FakeShape(2, 3, 5, 128), FakeShape(2, 3, 7, 128)) == (6, 5, 7, 128)


def test_failed_cuda_call_raises_runtime_error_naming_it(without_gpu, cuda):
    with pytest.raises(RuntimeError, match=r"cudaMalloc\(.*\) failed at .*: "):
        cuda.DeviceBuffer(16)
    with pytest.raises(RuntimeError, match=r"cudaGetLastError\(\) failed at .*leaky_relu\.cu"):
        cuda.leaky_relu_forward(0, 0, 16, 0.2, 0)


@pytest.mark.parametrize("launch,source", [
    (lambda cuda: cuda.matmul_forward(0, 0, 0, 0, 4, 4, 4, False, True, 1, 0.2, 0), "matmul"),
    (lambda cuda: cuda.attention_forward(0, 0, 0, 0, 0, 1, 4, 4, 8, True, 0.5, 0), "attention_forward"),
    (lambda cuda: cuda.attention_backward(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 4, 4, 8, False, 0.5, 0),
     "attention_backward"),
    (lambda cuda: cuda.attention_forward_bf16(0, 0, 0, 0, 0, 1, 4, 4, 8, True, 0.5, 0), "attention_forward_bf16"),
    (lambda cuda: cuda.attention_backward_bf16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 4, 4, 8, False, 0.5, 0),
     "attention_backward_bf16"),
    (lambda cuda: cuda.layer_norm_forward(0, 0, 0, 0, 0, 0, 4, 8, 1e-5, 0), "layer_norm"),
    (lambda cuda: cuda.gelu_forward(0, 0, 16, 0), "gelu"),
    (lambda cuda: cuda.sigmoid_forward(0, 0, 16, 0), "sigmoid"),
    (lambda cuda: cuda.tanh_backward(0, 0, 0, 16, 0), "tanh"),
    (lambda cuda: cuda.binary_crossentropy_logits_forward(0, 0, 0, 0, 16, 0), "binary_crossentropy"),
    (lambda cuda: cuda.binary_crossentropy_logits_backward(0, 0, 0, 16, 0), "binary_crossentropy"),
    (lambda cuda: cuda.softmax_cross_entropy(0, 0, 0, 0, 4, 8, 0), "softmax_cross_entropy"),
    (lambda cuda: cuda.embedding_forward(0, 0, 0, 4, 8, 0), "embedding"),
    (lambda cuda: cuda.adam_update(0, 0, 0, 0, 16, 1e-3, 0.1, 0.001, 1e-7, 0), "adam"),
    (lambda cuda: cuda.conv2d_forward(0, 0, 0, 0, (4, 4, 2, 4, 4, 3, 3, 1, 1, 1, 1, 1, 3), 0, 0.0, 0, 1, 0), "im2col"),
    (lambda cuda: cuda.conv2d_backward(0, 0, 0, 16, 0, 0, (4, 4, 2, 4, 4, 1, 1, 1, 1, 0, 0, 1, 3), 0, 1, 0, 0, 0),
     "matmul"),   # dx of a pointwise convolution: the SGEMM alone
], ids=lambda value: value if isinstance(value, str) else "")
def test_failed_launch_raises_naming_the_call_and_file(without_gpu, cuda, launch, source):
    with pytest.raises(RuntimeError, match=rf"cuda\w*\(.*\) failed at .*{source}\.cu"):
        launch(cuda)


def test_device_buffer_round_trip(needs_gpu, cuda):
    host = np.arange(10, dtype=np.float32)
    buffer = cuda.DeviceBuffer(host.nbytes)
    buffer.copy_from_host(host)
    back = np.zeros_like(host)
    buffer.copy_to_host(back)
    assert buffer.nbytes == host.nbytes and buffer.ptr != 0
    np.testing.assert_array_equal(back, host)


def test_device_buffer_round_trips_bfloat16_bits(needs_gpu, cuda):
    host = np.arange(0, 65535, 997, dtype=np.uint16)
    buffer = cuda.DeviceBuffer(host.nbytes)
    buffer.copy_from_host(host)
    back = np.zeros_like(host)
    buffer.copy_to_host(back)
    np.testing.assert_array_equal(back, host)


@pytest.mark.parametrize("depth", [64, 128])
def test_bf16_attention_and_its_gradients_on_the_gpu(needs_gpu, depth):
    """The BF16 tensor-core kernels on a GPU (the emulated tests cannot run the device's own
    rounding or its real fragment layouts): within 1e-2 of the float64 attention of the bf16
    inputs, as under the emulation."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from pyai import use_backend
    from pyai.kernels.numba_cpu import attention_backward, attention_forward
    rng = np.random.default_rng(depth)
    q, do = (rng.standard_normal((1, 2, 300, depth)).astype(ml_dtypes.bfloat16) for _ in range(2))
    k, v = (rng.standard_normal((1, 2, 333, depth)).astype(ml_dtypes.bfloat16) for _ in range(2))
    with use_backend("cuda"):
        o, lse = ops.attention(q, k, v, causal=True, return_lse=True)
        gradients = ops.attention_grad(do, q, k, v, o, lse, causal=True)
    exact = [x.astype(np.float64) for x in (do, q, k, v)]
    expected_o, expected_lse = attention_forward.attention_forward_reference(*exact[1:], True, depth ** -0.5)
    expected = attention_backward.attention_backward_reference(*exact, True, depth ** -0.5)
    for name, out, ref, tol in zip(("o", "lse", "dq", "dk", "dv"), (o, lse, *gradients),
                                   (expected_o, expected_lse, *expected), (1e-2, 1e-5, 1e-2, 1e-2, 1e-2)):
        error = np.linalg.norm(out.astype(np.float64) - ref) / np.linalg.norm(ref)
        assert error <= tol, f"bf16 attention D={depth} {name}: relative error {error:.2e} > {tol}"


def test_activations_and_binary_crossentropy_on_the_gpu(needs_gpu):
    """sigmoid, tanh and the cross-entropy from logits with the device's expf, tanhf, exp and log1p
    (the emulated tests run the host's): outputs within 1e-5 of float64 (each within a few ulp),
    the loss within 1e-12 (double terms and sums), on 300 x 1001 elements (1024 blocks, a second
    grid-stride lap) with logits out to +-1e30."""
    from pyai import use_backend
    from pyai.kernels.numba_cpu import binary_crossentropy, sigmoid, tanh
    rng = np.random.default_rng(7)
    x, dy = 4 * rng.standard_normal((2, 300, 1001), dtype=np.float32)
    z = x * 10.0 ** rng.integers(0, 30, x.shape).astype(np.float32)
    t = rng.choice(np.array([0, 1, 0.3], np.float32), x.shape)
    with use_backend("cuda"):
        y_sigmoid, y_tanh = ops.sigmoid(x), ops.tanh(x)
        results = {"sigmoid": y_sigmoid, "sigmoid_grad": ops.sigmoid_grad(dy, y_sigmoid), "tanh": y_tanh,
                   "tanh_grad": ops.tanh_grad(dy, y_tanh), "dz": ops.binary_crossentropy_grad(z, t, from_logits=True)}
        loss = ops.binary_crossentropy(z, t, from_logits=True)
    dy64 = dy.astype(np.float64)
    expected = {"sigmoid": sigmoid.sigmoid_forward_reference(x),
                "sigmoid_grad": sigmoid.sigmoid_backward_reference(dy64, y_sigmoid.astype(np.float64)),
                "tanh": tanh.tanh_forward_reference(x),
                "tanh_grad": tanh.tanh_backward_reference(dy64, y_tanh.astype(np.float64)),
                "dz": binary_crossentropy.bce_logits_backward_reference(z, t)}
    for name, out in results.items():
        error = np.linalg.norm(out - expected[name]) / np.linalg.norm(expected[name])
        assert error <= 1e-5, f"{name}: relative error {error:.2e} > 1e-5"
    expected_loss = binary_crossentropy.bce_logits_forward_reference(z, t)
    assert abs(loss - expected_loss) <= 1e-12 * expected_loss, (loss, expected_loss)


def test_device_buffer_refuses_wrong_size_or_dtype(needs_gpu, cuda):
    buffer = cuda.DeviceBuffer(16)
    with pytest.raises(ValueError, match="the array holds 12 bytes but the buffer holds 16"):
        buffer.copy_from_host(np.zeros(3, np.float32))
    with pytest.raises(TypeError):
        buffer.copy_to_host(np.zeros(2, np.float64))
    with pytest.raises(TypeError):
        buffer.copy_to_host(np.zeros(8, np.float32)[::2])


# One float past a 16-byte boundary forces the scalar path; the lengths cover the float4 body,
# the scalar tail and n < 4. Exact equality: one multiply per element, as in numpy.
@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "misaligned"])
@pytest.mark.parametrize("n", [1, 3, 4, 5, 1027, 70001])
def test_kernels_on_raw_pointers(needs_gpu, cuda, offset, n):
    alpha = np.float32(0.2)
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n + offset, dtype=np.float32)
    x[offset] = 0.0  # the gradient at 0 is alpha * dy
    dy = rng.standard_normal(n + offset, dtype=np.float32)
    x_device, dy_device = cuda.DeviceBuffer(x.nbytes), cuda.DeviceBuffer(dy.nbytes)
    y_device, dx_device = cuda.DeviceBuffer(x.nbytes), cuda.DeviceBuffer(x.nbytes)
    x_device.copy_from_host(x)
    dy_device.copy_from_host(dy)
    shift = 4 * offset
    cuda.leaky_relu_forward(x_device.ptr + shift, y_device.ptr + shift, n, alpha, 0)
    cuda.leaky_relu_backward(dy_device.ptr + shift, x_device.ptr + shift, dx_device.ptr + shift, n, alpha, 0)
    y, dx = np.empty_like(x), np.empty_like(x)
    y_device.copy_to_host(y)
    dx_device.copy_to_host(dx)
    x, dy = x[offset:], dy[offset:]
    np.testing.assert_array_equal(y[offset:], np.where(x > 0, x, alpha * x), err_msg=f"y, n={n}")
    np.testing.assert_array_equal(dx[offset:], np.where(x > 0, dy, alpha * dy), err_msg=f"dx, n={n}")


@pytest.fixture
def numba_cuda(needs_gpu):
    from numba import cuda
    if not cuda.is_available():
        pytest.skip("numba.cuda finds no GPU")
    return cuda


def test_device_arrays_in_give_device_arrays_out(numba_cuda):
    # pyai.ops checks GPU arrays against the current backend (not a per-call backend=), so choose it.
    from pyai import device, use_backend
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((67, 33), dtype=np.float32), rng.standard_normal((33, 129), dtype=np.float32)
    with use_backend("cuda"):
        out = ops.matmul(numba_cuda.to_device(a), numba_cuda.to_device(b))
        y, mean, rstd = ops.layer_norm(numba_cuda.to_device(a), np.ones(33), np.zeros(33), return_stats=True)
        loss, dlogits = ops.softmax_cross_entropy(numba_cuda.to_device(a), np.arange(67) % 33)
    assert device.is_device_array(out) and out.shape == (67, 129)
    np.testing.assert_allclose(out.copy_to_host(), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)
    assert all(device.is_device_array(array) for array in (y, mean, rstd))
    assert type(loss) is float and device.is_device_array(dlogits)


def test_adam_updates_device_arrays_in_place(numba_cuda):
    from pyai.kernels.numba_cpu.adam import adam_update_reference
    rng = np.random.default_rng(1)
    param, grad, m, v = (rng.standard_normal(1001, dtype=np.float32) for _ in range(4))
    v = np.abs(v)
    on_gpu = [numba_cuda.to_device(array) for array in (param, grad, m, v)]
    cuda_row.adam_update(*on_gpu, 1e-3, 0.9, 0.999, 1e-7, 3)
    adam_update_reference(param, grad, m, v, 1e-3, 0.9, 0.999, 1e-7, 3)
    for name, expected, got in (("param", param, on_gpu[0]), ("m", m, on_gpu[2]), ("v", v, on_gpu[3])):
        np.testing.assert_allclose(got.copy_to_host(), expected, rtol=1e-6, atol=1e-7, err_msg=name)


# (x, w, stride, padding, transposed): the DCGAN's layers (pyai/models/dcgan.py) at batch 8, a
# 'valid' one of stride (1, 2) and a pointwise transpose (the SGEMM alone)
GPU_CONVS = [((8, 7, 7, 128), (4, 4, 64, 128), (2, 2), "same", True),
             ((8, 14, 14, 64), (4, 4, 32, 64), (2, 2), "same", True),
             ((8, 28, 28, 32), (3, 3, 32, 1), (1, 1), "same", False),
             ((8, 28, 28, 1), (3, 3, 1, 64), (2, 2), "same", False),
             ((8, 14, 14, 64), (3, 3, 64, 128), (2, 2), "same", False),
             ((4, 9, 11, 6), (2, 3, 6, 5), (1, 2), "valid", False),
             ((4, 9, 11, 6), (1, 1, 7, 6), (1, 1), "same", True)]


def conv_references(x, w, b, dy, stride, padding, transpose):
    """y (bias + leaky ReLU 0.2) and (dx, dw, db) in float64, from the numba-cpu kernels' references."""
    from pyai.kernels.numba_cpu import conv2d, conv2d_backward, conv2d_transpose, conv2d_transpose_backward
    if transpose:
        return (conv2d_transpose.conv2d_transpose_reference(x, w, b, stride, padding, "leaky_relu"),
                conv2d_transpose_backward.conv2d_transpose_backward_reference(dy, x, w, stride, padding))
    return (conv2d.conv2d_reference(x, w, b, stride, padding, "leaky_relu"),
            conv2d_backward.conv2d_backward_reference(dy, x, w, stride, padding))


def conv_inputs(rng, x_shape, w_shape, stride, padding, transpose):
    x, w = rng.standard_normal(x_shape, dtype=np.float32), rng.standard_normal(w_shape, dtype=np.float32)
    b = rng.standard_normal(w_shape[2 if transpose else 3], dtype=np.float32)
    forward = ops.conv2d_transpose if transpose else ops.conv2d
    y_shape = forward(x[:1], w, b, stride=stride, padding=padding, backend="numba-cpu").shape[1:]
    return x, w, b, rng.standard_normal((x_shape[0], *y_shape), dtype=np.float32)


@pytest.mark.parametrize("backend", ["cuda", "numba-cuda"])
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, transpose", GPU_CONVS)
def test_conv_ops_and_gradients_on_the_gpu(needs_gpu, backend, x_shape, w_shape, stride, padding, transpose):
    """Conv2D and Conv2DTranspose through pyai.ops on numpy arrays, with the device's FMA
    contraction and rounding (the emulated tests run the host's): y (bias + leaky ReLU fused), dx,
    dw and db within 1e-5 of float64 (float32 sums of at most ~1600 terms), and the gradients the
    same bits on a second run (no atomics). Three of the dw products (over 1568 and 6272 rows) are
    cut in depth on both backends, into 3 to 12 runs added in order."""
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    x, w, b, dy = conv_inputs(rng, x_shape, w_shape, stride, padding, transpose)
    forward, gradient = ((ops.conv2d_transpose, ops.conv2d_transpose_grad) if transpose
                         else (ops.conv2d, ops.conv2d_grad))
    options = {"stride": stride, "padding": padding, "backend": backend}
    y = forward(x, w, b, activation="leaky_relu", **options)
    gradients = gradient(dy, x, w, **options)
    expected_y, expected = conv_references(x, w, b, dy, stride, padding, transpose)
    name = f"{backend} {'conv2d_transpose' if transpose else 'conv2d'} x {x_shape} w {w_shape}"
    for tensor, out, ref in zip(("y", "dx", "dw", "db"), (y, *gradients), (expected_y, *expected)):
        error = np.linalg.norm(out - ref) / np.linalg.norm(ref)
        assert out.shape == ref.shape and error <= 1e-5, f"{name} {tensor}: relative error {error:.2e} > 1e-5"
    for tensor, first, again in zip(("dx", "dw", "db"), gradients, gradient(dy, x, w, **options)):
        np.testing.assert_array_equal(again, first, err_msg=f"{name} {tensor} on a second run")


@pytest.mark.parametrize("transpose", [False, True], ids=["conv2d", "conv2d_transpose"])
def test_conv_device_arrays_in_give_device_arrays_out(numba_cuda, transpose):
    from pyai import device, use_backend
    rng = np.random.default_rng(2)
    stride, padding = (2, 1), "same"
    x, w, b, dy = conv_inputs(rng, (3, 9, 8, 5), (3, 3, 6, 5) if transpose else (3, 3, 5, 6), stride, padding,
                              transpose)
    forward, gradient = ((ops.conv2d_transpose, ops.conv2d_transpose_grad) if transpose
                         else (ops.conv2d, ops.conv2d_grad))
    with use_backend("cuda"):
        y = forward(numba_cuda.to_device(x), w, b, stride=stride, padding=padding, activation="leaky_relu")
        gradients = gradient(numba_cuda.to_device(dy), numba_cuda.to_device(x), w, stride=stride, padding=padding)
        dx_alone = gradient(numba_cuda.to_device(dy), x, w, stride=stride, padding=padding, weight_gradient=False)
    assert all(device.is_device_array(array) for array in (y, *gradients, dx_alone[0]))
    assert dx_alone[1:] == (None, None)
    expected_y, expected = conv_references(x, w, b, dy, stride, padding, transpose)
    for tensor, out, ref in zip(("y", "dx", "dw", "db", "dx alone"), (y, *gradients, dx_alone[0]),
                                (expected_y, *expected, expected[0])):
        np.testing.assert_allclose(out.copy_to_host(), ref, rtol=1e-4, atol=1e-4, err_msg=tensor)
