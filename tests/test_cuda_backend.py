"""The cuda backend's build and its behaviour on machines with and without a GPU.

On a machine without a GPU these check that the extension was built, imports, and says why it
cannot run; the backend then refuses with that reason. The numerical results of the ops are
checked by the backend-parametrized op tests; the tests here marked `needs_gpu` check only what
those cannot reach: DeviceBuffer and the kernels' misaligned-pointer path.
"""

import importlib
import shutil
import sys

import numpy as np
import pytest

from pyai import dispatch

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


def test_extension_exposes_the_kernels(cuda):
    for name in ("runtime_status", "leaky_relu_forward", "leaky_relu_backward", "DeviceBuffer"):
        assert hasattr(cuda, name), f"pyai._cuda has no {name}"


def test_runtime_status_is_none_or_a_sentence(status):
    assert status is None or (isinstance(status, str) and status.startswith("no CUDA device: "))


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


def test_backend_fills_its_row():
    assert {"leaky_relu", "leaky_relu_grad"} <= set(dispatch.ops_of("cuda"))


def test_unusable_backend_raises_with_reason(without_gpu, status):
    with pytest.raises(dispatch.BackendUnavailableError, match="backend 'cuda' is not usable here") as error:
        dispatch.implementation("leaky_relu", "cuda")
    assert status in str(error.value)


def test_failed_cuda_call_raises_runtime_error_naming_it(without_gpu, cuda):
    with pytest.raises(RuntimeError, match=r"cudaMalloc\(.*\) failed at .*: "):
        cuda.DeviceBuffer(16)
    with pytest.raises(RuntimeError, match=r"cudaGetLastError\(\) failed at .*leaky_relu\.cu"):
        cuda.leaky_relu_forward(0, 0, 16, 0.2, 0)


def test_device_buffer_round_trip(needs_gpu, cuda):
    host = np.arange(10, dtype=np.float32)
    buffer = cuda.DeviceBuffer(host.nbytes)
    buffer.copy_from_host(host)
    back = np.zeros_like(host)
    buffer.copy_to_host(back)
    assert buffer.nbytes == host.nbytes and buffer.ptr != 0
    np.testing.assert_array_equal(back, host)


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
