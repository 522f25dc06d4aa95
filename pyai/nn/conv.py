"""The convolutional layers: Conv2D, Conv2DTranspose, and Reshape and Flatten to go between them
and Dense layers. Images are NHWC (batch, height, width, channels), as in Keras.

Each layer provides forward, backward, parameters and gradients as written at the top of
pyai/nn/layers.py; the conv layers also have input_gradient(dy), dx alone, for backpropagating
through a network whose own gradients are not wanted (a GAN's discriminator, for the generator).
"""

import math

import numpy as np

from pyai import dispatch, ops
from pyai.checks import positive_int, real_number
from pyai.nn.layers import (OUTPUT_GRADIENTS, Layer, below_gradient, check_backward, kernel_ready, output_as,
                            rows_start)


def pair(name, value):
    """(a, b) from an int or a pair of positive ints."""
    values = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != 2:
        raise ValueError(f"{name}: expected a positive integer or a pair of them, got {value!r}")
    return tuple(positive_int(name, each) for each in values)


class ConvLayer(Layer):
    """What Conv2D and Conv2DTranspose share: y = activation(op(x, weight) + bias), one fused op
    call forward (two for gelu, which keeps its input), one gradient call backward."""

    forward_op = gradient_op = None
    PARAMETERS = ("weight", "bias")
    OPTIONAL_INPUT_GRADIENT = True
    ROW_WISE, SAVED_ROWS = True, ("x", "pre", "y")   # an image at a time
    TAKES_BELOW = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding="same",
                 activation=None, alpha=0.2, rng=None):
        if activation not in ops.ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ops.ACTIVATIONS}, got {activation!r}")
        if padding not in ("same", "valid"):
            raise ValueError(f"padding: expected 'same' or 'valid', got {padding!r}")
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        self.kernel_size = pair("kernel_size", kernel_size)
        self.stride = pair("stride", stride)
        self.padding = padding
        self.activation = activation
        self.alpha = real_number("alpha", alpha, low=0.0)
        rng = np.random.default_rng() if rng is None else rng
        # Keras's glorot-uniform: fans of kh*kw*in and kh*kw*out, whichever way the kernel is laid out
        area = self.kernel_size[0] * self.kernel_size[1]
        limit = math.sqrt(6.0 / (area * (self.in_channels + self.out_channels)))
        self.weight = rng.uniform(-limit, limit, self.weight_shape()).astype(np.float32)
        self.bias = np.zeros(self.out_channels, dtype=np.float32)
        self.grad_weight = self.grad_bias = None
        self.x = self.pre = self.y = None

    def __repr__(self):
        return (f"{type(self).__name__}({self.in_channels}, {self.out_channels}, {self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}, activation={self.activation!r})")

    def options(self):
        return {"stride": self.stride, "padding": self.padding}

    # x is (batch, H, W, in_channels) -> y (batch, OH, OW, out_channels)
    def forward(self, x):
        shape = np.shape(x)
        if len(shape) != 4 or shape[3] != self.in_channels:
            raise ValueError(f"{self!r}: expected x of shape (batch, height, width, {self.in_channels}), "
                             f"got {shape}")
        forward = getattr(ops, self.forward_op)
        if self.activation == "gelu":
            self.pre = forward(x, self.weight, self.bias, **self.options())
            y = ops.gelu(self.pre)
        elif self.kernel_takes(x):
            y = dispatch.implementation(self.forward_op)(x, self.weight, self.bias, self.stride, self.padding,
                                                         self.activation, self.alpha)
        else:
            y = forward(x, self.weight, self.bias, activation=self.activation, alpha=self.alpha,
                        **self.options())
        self.x, self.y = x, y
        return y

    def kernel_takes(self, x):
        """Whether the backend's kernel may take x (its shape checked by forward), the weight and
        the bias as they are, skipping the op's checks (~6 us a forward, ~7 a gradient, where a
        DCGAN step makes a dozen such calls): the layer's own stride, padding and activation
        were checked when it was made, so what is left is what the op would convert or refuse:
        arrays not kernel_ready, a weight or bias of another shape, a kernel that does not fit."""
        return (np.shape(self.weight) == self.weight_shape() and np.shape(self.bias) == (self.out_channels,)
                and kernel_ready(x, self.weight, self.bias) and self.fits(x.shape))

    def fits(self, shape):
        return True

    def activation_gradient(self, dy):
        if self.activation == "gelu":
            return ops.gelu_grad(dy, self.pre)
        return OUTPUT_GRADIENTS[self.activation](dy, self.y, self.alpha)

    # dy is (batch, OH, OW, out_channels) -> dx (batch, H, W, in_channels), or None with
    # input_gradient=False; fills grad_weight and grad_bias. below, pre_activation: as Dense's
    # (pyai.nn.layers.gradient_below)
    def backward(self, dy, input_gradient=True, below=None, pre_activation=False):
        dy = check_backward(self, self.y, dy)
        dpre = dy if pre_activation else self.activation_gradient(dy)
        dx, grad_weight, grad_bias = self.gradients_from(dpre, below, input_gradient, True)
        self.grad_weight = self.keep_gradient("weight", grad_weight)
        self.grad_bias = self.keep_gradient("bias", grad_bias)
        return dx

    def input_gradient(self, dy, below=None, pre_activation=False):
        """dx from dy, leaving the layer's own gradients as they are; below, pre_activation: as
        Dense.input_gradient's."""
        dy = check_backward(self, self.y, dy)
        return self.gradients_from(dy if pre_activation else self.activation_gradient(dy), below, True, False)[0]

    def gradients_from(self, dpre, below, input_gradient, weight_gradient):
        """(dx, dw, db) from d loss / d pre-activation, by the layer's gradient op; with `below`,
        dx as below's d loss / d pre-activation: on numba-cpu made so in dx's own pass (its kernel
        called with below's output, the op's checks done by forward and check_backward), else
        by a pass after."""
        below_y = None if below is None or not input_gradient else output_as(below, self.x.shape)
        fused = () if below_y is None else (below_y, below.alpha)
        if (np.shape(self.weight) == self.weight_shape() and kernel_ready(dpre, self.x, self.weight, *fused[:1])
                and self.fits(self.x.shape)):
            dx, grad_weight, grad_bias = dispatch.implementation(self.gradient_op)(
                dpre, self.x, self.weight, self.stride, self.padding, input_gradient, weight_gradient, *fused)
        else:
            fused = ()
            dx, grad_weight, grad_bias = getattr(ops, self.gradient_op)(
                dpre, self.x, self.weight, input_gradient=input_gradient, weight_gradient=weight_gradient,
                **self.options())
        if below is not None and dx is not None and not fused:
            dx = below_gradient(below, dx)
        return dx, grad_weight, grad_bias


class Conv2D(ConvLayer):
    """y = activation(conv2d(x, weight) + bias); weight is (kh, kw, in, out) like a Keras Conv2D
    kernel, output sizes as Keras's ('same': ceil(H / stride); 'valid': (H - kh) // stride + 1)."""

    forward_op, gradient_op = "conv2d", "conv2d_grad"

    def weight_shape(self):
        return (*self.kernel_size, self.in_channels, self.out_channels)

    def fits(self, shape):
        """Whether the kernel fits images of this (batch, height, width, channels) shape."""
        return self.padding == "same" or (self.kernel_size[0] <= shape[1] and self.kernel_size[1] <= shape[2])


class Conv2DTranspose(ConvLayer):
    """y = activation(conv2d_transpose(x, weight) + bias); weight is (kh, kw, out, in) like a Keras
    Conv2DTranspose kernel ('same': H * stride; 'valid': H * stride + max(kh - stride, 0))."""

    forward_op, gradient_op = "conv2d_transpose", "conv2d_transpose_grad"

    def weight_shape(self):
        return (*self.kernel_size, self.out_channels, self.in_channels)


class Reshape(Layer):
    """(batch, ...) -> (batch, *shape), like Keras's Reshape; backward gives dy the input's shape."""

    ROW_WISE = SHAPE_ONLY = True

    def __init__(self, shape):
        self.shape = tuple(positive_int("shape", size) for size in shape)
        self.input_shape = None

    def __repr__(self):
        return f"Reshape({self.shape})"

    def forward(self, x):
        x = np.asarray(x)
        if x.ndim < 1 or math.prod(x.shape[1:]) != math.prod(self.shape):
            raise ValueError(f"{self!r}: expected x of shape (batch, ...) with {math.prod(self.shape)} "
                             f"values per example, got {x.shape}")
        self.input_shape = x.shape
        return x.reshape(x.shape[0], *self.shape)

    def backward(self, dy):
        if self.input_shape is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        expected = (self.input_shape[0], *self.shape)
        if np.shape(dy) != expected:
            raise ValueError(f"{self!r}: dy must have the forward output's shape {expected}, got {np.shape(dy)}")
        return np.asarray(dy).reshape(self.input_shape)

    def keep_rows(self, start):
        if self.input_shape is not None:
            start = rows_start(start, self.input_shape[0])
            self.input_shape = (self.input_shape[0] - start, *self.input_shape[1:])


class Flatten(Reshape):
    """(batch, ...) -> (batch, the rest in one axis), in C order like Keras's Flatten (channels last)."""

    def __init__(self):
        self.shape = None
        self.input_shape = None

    def __repr__(self):
        return "Flatten()"

    def forward(self, x):
        x = np.asarray(x)
        if x.ndim < 2:
            raise ValueError(f"{self!r}: expected x of shape (batch, ...), got {x.shape}")
        self.shape = (math.prod(x.shape[1:]),)
        return super().forward(x)
