"""The numba-cpu backend: pyai's Numba kernels (`pyai.kernels`), always usable."""

from pyai.dispatch import register, register_probe
from pyai.kernels import (adam, binary_crossentropy, leaky_relu, matmul, mse, relu, sgd, sigmoid,
                          tanh)

BACKEND = "numba-cpu"


@register_probe(BACKEND)
def probe():
    return None


ROW = {
    "matmul": matmul.matmul,
    "linear": matmul.linear,
    "leaky_relu": leaky_relu.leaky_relu_forward,
    "leaky_relu_grad": leaky_relu.leaky_relu_backward,
    "relu": relu.relu_forward,
    "relu_grad": relu.relu_backward,
    "sigmoid": sigmoid.sigmoid_forward,
    "sigmoid_grad": sigmoid.sigmoid_backward,
    "tanh": tanh.tanh_forward,
    "tanh_grad": tanh.tanh_backward,
    "mse": mse.mse_forward,
    "mse_grad": mse.mse_backward,
    "binary_crossentropy": binary_crossentropy.bce_forward,
    "binary_crossentropy_grad": binary_crossentropy.bce_backward,
    "binary_crossentropy_logits": binary_crossentropy.bce_logits_forward,
    "binary_crossentropy_logits_grad": binary_crossentropy.bce_logits_backward,
    "sgd_update": sgd.sgd_update,
    "adam_update": adam.adam_update,
}
for op, function in ROW.items():
    register(op, BACKEND)(function)
