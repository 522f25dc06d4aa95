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

# Transformer ops.
from pyai.kernels import (attention_backward, attention_forward, embedding, gelu,  # noqa: E402
                          layer_norm, softmax, softmax_cross_entropy)

TRANSFORMER_ROW = {
    "attention": attention_forward.attention_forward,
    "attention_grad": attention_backward.attention_backward,
    "layer_norm": layer_norm.layer_norm_forward,
    "layer_norm_grad": layer_norm.layer_norm_backward,
    "gelu": gelu.gelu_forward,
    "gelu_grad": gelu.gelu_backward,
    "softmax": softmax.softmax_forward,
    "softmax_cross_entropy": softmax_cross_entropy.softmax_cross_entropy,
    "embedding": embedding.embedding_forward,
    "embedding_grad": embedding.embedding_backward,
}
ROW.update(TRANSFORMER_ROW)
for op, function in TRANSFORMER_ROW.items():
    register(op, BACKEND)(function)
