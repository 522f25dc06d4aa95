"""bfloat16 operands of matmul and linear: computed on the cuda backend's bf16 tensor-core GEMM
(cuda_src/matmul_bf16.cu, run here under the host emulation of tests/cuda_emu/), refused with a
TypeError naming the argument on every other backend, and read from ml_dtypes numpy arrays,
other libraries' CPU tensors (DLPack) and GPU arrays (typestr "<V2").

Tolerances: against the float64 product of the same bf16 values, 1e-5 relative (the products of
bf16 values are exact in float32 and summed in float32, over at most ~100 terms here); against
the float32 operands before their rounding to bf16 (8 significant bits, each operand off by up to
2^-9 relative), 1e-2 relative: that difference is the rounding of the inputs, not the kernel's.
"""

import numpy as np
import pytest

import pyai
from conftest import assert_close
from cuda_emu import harness
from pyai import bfloat16, checks
from pyai._backends import cuda as cuda_row
from pyai.kernels.numba_cpu import matmul

ml_dtypes = pytest.importorskip("ml_dtypes")

TOL = 1e-5
ROUNDING_TOL = 1e-2


def normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def rounded(x):
    return x.astype(ml_dtypes.bfloat16)


@pytest.mark.parametrize("m, n, k, transpose_a, transpose_b", [(1, 1, 1, False, False), (37, 53, 29, True, False),
                                                                (70, 3, 65, False, True)])
def test_matmul_of_bfloat16_arrays_on_the_cuda_backend(kernels, rng, m, n, k, transpose_a, transpose_b):
    a, b = normal(rng, *((k, m) if transpose_a else (m, k))), normal(rng, *((n, k) if transpose_b else (k, n)))
    with harness.as_cuda_extension(kernels):
        c = pyai.ops.matmul(rounded(a), rounded(b), transpose_a=transpose_a, transpose_b=transpose_b)
    assert c.dtype == np.float32 and c.shape == (m, n)
    op = (lambda x, t: x.T if t else x)
    exact = matmul.matmul_reference(op(rounded(a).astype(np.float32), transpose_a),
                                    op(rounded(b).astype(np.float32), transpose_b))
    assert_close(f"bf16 matmul {m}x{n}x{k}", c, exact, TOL)
    assert_close(f"bf16 matmul {m}x{n}x{k} vs float32 operands", c,
                 matmul.matmul_reference(op(a, transpose_a), op(b, transpose_b)), ROUNDING_TOL)


@pytest.mark.parametrize("activation", ["gelu", "leaky_relu"])
def test_linear_of_bfloat16_arrays_fuses_the_float32_bias_and_activation(kernels, rng, activation):
    x, w, bias = rounded(normal(rng, 33, 40)), rounded(normal(rng, 40, 17)), normal(rng, 17)
    with harness.as_cuda_extension(kernels):
        y = pyai.ops.linear(x, w, bias, activation=activation, alpha=0.1)
        one_row = pyai.ops.linear(x[0], w, bias, activation=activation, alpha=0.1)
    expected = matmul.matmul_reference(x.astype(np.float32), w.astype(np.float32), bias, activation, 0.1)
    assert_close(f"bf16 linear + {activation}", y, expected, TOL)
    assert_close(f"bf16 linear + {activation}, one row", one_row, expected[0], TOL)


def test_bfloat16_torch_cpu_tensors_are_read_through_dlpack(kernels, rng):
    torch = pytest.importorskip("torch")
    a, b = normal(rng, 9, 31), normal(rng, 31, 5)
    a_tensor = torch.from_numpy(a.T.copy()).to(torch.bfloat16).T   # transposed strides: copied into C order
    b_tensor = torch.from_numpy(b).to(torch.bfloat16)
    with harness.as_cuda_extension(kernels):
        c = pyai.ops.matmul(a_tensor, b_tensor)
    exact = matmul.matmul_reference(a_tensor.float().numpy(), b_tensor.float().numpy())
    assert_close("bf16 matmul of torch tensors", c, exact, TOL)


@pytest.mark.parametrize("backend", ["numba-cpu", "numba-cuda"])
def test_other_backends_refuse_bfloat16_naming_the_argument(backend):
    a, b = np.ones((3, 4), ml_dtypes.bfloat16), np.ones((4, 2), ml_dtypes.bfloat16)
    with pytest.raises(TypeError, match=f"a: bfloat16 arrays are taken by the cuda backend only; backend '{backend}'"):
        pyai.ops.matmul(a, b, backend=backend)
    with pytest.raises(TypeError, match="x: bfloat16 arrays are taken by the cuda backend only"):
        pyai.ops.linear(a, b, backend=backend)


def test_mixed_precision_operands_are_refused_naming_the_float32_one():
    a, b = np.ones((3, 4), ml_dtypes.bfloat16), np.ones((4, 2), np.float32)
    with pytest.raises(TypeError, match="b: a is bfloat16, so b must be too"):
        pyai.ops.matmul(a, b, backend="cuda")
    with pytest.raises(TypeError, match="x: w is bfloat16, so x must be too"):
        pyai.ops.linear(b.T.copy(), a.T.copy(), backend="cuda")


class FakeGpuArray:
    """`__cuda_array_interface__` over a made-up address (never dereferenced)."""

    def __init__(self, shape, typestr, strides=None):
        self.shape, self.ndim = shape, len(shape)
        self.interface = {"shape": shape, "typestr": typestr, "strides": strides, "data": (0xBEEF00, False),
                          "version": 3}

    @property
    def __cuda_array_interface__(self):
        return self.interface


def test_bfloat16_gpu_arrays_pass_through_to_the_kernel_pointer():
    gpu = FakeGpuArray((3, 4), "<V2")
    assert bfloat16.is_bfloat16(gpu) and not bfloat16.is_bfloat16(FakeGpuArray((3, 4), "<f4"))
    a, b = checks.gemm_operands([("a", gpu, 2, None), ("b", FakeGpuArray((4, 5), "<V2"), 2, None)], "cuda")
    assert a is gpu
    assert cuda_row.device_pointer("a", gpu, bfloat16.dtype()) == 0xBEEF00
    with pytest.raises(TypeError, match="a: expected a float32 GPU array, got bfloat16"):
        cuda_row.device_pointer("a", gpu)
    with pytest.raises(ValueError, match="a: expected a C-contiguous GPU array"):
        checks.gemm_operands([("a", FakeGpuArray((3, 4), "<V2", (2, 6)), 2, None), ("b", gpu, 2, None)], "cuda")
