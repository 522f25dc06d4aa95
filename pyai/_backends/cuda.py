"""The cuda backend: hand-written CUDA C++ kernels (cuda_src/*.cu), built into pyai._cuda.

Each op copies its numpy inputs to the GPU, launches the kernel, and copies the result back on
the default stream; that copy waits for the kernel, so the result is complete when the op
returns. The inputs arrive already validated by pyai.ops: C-contiguous float32 numpy arrays.

pyai._cuda exists only when a CUDA compiler was found at install time, so it is imported inside
the functions, never at the top of this module.
"""

import numpy as np

from pyai.dispatch import register, register_probe


@register_probe("cuda")
def probe():
    try:
        from pyai import _cuda
    except ImportError as error:
        return f"the CUDA extension pyai._cuda was not built (no CUDA compiler at install time?): {error}"
    return _cuda.runtime_status()


def _to_device(array):
    from pyai import _cuda
    buffer = _cuda.DeviceBuffer(array.nbytes)
    buffer.copy_from_host(array)
    return buffer


def _to_host(buffer, like):
    array = np.empty_like(like)
    buffer.copy_to_host(array)
    return array


# x is any shape: y = x > 0 ? x : alpha * x
@register("leaky_relu", "cuda")
def leaky_relu(x, alpha):
    from pyai import _cuda
    x_device = _to_device(x)
    y_device = _cuda.DeviceBuffer(x.nbytes)
    _cuda.leaky_relu_forward(x_device.ptr, y_device.ptr, x.size, alpha, 0)
    return _to_host(y_device, x)


# dy, x are the same shape: dx = x > 0 ? dy : alpha * dy (alpha * dy at x == 0, as in TensorFlow)
@register("leaky_relu_grad", "cuda")
def leaky_relu_grad(dy, x, alpha):
    from pyai import _cuda
    dy_device = _to_device(dy)
    x_device = _to_device(x)
    dx_device = _cuda.DeviceBuffer(x.nbytes)
    _cuda.leaky_relu_backward(dy_device.ptr, x_device.ptr, dx_device.ptr, x.size, alpha, 0)
    return _to_host(dx_device, x)
