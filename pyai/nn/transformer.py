"""The transformer's layers: Embedding, LayerNorm, GELU, MultiHeadAttention, TransformerBlock.

They follow `pyai.nn.layers`: `forward` saves what `backward` needs, `backward(dy)` returns dx
and fills the gradients, and `parameters()` / `gradients()` name every array the same way, so
`pyai.optim.Adam.step(model)` and checkpoints work on them. Activations are (B, T, C): batch,
time (tokens), channels. Layers built from other layers (`Composite`) name their children's
parameters "child.name", like nanoGPT ("attn.query.weight", "mlp.0.weight").
"""

import numpy as np

from pyai import dispatch, ops
from pyai.checks import positive_int, real_number
from pyai.nn.layers import Dense, Layer, Sequential, check_backward, weight_and_bias_gradient


class Composite(Layer):
    """A layer made of named child layers; its parameters are theirs, prefixed by the child's name."""

    def children(self):
        raise NotImplementedError

    def slots(self):
        return [(f"{prefix}.{name}", owner, attribute)
                for prefix, child in self.children() for name, owner, attribute in child.slots()]


class Embedding(Layer):
    """y = table[ids]: a row of table (vocab_size, C) per integer id; rows start N(0, 0.02) as in GPT-2.

    backward fills grad_table and returns None: ids have no gradient.
    """

    PARAMETERS = ("table",)

    def __init__(self, vocab_size, channels, rng=None):
        self.vocab_size = positive_int("vocab_size", vocab_size)
        self.channels = positive_int("channels", channels)
        rng = np.random.default_rng() if rng is None else rng
        self.table = rng.normal(0.0, 0.02, (self.vocab_size, self.channels)).astype(np.float32)
        self.grad_table = None
        self.ids = None
        self.y = None

    def __repr__(self):
        return f"Embedding({self.vocab_size}, {self.channels})"

    # ids is any shape of integers in [0, vocab_size) -> y is ids.shape + (C,)
    def forward(self, ids):
        self.ids = np.asarray(ids)
        self.y = ops.embedding(self.ids, self.table)
        return self.y

    # dy is ids.shape + (C,) -> None; fills grad_table (repeated ids add up)
    def backward(self, dy):
        dy = check_backward(self, self.y, dy)
        self.grad_table = self.keep_gradient("table", ops.embedding_grad(dy, self.ids, self.vocab_size))


class LayerNorm(Layer):
    """y = (x - mean) / sqrt(var + epsilon) * gamma + beta over the last axis (Keras
    LayerNormalization; its default epsilon is 1e-3, GPT-2's is 1e-5)."""

    PARAMETERS = ("gamma", "beta")

    def __init__(self, channels, epsilon=1e-5):
        self.channels = positive_int("channels", channels)
        self.epsilon = real_number("epsilon", epsilon, low=0.0, low_open=True)
        self.gamma = np.ones(self.channels, dtype=np.float32)
        self.beta = np.zeros(self.channels, dtype=np.float32)
        self.grad_gamma = None
        self.grad_beta = None
        self.x = self.y = self.mean = self.rstd = None

    def __repr__(self):
        return f"LayerNorm({self.channels}, epsilon={self.epsilon})"

    # x is (..., C) -> y is (..., C); mean and rstd (...) are saved for backward
    def forward(self, x):
        self.x = x
        self.y, self.mean, self.rstd = ops.layer_norm(x, self.gamma, self.beta, epsilon=self.epsilon,
                                                      return_stats=True)
        return self.y

    # dy is (..., C) -> dx is (..., C); fills grad_gamma and grad_beta. residual (..., C), a
    # residual connection's gradient, is added to dx: as it is written where the backend can
    # (ops.layer_norm_grad's residual), else after, in place
    def backward(self, dy, residual=None):
        dy = check_backward(self, self.y, dy)
        if residual is not None and np.shape(residual) != dy.shape:
            raise ValueError(f"{self!r}: residual must have dy's shape {dy.shape}, got {np.shape(residual)}")
        fused = residual is not None and dispatch.implements("layer_norm_grad_residual")
        dx, grad_gamma, grad_beta = ops.layer_norm_grad(dy, self.x, self.gamma, self.mean, self.rstd,
                                                        residual=residual if fused else None)
        self.grad_gamma = self.keep_gradient("gamma", grad_gamma)
        self.grad_beta = self.keep_gradient("beta", grad_beta)
        if residual is not None and not fused:
            dx += residual
        return dx


class GELU(Layer):
    """GELU's tanh approximation (GPT-2's; keras.activations.gelu(approximate=True)); any shape.

    Where the backend multiplies a product by a matrix as it makes it (ops.matmul's `times`),
    forward keeps gelu'(x), made with y from the same exp (ops.gelu's return_derivative), instead
    of x: a TransformerBlock then has the product dy W^T of the Dense after it multiplied by it,
    and backward here is dy * gelu'(x), the floats of gelu_grad(dy, x), without a second exp.
    """

    def __init__(self):
        self.x = self.derivative = None

    def __repr__(self):
        return "GELU()"

    def forward(self, x):
        if dispatch.implements("matmul_times"):
            y, self.derivative = ops.gelu(x, return_derivative=True)
            self.x = None
            return y
        self.x, self.derivative = x, None
        return ops.gelu(x)

    def backward(self, dy):
        if self.derivative is not None:
            return np.multiply(check_backward(self, self.derivative, dy), self.derivative)
        dy = check_backward(self, self.x, dy)
        return ops.gelu_grad(dy, self.x)


def split_heads(x, heads):
    """(B, T, C) -> (B, H, T, C/H), contiguous, for ops.attention."""
    batch, time, channels = x.shape
    return np.ascontiguousarray(x.reshape(batch, time, heads, channels // heads).transpose(0, 2, 1, 3))


def merge_heads(x):
    """(B, H, T, D) -> (B * T, H * D): the inverse of split_heads, flattened for a Dense layer."""
    batch, heads, time, depth = x.shape
    return np.ascontiguousarray(x.transpose(0, 2, 1, 3)).reshape(batch * time, heads * depth)


class MultiHeadAttention(Composite):
    """Self-attention: y = output(attention(query(x), key(x), value(x))) with `heads` heads of C/H
    channels each; `causal` lets token t see only tokens <= t.

    The projections are Dense layers with (C, C) weights and biases; Keras's MultiHeadAttention
    holds the same numbers as (C, H, D) kernels for query, key, value and (H, D, C) for output.
    """

    def __init__(self, channels, heads, causal=True, rng=None):
        self.channels = positive_int("channels", channels)
        self.heads = positive_int("heads", heads)
        if self.channels % self.heads:
            raise ValueError(f"heads: must divide channels ({self.channels}), got {self.heads}")
        self.causal = bool(causal)
        rng = np.random.default_rng() if rng is None else rng
        self.query, self.key, self.value, self.output = (Dense(channels, channels, rng=rng) for _ in range(4))
        self.shape = self.rows = self.qkv_weight = self.qkv = self.q = self.k = self.v = None
        self.o = self.lse = None

    def __repr__(self):
        return f"MultiHeadAttention({self.channels}, heads={self.heads}, causal={self.causal})"

    def children(self):
        return [("query", self.query), ("key", self.key), ("value", self.value), ("output", self.output)]

    # x is (B, T, C) -> y is (B, T, C). The projections see x as (B * T, C) rows, so the layer
    # checks the (B, T, C) shape itself; the ops check the rest. Query, key and value run as one
    # product with their weights side by side (C x 3C): one wide matmul instead of three narrow
    # ones, and one in the backward for dx and one for the three weight gradients. Its output
    # (B * T, 3C) is (B, T, 3, H, D): attention_qkv reads the heads there and writes o as the
    # (B * T, C) rows the output projection reads; a backend without it gets split heads.
    def forward(self, x):
        shape = np.shape(x)
        if len(shape) != 3 or shape[2] != self.channels:
            raise ValueError(f"{self!r}: expected x of shape (B, T, {self.channels}), got {shape}")
        self.shape = shape
        self.rows = np.reshape(x, (-1, self.channels))
        projections = (self.query, self.key, self.value)
        self.qkv_weight = np.concatenate([dense.weight for dense in projections], axis=1)
        qkv = ops.linear(self.rows, self.qkv_weight, np.concatenate([dense.bias for dense in projections]))
        batch, time, channels = shape
        self.qkv = qkv.reshape(batch, time, 3, self.heads, channels // self.heads)
        if self.reads_qkv():
            self.o, self.lse = ops.attention_qkv(self.qkv, causal=self.causal, return_lse=True)
            self.q = self.k = self.v = None
            merged = self.o.reshape(batch * time, channels)
        else:
            self.q, self.k, self.v = np.ascontiguousarray(self.qkv.transpose(2, 0, 3, 1, 4))  # (B, H, T, D)
            self.o, self.lse = ops.attention(self.q, self.k, self.v, causal=self.causal, return_lse=True)
            merged = merge_heads(self.o)
        return self.output.forward(merged).reshape(shape)

    @staticmethod
    def reads_qkv():
        """Whether the current backend takes the projection's output as it is (attention_qkv)."""
        return dispatch.implements("attention_qkv")

    # dy is (B, T, C) -> dx is (B, T, C); fills the four projections' gradients
    def backward(self, dy):
        if self.shape is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        do = self.output.backward(np.reshape(dy, (-1, self.channels)))
        batch, time, channels = self.shape
        if self.q is None:   # the forward read qkv as it is
            dqkv = ops.attention_qkv_grad(do.reshape(self.o.shape), self.qkv, self.o, self.lse,
                                          causal=self.causal)
        else:
            do = split_heads(do.reshape(self.shape), self.heads)
            grads = ops.attention_grad(do, self.q, self.k, self.v, self.o, self.lse, causal=self.causal)
            dqkv = np.empty_like(self.qkv)
            for i, grad in enumerate(grads):
                dqkv[:, :, i] = grad.transpose(0, 2, 1, 3)
        dqkv = dqkv.reshape(batch * time, 3 * channels)
        dweight, dbias = weight_and_bias_gradient(self.rows, dqkv)
        for i, dense in enumerate((self.query, self.key, self.value)):
            columns = slice(i * channels, (i + 1) * channels)
            dense.grad_weight = dense.keep_gradient("weight", dweight[:, columns])
            dense.grad_bias = dense.keep_gradient("bias", dbias[columns])
        return ops.matmul(dqkv, self.qkv_weight, transpose_b=True).reshape(self.shape)


class TransformerBlock(Composite):
    """GPT-2's pre-norm block: h = x + attn(ln_1(x)), then y = h + mlp(ln_2(h)), where mlp is
    Dense(C, 4C), GELU, Dense(4C, C)."""

    def __init__(self, channels, heads, causal=True, epsilon=1e-5, rng=None):
        rng = np.random.default_rng() if rng is None else rng
        self.channels = positive_int("channels", channels)
        self.ln_1 = LayerNorm(channels, epsilon)
        self.attn = MultiHeadAttention(channels, heads, causal, rng)
        self.ln_2 = LayerNorm(channels, epsilon)
        self.mlp = Sequential(Dense(channels, 4 * channels, rng=rng), GELU(),
                              Dense(4 * channels, channels, rng=rng))

    def __repr__(self):
        return f"TransformerBlock({self.channels}, heads={self.attn.heads}, causal={self.attn.causal})"

    def children(self):
        return [("ln_1", self.ln_1), ("attn", self.attn), ("ln_2", self.ln_2), ("mlp", self.mlp)]

    # x is (B, T, C) -> y is (B, T, C). Each residual is added in place into the branch's output,
    # a new array of its own (the branch's last Dense keeps it only for its shape).
    def forward(self, x):
        h = self.attn.forward(self.ln_1.forward(x))
        h += x
        y = self.mlp_forward(self.ln_2.forward(h).reshape(-1, self.channels)).reshape(h.shape)
        y += h
        return y

    # x is (B * T, C) -> the mlp's output. Where the backend makes gelu and its derivative in the
    # first Dense's product (ops.linear's return_derivative), the (B * T, 4C) pre-activation is
    # never stored nor read back: the GELU keeps the derivative, as its own forward would.
    def mlp_forward(self, x):
        expand, gelu, project = self.mlp.layers
        if not (dispatch.implements("linear_with_gelu_derivative") and dispatch.implements("matmul_times")):
            return self.mlp.forward(x)
        h, gelu.derivative = expand.forward_gelu(x)
        gelu.x = None
        return project.forward(h)

    # dy is (B, T, C) -> dx is (B, T, C); the residuals pass dy through and add the branch's
    # gradient, as layer norm's gradient is written
    def backward(self, dy):
        dh = self.ln_2.backward(self.mlp_backward(dy.reshape(-1, self.channels)).reshape(dy.shape), residual=dy)
        return self.ln_1.backward(self.attn.backward(dh), residual=dh)

    # dy is (B * T, C) -> the gradient at the mlp's input. Where GELU kept its derivative, the
    # second Dense's dy W^T comes out of its product already multiplied by it (ops.matmul's
    # `times`): the (B * T, 4C) gradient is stored once, not stored, read and stored again.
    def mlp_backward(self, dy):
        expand, gelu, project = self.mlp.layers
        if gelu.derivative is None:
            return self.mlp.backward(dy)
        project.backward(dy, input_gradient=False)
        return expand.backward(ops.matmul(dy, project.weight, transpose_b=True, times=gelu.derivative))
