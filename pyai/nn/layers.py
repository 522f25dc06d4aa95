"""The basic layers: Dense, the activations and Sequential, with an explicit forward and backward.

Every layer has `forward(x) -> y`, which saves what backward needs, and `backward(dy) -> dx`,
which also fills the gradients of the layer's parameters. Parameters and their gradients are
exposed the same way by every layer, for the optimizers (`pyai.optim`) and checkpoints (`pyai.checkpoint`):

    layer.parameters() -> [(name, array), ...]
    layer.gradients()  -> [(name, array or None), ...]   same names, same order; None before backward

Optimizers update the parameter arrays in place, so a layer keeps the same arrays all its life.
A layer names the attributes that hold its parameters in PARAMETERS; the gradient of "weight" is
in "grad_weight". A model gathers them into one flat buffer (`pyai.nn.flat`): its parameters
become views into it, and backward writes each gradient into its view of a flat gradient buffer.
Layers leave argument checks to `pyai.ops`, which name the argument at fault; a layer checks only
what no op can see, such as an input's features against the layer's own size. Dense, once its
shapes are checked, calls the numba-cpu products itself where the arrays are already what the
kernels take (`kernel_ready`): anything else goes through the ops and their checks.
A row-wise layer (ROW_WISE: its forward treats each example apart) names where forward saves
arrays for backward (SAVED_ROWS), so `keep_rows(start)` can make backward that of the examples
from `start` on: a GAN's generator makes both of a step's batches in one forward.
"""

import math
import numbers
from types import MappingProxyType

import numpy as np

from pyai import dispatch, ops
from pyai.checks import as_float32, positive_int, real_number


class Layer:
    """A layer without parameters; subclasses write forward and backward."""

    PARAMETERS = ()                            # the attributes that hold parameters
    OPTIONAL_INPUT_GRADIENT = False            # backward(dy, input_gradient=False) skips dx
    gradient_views = MappingProxyType({})      # attribute -> its gradient's view of a flat buffer
    ROW_WISE = False                           # forward treats each example (a row of the batch) apart
    SAVED_ROWS = ()                            # where forward saves arrays for backward, an example a row
    TAKES_BELOW = False                        # backward and input_gradient take `below` (gradient_below)
    SHAPE_ONLY = False                         # forward only reshapes x (Reshape, Flatten)

    def __call__(self, x):
        return self.forward(x)

    def slots(self):
        """(name, layer, attribute) for every parameter, in parameters()'s order."""
        return [(name, self, name) for name in self.PARAMETERS]

    def parameters(self):
        return [(name, getattr(layer, attribute)) for name, layer, attribute in self.slots()]

    def gradients(self):
        return [(name, getattr(layer, "grad_" + attribute)) for name, layer, attribute in self.slots()]

    def row_wise(self):
        return self.ROW_WISE

    def keep_rows(self, start):
        """Of what forward saved for backward, keep the examples from `start` on, as if forward had
        been given only those: one forward of two batches, then backward of the second (the GAN's
        generator: pyai.models.gan). Row-wise layers only: there the floats of each example do
        not depend on the others."""
        if not self.row_wise():
            raise NotImplementedError(f"{self!r}: not row-wise (ROW_WISE): its forward is not known to treat "
                                      f"each example apart")
        saved = [(attribute, getattr(self, attribute)) for attribute in self.SAVED_ROWS]
        saved = [(attribute, array) for attribute, array in saved if array is not None]
        start = rows_start(start, len(saved[0][1]) if saved else None)
        for attribute, array in saved:
            setattr(self, attribute, array[start:])

    def keep_gradient(self, attribute, gradient):
        """What backward stores as the gradient of `attribute`: `gradient` itself, or, in a model
        with a flat gradient buffer, its view of that buffer, with `gradient` written into it."""
        view = self.gradient_views.get(attribute)
        if view is None:
            return np.ascontiguousarray(gradient)
        view[...] = gradient
        return view


def rows_start(start, rows=None):
    """keep_rows's start as an int, or a clear error: an integer from 0 to `rows` (the examples
    forward saw, where known)."""
    if isinstance(start, bool) or not isinstance(start, numbers.Integral) or start < 0 or (
            rows is not None and start > rows):
        limit = "" if rows is None else f" and at most {rows}, the examples forward saw"
        raise ValueError(f"start: expected an integer >= 0{limit}, got {start!r}")
    return int(start)


def shape_of(x):
    """np.shape(x), its attribute read directly from a numpy array: a GAN step asks a hundred
    times, and np.shape is a Python function of numpy's."""
    return x.shape if type(x) is np.ndarray else np.shape(x)


def check_backward(layer, saved, dy):
    """dy as float32 with the shape of the forward output (that of `saved`), or a clear error."""
    if saved is None:
        raise RuntimeError(f"{layer!r}: backward called before forward")
    dy = as_float32("dy", dy)
    shape = shape_of(saved)
    if dy.shape != shape:
        raise ValueError(f"{layer!r}: dy must have the forward output's shape {shape}, got {dy.shape}")
    return dy


# d(pre-activation) from dy and the forward OUTPUT y. For leaky_relu (alpha >= 0) and relu the
# output has the sign of the input, so the ops' *_grad(dy, x) give the same answer from y.
# gelu is not here: its output does not determine its input, so Dense keeps gelu's input instead.
OUTPUT_GRADIENTS = {
    None: lambda dy, y, alpha: dy,
    "leaky_relu": lambda dy, y, alpha: ops.leaky_relu_grad(dy, y, alpha),
    "relu": lambda dy, y, alpha: ops.relu_grad(dy, y),
    "sigmoid": lambda dy, y, alpha: ops.sigmoid_grad(dy, y),
    "tanh": lambda dy, y, alpha: ops.tanh_grad(dy, y),
}


# d loss / d pre-activation from dy = d loss / d y, both (batch, out).
def activation_gradient(dy, y, pre, activation, alpha, shapes_fit=False):
    """shapes_fit: the layer's parameters have its shapes; then, where dy and the saved array (y,
    or gelu's pre) have one shape and are kernel_ready, the backend's kernel runs without the
    op's checks (a leaky ReLU gradient of 64 x 256: 12 us through ops, 5 by the kernel)."""
    saved = pre if activation == "gelu" else y
    if activation is not None and shapes_fit and shape_of(dy) == shape_of(saved) and kernel_ready(dy, saved):
        kernel = dispatch.implementation(activation + "_grad")
        return kernel(dy, saved, alpha) if activation == "leaky_relu" else kernel(dy, saved)
    return ops.gelu_grad(dy, pre) if activation == "gelu" else OUTPUT_GRADIENTS[activation](dy, y, alpha)


def kernel_ready(*arrays):
    """Whether the backend is numba-cpu and every array is what its kernels take as it is: a
    C-contiguous float32 numpy array with no empty dimension. A caller that knows the shapes fit
    (Dense, which checks them) then calls the backend's linear and matmul itself: the ops' checks
    cost more than a small product does (ops.linear 33 us a call where the kernel takes 12 on an
    AMD EPYC Zen 1; a GAN step makes 30 such calls)."""
    if dispatch.get_backend() != "numba-cpu":
        return False
    for array in arrays:   # a loop, not all() of a generator: this runs a few dozen times a GAN step
        if not (type(array) is np.ndarray and array.dtype == np.float32 and array.flags.c_contiguous and array.size):
            return False
    return True


def linear(x, weight, bias, activation=None, alpha=0.2, shapes_fit=False):
    """ops.linear, or the backend's own where shapes_fit and the arrays are kernel_ready."""
    if shapes_fit and kernel_ready(x, weight, *(() if bias is None else (bias,))):
        return dispatch.implementation("linear")(x, weight, bias, activation, alpha)
    return ops.linear(x, weight, bias, activation=activation, alpha=alpha)


def matmul(a, b, transpose_a=False, transpose_b=False, out=None, shapes_fit=False):
    """ops.matmul, or the backend's own where shapes_fit and the arrays are kernel_ready (and
    `out`, a gradient's view of a flat buffer, has the product's shape)."""
    if shapes_fit and kernel_ready(a, b, *(() if out is None else (out,))) and (
            out is None or out.shape == (a.shape[1 if transpose_a else 0], b.shape[0 if transpose_b else 1])):
        return dispatch.implementation("matmul")(a, b, transpose_a, transpose_b, out)
    return ops.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b, out=out)


# x is (batch, in), weight (in, out), bias (out,) or None -> y (batch, out), and the
# pre-activation where the activation's gradient needs it (gelu), else None. shapes_fit: the
# caller has checked that they do (see kernel_ready).
def linear_forward(x, weight, bias, activation, alpha, shapes_fit=False):
    if activation == "gelu":
        pre = linear(x, weight, bias, shapes_fit=shapes_fit)
        return ops.gelu(pre), pre
    return linear(x, weight, bias, activation, alpha, shapes_fit), None


def linear_with_gelu_derivative(x, weight, bias, shapes_fit=False):
    """(gelu(x @ weight + bias), its derivative) by ops.linear's return_derivative, or by the
    backend's own kernel where shapes_fit and the arrays are kernel_ready."""
    if shapes_fit and kernel_ready(x, weight, bias) and dispatch.implements("linear_with_gelu_derivative"):
        return dispatch.implementation("linear_with_gelu_derivative")(x, weight, bias)
    return ops.linear(x, weight, bias, activation="gelu", return_derivative=True)


def bias_gradient(dy, out=None):
    """dy (rows, C) summed over its rows, into `out` when given: by the backend's bias_grad
    where it has one (its kernel itself where dy is kernel_ready), else numpy's."""
    if not dispatch.implements("bias_grad"):
        return dy.sum(axis=0, dtype=np.float32, out=out)
    sums = dispatch.implementation("bias_grad")(dy) if kernel_ready(dy) and dy.ndim else ops.bias_grad(dy)
    if out is None:
        return sums
    out[...] = sums
    return out


def back_to_back(weight, bias):
    """One (in + 1, out) array over `weight` (in, out) and then `bias` (out,) where bias follows
    weight in one buffer (a flat gradient buffer's views: pyai.nn.flat lays a layer's bias right
    after its weight), else None."""
    if weight is None or bias is None or weight.ndim != 2 or bias.shape != weight.shape[1:] or weight.base is None:
        return None
    base, start = weight.base, weight.__array_interface__["data"][0]
    if bias.base is not base or bias.__array_interface__["data"][0] != start + weight.nbytes:
        return None
    return np.ndarray((weight.shape[0] + 1, weight.shape[1]), weight.dtype, base,
                      start - base.__array_interface__["data"][0])


def weight_and_bias_gradient(x, dy, weight_out=None, bias_out=None, shapes_fit=False):
    """(x^T dy, dy summed over its rows), into weight_out and bias_out when given: one product
    where the backend has weight_and_bias_grad and there are no outs or they lie back to back
    (back_to_back), so that dy is read once (its kernel itself where shapes_fit and the arrays
    are kernel_ready); else a product and bias_gradient."""
    given = weight_out is not None or bias_out is not None
    both = back_to_back(weight_out, bias_out) if given else None
    if not dispatch.implements("weight_and_bias_grad") or (given and both is None):
        return (matmul(x, dy, transpose_a=True, out=weight_out, shapes_fit=shapes_fit),
                bias_gradient(dy, out=bias_out))
    if shapes_fit and kernel_ready(x, dy, *(() if both is None else (both,))):
        grads = dispatch.implementation("weight_and_bias_grad")(x, dy, both)
        dweight, dbias = grads[:-1], grads[-1]
    else:
        dweight, dbias = ops.weight_and_bias_grad(x, dy, out=both)
    return (weight_out, bias_out) if given else (dweight, dbias)


# dy = d loss / d y (batch, out) -> dx (batch, in), or None with input_gradient=False, dweight
# (in, out) and dbias (out,), from the forward's x, y and pre-activation (gelu only).
def linear_backward(dy, x, weight, y, pre, activation, alpha, input_gradient=True,
                    weight_out=None, bias_out=None, shapes_fit=False):
    """(dx, dweight, dbias); the weight and bias gradients go into weight_out and bias_out when
    given (views of a flat gradient buffer), else into new arrays."""
    dpre = activation_gradient(dy, y, pre, activation, alpha, shapes_fit)
    dweight, dbias = weight_and_bias_gradient(x, dpre, weight_out, bias_out, shapes_fit)
    dx = matmul(dpre, weight, transpose_b=True, shapes_fit=shapes_fit) if input_gradient else None
    return dx, dweight, dbias


class Dense(Layer):
    """y = activation(x @ weight + bias), one fused `ops.linear` call.

    x is (batch, in_features), weight is (in_features, out_features) like a Keras kernel, bias is
    (out_features,). Weights start glorot-uniform and the bias at zero, as in Keras. activation is
    one of `pyai.ops.ACTIVATIONS`. Backward finds the activation's gradient from the saved output,
    except for gelu: there forward makes two calls, ops.linear then ops.gelu, to keep the
    pre-activation that gelu's gradient needs.
    """

    PARAMETERS = ("weight", "bias")
    OPTIONAL_INPUT_GRADIENT = True
    ROW_WISE, SAVED_ROWS = True, ("x", "pre", "y")
    TAKES_BELOW = True
    fused_update = None   # set by an optimizer for one backward (pyai.optim.Adam.backward_and_step): a
                          # function of (x, d pre-activation) that makes this layer's weight and bias
                          # gradients, steps them, and returns them

    def __init__(self, in_features, out_features, activation=None, alpha=0.2, rng=None):
        if activation not in ops.ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ops.ACTIVATIONS}, got {activation!r}")
        self.in_features = positive_int("in_features", in_features)
        self.out_features = positive_int("out_features", out_features)
        self.activation = activation
        self.alpha = real_number("alpha", alpha, low=0.0)
        rng = np.random.default_rng() if rng is None else rng
        limit = math.sqrt(6.0 / (self.in_features + self.out_features))
        self.weight = rng.uniform(-limit, limit, (self.in_features, self.out_features)).astype(np.float32)
        self.bias = np.zeros(self.out_features, dtype=np.float32)
        self.grad_weight = None
        self.grad_bias = None
        self.x = self.pre = self.y = None

    def __repr__(self):
        return f"Dense({self.in_features}, {self.out_features}, activation={self.activation!r})"

    # x is (batch, in_features) -> y is (batch, out_features). ops.linear checks x, but it also
    # takes a 1-d x, and it would blame a wrong feature count on the weight.
    def forward(self, x):
        shape = shape_of(x)
        if len(shape) != 2 or shape[1] != self.in_features:
            raise ValueError(f"{self!r}: expected x of shape (batch, {self.in_features}), got {shape}")
        y, self.pre = linear_forward(x, self.weight, self.bias, self.activation, self.alpha, self.shapes_fit())
        self.x, self.y = x, y
        return y

    def forward_gelu(self, x):
        """(gelu(forward(x)), its derivative), for a Dense of no activation with a GELU after it
        (a TransformerBlock's MLP), from one product that never stores forward(x) itself
        (linear_with_gelu_derivative). Backward then takes dy times that derivative, d loss / d
        forward(x); it reads only the shape of y, which here is gelu's output."""
        if self.activation is not None:
            raise ValueError(f"{self!r}: forward_gelu is for a Dense of no activation")
        shape = shape_of(x)
        if len(shape) != 2 or shape[1] != self.in_features:
            raise ValueError(f"{self!r}: expected x of shape (batch, {self.in_features}), got {shape}")
        y, derivative = linear_with_gelu_derivative(x, self.weight, self.bias, self.shapes_fit())
        self.x, self.y, self.pre = x, y, None
        return y, derivative

    def shapes_fit(self):
        """Whether the parameters still have the layer's shapes (x's and dy's are checked where
        they come in): then the products may skip the ops' checks (kernel_ready)."""
        return (shape_of(self.weight) == (self.in_features, self.out_features)
                and shape_of(self.bias) == (self.out_features,))

    # d loss / d pre-activation from dy = d loss / d y, both (batch, out_features)
    def activation_gradient(self, dy):
        return activation_gradient(dy, self.y, self.pre, self.activation, self.alpha, self.shapes_fit())

    # dy is (batch, out_features) -> dx is (batch, in_features); fills grad_weight and grad_bias.
    # A first layer has no use for dx: input_gradient=False skips its matmul and returns None.
    # below, pre_activation: see input_gradient.
    def backward(self, dy, input_gradient=True, below=None, pre_activation=False):
        dy = check_backward(self, self.y, dy)
        dpre = dy if pre_activation else self.activation_gradient(dy)
        if self.fused_update is not None:   # dx first: it needs the weights the update changes
            dx = self.product_to_input(dpre, below) if input_gradient else None
            self.grad_weight, self.grad_bias = self.fused_update(self.x, dpre)
            return dx
        # straight into the views of a flat gradient buffer where the layer has them
        self.grad_weight, self.grad_bias = weight_and_bias_gradient(
            self.x, dpre, self.gradient_views.get("weight"), self.gradient_views.get("bias"), self.shapes_fit())
        return self.product_to_input(dpre, below) if input_gradient else None

    def input_gradient(self, dy, below=None, pre_activation=False):
        """dx = d loss / d x alone (no weight gradients) from dy = d loss / d y, or from d loss / d
        pre-activation where pre_activation (the layer above made it: `below`). With `below`, the
        layer whose output x is (gradient_below: a layer with leaky ReLU), below's d loss / d
        pre-activation instead: dx times below's activation gradient, in the product's pass where
        the backend has matmul_leaky_relu_grad (dx is never stored as it is, nor read back)."""
        dy = check_backward(self, self.y, dy)
        return self.product_to_input(dy if pre_activation else self.activation_gradient(dy), below)

    def product_to_input(self, dpre, below):
        fits = self.shapes_fit()
        if below is None:
            return matmul(dpre, self.weight, transpose_b=True, shapes_fit=fits)
        below_y = output_as(below, (len(dpre), self.in_features))
        if fits and below_y is not None and kernel_ready(dpre, self.weight, below_y):
            return dispatch.implementation("matmul_leaky_relu_grad")(dpre, self.weight, False, True, below_y,
                                                                    below.alpha)
        return below_gradient(below, matmul(dpre, self.weight, transpose_b=True, shapes_fit=fits))


def gradient_below(layers, i):
    """The layer whose output becomes layers[i]'s input, through layers that only reshape it,
    where layers[i]'s input gradient can come out as d loss / d that layer's pre-activation (the
    `below` of Dense's and the convolutions' backward and input_gradient): both TAKES_BELOW (Dense
    or a convolution), the one below with leaky ReLU; else None. A GAN step's seven leaky ReLU
    gradients go into the products before them, a DCGAN step's eleven."""
    j = i - 1
    while j >= 0 and layers[j].SHAPE_ONLY:
        j -= 1
    below = layers[j] if j >= 0 else None
    fits = layers[i].TAKES_BELOW and below is not None and below.TAKES_BELOW and below.activation == "leaky_relu"
    return below if fits else None


def output_as(below, shape):
    """below.y seen with `shape` (the input of the layer above it, through a Reshape), or None
    where it is not there or has another size."""
    y = below.y
    return y.reshape(shape) if isinstance(y, np.ndarray) and y.size == math.prod(shape) else None


def below_gradient(below, dx):
    """below's d loss / d pre-activation from dx = d loss / d its output seen as the layer
    above's input (any shape of below.y's size), in dx's shape: the activation gradient as a pass
    of its own, where the product could not take it."""
    return below.activation_gradient(dx.reshape(np.shape(below.y))).reshape(dx.shape)


class LeakyReLU(Layer):
    """y = x where x > 0, alpha * x elsewhere; any shape."""

    ROW_WISE, SAVED_ROWS = True, ("x",)

    def __init__(self, alpha=0.2):
        self.alpha = real_number("alpha", alpha, low=0.0)
        self.x = None

    def __repr__(self):
        return f"LeakyReLU(alpha={self.alpha})"

    def forward(self, x):
        self.x = x
        return ops.leaky_relu(x, self.alpha)

    def backward(self, dy):
        dy = check_backward(self, self.x, dy)
        return ops.leaky_relu_grad(dy, self.x, self.alpha)


class ReLU(Layer):
    """y = max(x, 0); any shape."""

    ROW_WISE, SAVED_ROWS = True, ("x",)

    def __init__(self):
        self.x = None

    def __repr__(self):
        return "ReLU()"

    def forward(self, x):
        self.x = x
        return ops.relu(x)

    def backward(self, dy):
        dy = check_backward(self, self.x, dy)
        return ops.relu_grad(dy, self.x)


class Sigmoid(Layer):
    """y = 1 / (1 + exp(-x)); any shape. Backward uses the saved output: dx = dy * y * (1 - y)."""

    ROW_WISE, SAVED_ROWS = True, ("y",)

    def __init__(self):
        self.y = None

    def __repr__(self):
        return "Sigmoid()"

    def forward(self, x):
        self.y = ops.sigmoid(x)
        return self.y

    def backward(self, dy):
        dy = check_backward(self, self.y, dy)
        return ops.sigmoid_grad(dy, self.y)


class Tanh(Layer):
    """y = tanh(x); any shape. Backward uses the saved output: dx = dy * (1 - y^2)."""

    ROW_WISE, SAVED_ROWS = True, ("y",)

    def __init__(self):
        self.y = None

    def __repr__(self):
        return "Tanh()"

    def forward(self, x):
        self.y = ops.tanh(x)
        return self.y

    def backward(self, dy):
        dy = check_backward(self, self.y, dy)
        return ops.tanh_grad(dy, self.y)


class Sequential(Layer):
    """Layers applied in order; parameter names are prefixed by the layer's index ("0.weight")."""

    def __init__(self, *layers):
        if not layers:
            raise ValueError("Sequential: expected at least one layer")
        self.layers = list(layers)

    def __repr__(self):
        return "Sequential(" + ", ".join(repr(layer) for layer in self.layers) + ")"

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy, input_gradient=True):
        """dx, or None with input_gradient=False where the first layer with parameters can skip
        its dx (a Dense or a convolution): it then skips the product that makes dx, and the
        layers before it, which have nothing to learn (a Reshape), are not run backwards. A Dense
        or convolution above one with leaky ReLU hands it d loss / d its pre-activation
        (gradient_below)."""
        first = None if input_gradient else next(
            (i for i, layer in enumerate(self.layers) if layer.PARAMETERS), None)
        skip = first is not None and self.layers[first].OPTIONAL_INPUT_GRADIENT
        layers = self.layers[first:] if skip else self.layers
        pre_activation = False
        for i in reversed(range(len(layers))):
            layer, last = layers[i], skip and i == 0
            if layer.TAKES_BELOW:
                below = gradient_below(layers, i)
                dy = layer.backward(dy, not last, below, pre_activation)
                pre_activation = below is not None
            else:
                dy = layer.backward(dy, input_gradient=False) if last else layer.backward(dy)
        return dy

    def row_wise(self):
        return all(layer.row_wise() for layer in self.layers)

    def keep_rows(self, start):
        if not self.row_wise():
            raise NotImplementedError(f"{self!r}: a layer is not row-wise (ROW_WISE), treating each example apart")
        rows_start(start)   # an integer >= 0 before any layer changes; each layer checks its rows
        for layer in self.layers:
            layer.keep_rows(start)

    def slots(self):
        return [(f"{index}.{name}", owner, attribute)
                for index, layer in enumerate(self.layers) for name, owner, attribute in layer.slots()]

