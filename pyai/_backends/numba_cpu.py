"""The numba-cpu backend: pyai's Numba kernels (`pyai.kernels.numba_cpu`), always usable
(but in a child forked after GNU OpenMP started, see `pyai.threads`).

The row is a `pyai.dispatch.LazyRow`: each kernel file is imported on the first use of one of its
ops, which compiles its kernels for this CPU (or loads them from Numba's cache), so a command
compiles only what it runs. `pyai.warmup` says so on stderr the first time, and compiles them all.
"""

from pyai import threads
from pyai.dispatch import LazyRow

TAKES_DEVICE_ARRAYS = False

# op: (its file in pyai.kernels.numba_cpu, the function there)
KERNELS = {
    "matmul": ("matmul", "matmul"),
    "linear": ("matmul", "linear"),
    "linear_with_gelu_derivative": ("matmul", "linear_with_gelu_derivative"),
    "matmul_times": ("matmul", "matmul_times"),
    "matmul_leaky_relu_grad": ("matmul", "matmul_leaky_relu_grad"),
    "leaky_relu": ("leaky_relu", "leaky_relu_forward"),
    "leaky_relu_grad": ("leaky_relu", "leaky_relu_backward"),
    "relu": ("relu", "relu_forward"),
    "relu_grad": ("relu", "relu_backward"),
    "sigmoid": ("sigmoid", "sigmoid_forward"),
    "sigmoid_grad": ("sigmoid", "sigmoid_backward"),
    "tanh": ("tanh", "tanh_forward"),
    "tanh_grad": ("tanh", "tanh_backward"),
    "mse": ("mse", "mse_forward"),
    "mse_grad": ("mse", "mse_backward"),
    "binary_crossentropy": ("binary_crossentropy", "bce_forward"),
    "binary_crossentropy_grad": ("binary_crossentropy", "bce_backward"),
    "binary_crossentropy_logits": ("binary_crossentropy", "bce_logits_forward"),
    "binary_crossentropy_logits_grad": ("binary_crossentropy", "bce_logits_backward"),
    "sgd_update": ("sgd", "sgd_update"),
    "adam_update": ("adam", "adam_update"),
    "dense_adam_update": ("dense_adam", "dense_adam_update"),
    "attention": ("attention_forward", "attention_forward"),
    "attention_grad": ("attention_backward", "attention_backward"),
    "attention_qkv": ("attention_forward", "attention_qkv_forward"),
    "attention_qkv_grad": ("attention_backward", "attention_qkv_backward"),
    "layer_norm": ("layer_norm", "layer_norm_forward"),
    "layer_norm_grad": ("layer_norm", "layer_norm_backward"),
    "layer_norm_grad_residual": ("layer_norm", "layer_norm_backward_residual"),
    "gelu": ("gelu", "gelu_forward"),
    "gelu_grad": ("gelu", "gelu_backward"),
    "gelu_with_derivative": ("gelu", "gelu_forward_with_derivative"),
    "bias_grad": ("bias_grad", "bias_grad"),
    "weight_and_bias_grad": ("matmul", "weight_and_bias_grad"),
    "softmax": ("softmax", "softmax_forward"),
    "softmax_cross_entropy": ("softmax_cross_entropy", "softmax_cross_entropy"),
    "embedding": ("embedding", "embedding_forward"),
    "embedding_grad": ("embedding", "embedding_backward"),
    "conv2d": ("conv2d", "conv2d_forward"),
    "conv2d_grad": ("conv2d_backward", "conv2d_backward"),
    "conv2d_transpose": ("conv2d_transpose", "conv2d_transpose_forward"),
    "conv2d_transpose_grad": ("conv2d_transpose_backward", "conv2d_transpose_backward"),
}


def probe():
    return threads.fork_problem()


def announce(file):
    from pyai import warmup
    return warmup.announce(file)


ROW = LazyRow("pyai.kernels.numba_cpu", KERNELS, lambda op, function: threads.serialize(function), announce)
