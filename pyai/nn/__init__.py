"""Layers with an explicit forward and backward, built on `pyai.ops`.

    pyai/nn/layers.py       Layer, Dense, LeakyReLU, ReLU, Sigmoid, Tanh, Sequential
    pyai/nn/conv.py         Conv2D, Conv2DTranspose, Reshape, Flatten
    pyai/nn/transformer.py  Embedding, LayerNorm, GELU, MultiHeadAttention, TransformerBlock,
                            and Composite, the base of layers made of named child layers
    pyai/nn/flat.py         FlatParameters: a model's parameters and gradients in one buffer each

What every layer provides (forward, backward, parameters, gradients) is written at the top of
pyai/nn/layers.py.
"""

from pyai.nn.flat import FlatParameters
from pyai.nn.layers import (Dense, Layer, LeakyReLU, ReLU, Sequential, Sigmoid, Tanh,
                            check_backward)
from pyai.nn.conv import Conv2D, Conv2DTranspose, Flatten, Reshape
from pyai.nn.transformer import (GELU, Composite, Embedding, LayerNorm, MultiHeadAttention,
                                 TransformerBlock, merge_heads, split_heads)

__all__ = ["FlatParameters", "Dense", "Layer", "LeakyReLU", "ReLU", "Sequential", "Sigmoid", "Tanh",
           "check_backward", "GELU", "Composite", "Embedding", "LayerNorm", "MultiHeadAttention",
           "TransformerBlock", "merge_heads", "split_heads", "Conv2D", "Conv2DTranspose", "Flatten", "Reshape"]
