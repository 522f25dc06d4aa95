"""The numba-cuda backend: hand-written numba.cuda kernels (kernels/numba_cuda/<op>.py).

Arguments arrive validated by pyai.ops: numpy float32 C-contiguous arrays, or GPU arrays
already checked and wrapped as numba device arrays (pyai.checks lets GPU arrays through for
this backend). The rule for results: if any array argument is on the GPU, the results are numba
device arrays that stay there; if all are numpy arrays, the inputs are copied to the GPU and the
results back to numpy (explicit transfers, pyai.device). Scalars the ops return (the
cross-entropy losses) are Python floats either way. adam_update updates numpy param, m and v in
place by copying them back after the step. The device memory of an op on numpy arrays (copies,
outputs, temporaries) comes from a pool kept between calls (kernels/numba_cuda/buffers.py).

Without a GPU the backend runs under numba's CUDA simulator when NUMBA_ENABLE_CUDASIM=1 was set
before numba was imported (the test suite does this on machines with no NVIDIA driver): the
same kernels as Python threads, slow, with no warp intrinsics (the kernels take their
shared-memory path there) and float32 rounding not checked.
"""

import functools

import numpy as np

from pyai.device import copy_into, is_device_array, to_device, to_host
from pyai.dispatch import LazyRow

TAKES_DEVICE_ARRAYS = True

try:
    from numba import cuda
except ImportError as error:   # a numba without numba.cuda: the probe says so, the row stays empty
    import_error = error
else:
    import_error = None


def probe():
    if import_error is not None:
        return f"numba.cuda cannot be imported ({import_error})"
    if not cuda.is_available():
        return "no CUDA GPU or driver found by numba.cuda"
    return None


def on_device(kernel):
    """The op from a function of device arrays: numpy arguments are copied to the GPU and, if no
    argument was on the GPU already, the results copied back. The copies, the outputs and the
    temporaries are pooled device arrays (kernels/numba_cuda/buffers.py), given back when the op
    ends, except results that stay on the GPU: those are the caller's."""
    @functools.wraps(kernel)
    def op(*arguments):
        from pyai.kernels.numba_cuda import buffers   # here: importing pyai imports no kernel file
        on_host = not any(is_device_array(argument) for argument in arguments)
        with buffers.pooled_call() as call:
            results = kernel(*map(moved_to_device, arguments))
            if not on_host:
                return call.keep(results)
            return tuple(map(to_host, results)) if isinstance(results, tuple) else to_host(results)
    return op


def moved_to_device(argument):
    """A numpy array copied into a pooled device array; a GPU array as a numba device array
    without a copy; anything else (a flag, a number) as it is."""
    if isinstance(argument, np.ndarray):
        from pyai.kernels.numba_cuda import buffers
        return buffers.copy_to_device(argument)
    return to_device(argument) if is_device_array(argument) else argument


# param, grad, m, v: one shape; param, m and v updated in place, numpy ones by a copy back
def adam_update_of(kernel):
    def adam_update(param, grad, m, v, lr, beta_1, beta_2, epsilon, step):
        from pyai.kernels.numba_cuda import buffers
        with buffers.pooled_call():
            on_gpu = [moved_to_device(array) for array in (param, grad, m, v)]
            kernel(*on_gpu, lr, beta_1, beta_2, epsilon, step)
            for array, array_on_gpu in zip((param, m, v), (on_gpu[0], on_gpu[2], on_gpu[3])):
                if not is_device_array(array):
                    array_on_gpu.copy_to_host(array)
    return adam_update


# op: (its file in pyai.kernels.numba_cuda, the function there), imported on first use
KERNELS = {
    "matmul": ("matmul", "matmul"),
    "linear": ("matmul", "linear"),
    "leaky_relu": ("leaky_relu", "leaky_relu_forward"),
    "leaky_relu_grad": ("leaky_relu", "leaky_relu_backward"),
    "sigmoid": ("sigmoid", "sigmoid_forward"),
    "sigmoid_grad": ("sigmoid", "sigmoid_backward"),
    "tanh": ("tanh", "tanh_forward"),
    "tanh_grad": ("tanh", "tanh_backward"),
    "binary_crossentropy_logits": ("binary_crossentropy", "bce_logits_forward"),
    "binary_crossentropy_logits_grad": ("binary_crossentropy", "bce_logits_backward"),
    "gelu": ("gelu", "gelu_forward"),
    "gelu_grad": ("gelu", "gelu_backward"),
    "embedding": ("embedding", "embedding_forward"),
    "embedding_grad": ("embedding", "embedding_backward"),
    "adam_update": ("adam", "adam_update"),
    "layer_norm": ("layer_norm", "layer_norm_forward"),
    "layer_norm_grad": ("layer_norm", "layer_norm_backward"),
    "softmax_cross_entropy": ("softmax_cross_entropy", "softmax_cross_entropy"),
    "attention": ("attention_forward", "attention_forward"),
    "attention_grad": ("attention_backward", "attention_backward"),
    "conv2d": ("conv2d", "conv2d_forward"),
    "conv2d_grad": ("conv2d_backward", "conv2d_backward"),
    "conv2d_transpose": ("conv2d_transpose", "conv2d_transpose_forward"),
    "conv2d_transpose_grad": ("conv2d_transpose_backward", "conv2d_transpose_backward"),
}
# op(a) @ op(b) on the GPU; with `out` (a numpy array), copied into it
def product_of(kernel):
    def product(a, b, transpose_a, transpose_b, out=None):
        result = on_device(kernel)(a, b, transpose_a, transpose_b)
        return result if out is None else copy_into(out, result)
    return product


def wrapped(op, kernel):
    if op == "adam_update":
        return adam_update_of(kernel)
    return product_of(kernel) if op == "matmul" else on_device(kernel)


ROW = {} if import_error is not None else LazyRow("pyai.kernels.numba_cuda", KERNELS, wrapped)
