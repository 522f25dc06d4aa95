"""pyai's kernels inside PyTorch models: `linear` and `attention` on CPU tensors, differentiable.

    import pyai.torch
    y = pyai.torch.linear(x, w, b, activation="gelu")   # x (..., in), w (in, out) as pyai's, b (out,)
    o = pyai.torch.attention(q, k, v, causal=True)      # q (B, H, Tq, D), k and v (B, H, Tk, D)

Each is a `torch.library` custom op in the `pyai` namespace (torch.ops.pyai.linear,
.attention, and their backwards .linear_backward, .attention_backward), with a fake function
that gives the output shapes, so torch.compile and torch.export trace a model through it as one
opaque node. Autograd runs pyai's own backward kernels (first derivatives only). Tensors are
float32 on the CPU; pyai reads them without a copy (DLPack, see pyai.checks) where they are
C-contiguous, and its results become tensors without a copy (torch.from_numpy). Beyond the
kernels, a call costs PyTorch's dispatch of a custom op and pyai's argument checks; the kernels
run on pyai's current backend (a GPU backend copies to the GPU and back on every call).
Needs PyTorch (`pip install pyai[torch]`).
"""

import math

import numpy as np
import torch

from pyai import ops
from pyai.nn.layers import linear_backward, linear_forward


def host(tensor):
    """A CPU tensor as a numpy view of its memory (no copy), for pyai's ops."""
    return None if tensor is None else tensor.detach().numpy()


def tensor(array):
    return torch.from_numpy(np.asarray(array))


def check_tensor(name, value):
    """A float32 CPU torch tensor, or a clear error naming `name`."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if value.device.type != "cpu":
        raise TypeError(f"{name}: expected a tensor on the CPU, got one on {value.device}; "
                        f"pyai.torch takes CPU tensors (copy with .cpu())")
    if value.dtype != torch.float32:
        raise TypeError(f"{name}: expected a float32 tensor, got {value.dtype} (pyai's kernels "
                        f"compute in float32; convert with .float())")
    return value


# ---- linear: y = activation(x @ w + b) ----

# x (N, in), w (in, out), b (out,) or None -> y (N, out) and the pre-activation x @ w + b (N, out)
# for gelu, whose gradient needs it; an empty tensor for the other activations.
@torch.library.custom_op("pyai::linear", mutates_args=())
def linear_op(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, activation: str | None,
              alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    y, pre = linear_forward(host(x), host(w), host(b), activation, alpha)
    return tensor(y), tensor(np.empty(0, np.float32) if pre is None else pre)


@linear_op.register_fake
def _(x, w, b, activation, alpha):
    pre_shape = (x.shape[0], w.shape[1]) if activation == "gelu" else (0,)
    return x.new_empty((x.shape[0], w.shape[1])), x.new_empty(pre_shape)


# dy (N, out) -> dx (N, in), dw (in, out), db (out,), from the forward's x, w, y and pre.
@torch.library.custom_op("pyai::linear_backward", mutates_args=())
def linear_backward_op(dy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, y: torch.Tensor,
                       pre: torch.Tensor, activation: str | None,
                       alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pre = host(pre) if activation == "gelu" else None
    dx, dw, db = linear_backward(host(dy), host(x), host(w), host(y), pre, activation, alpha)
    return tensor(dx), tensor(dw), tensor(db)


@linear_backward_op.register_fake
def _(dy, x, w, y, pre, activation, alpha):
    return x.new_empty(x.shape), w.new_empty(w.shape), w.new_empty(w.shape[1:])


def linear_setup_context(ctx, inputs, output):
    x, w, b, activation, alpha = inputs
    y, pre = output
    ctx.save_for_backward(x, w, y, pre)
    ctx.activation, ctx.alpha, ctx.has_bias = activation, alpha, b is not None
    ctx.mark_non_differentiable(pre)


def linear_backward_autograd(ctx, dy, dpre):
    x, w, y, pre = ctx.saved_tensors
    dx, dw, db = torch.ops.pyai.linear_backward(dy, x, w, y, pre, ctx.activation, ctx.alpha)
    return dx, dw, db if ctx.has_bias else None, None, None


linear_op.register_autograd(linear_backward_autograd, setup_context=linear_setup_context)


def linear(x, w, b=None, *, activation=None, alpha=0.2):
    """activation(x @ w + b) on pyai's fused kernel, differentiable: x (..., in), w (in, out)
    (the transpose of torch.nn.Linear's weight, as in Keras and pyai.ops.linear), b (out,) or
    None; activation one of pyai.ops.ACTIVATIONS ("gelu" is the tanh approximation)."""
    x, w = check_tensor("x", x), check_tensor("w", w)
    b = None if b is None else check_tensor("b", b)
    if activation not in ops.ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ops.ACTIVATIONS}, got {activation!r}")
    if x.dim() == 0 or w.dim() != 2 or x.shape[-1] != w.shape[0]:
        raise ValueError(f"w: expected shape ({x.shape[-1] if x.dim() else 'in'}, out) to match "
                         f"x's last dimension (x {tuple(x.shape)}), got {tuple(w.shape)}")
    y, _ = torch.ops.pyai.linear(x.reshape(-1, w.shape[0]), w, b, activation, float(alpha))
    return y.reshape(*x.shape[:-1], w.shape[1])


# ---- attention: o = softmax(scale q k^T + mask) v ----

# q (B, H, Tq, D), k and v (B, H, Tk, D) -> o (B, H, Tq, D) and lse (B, H, Tq), which backward needs.
@torch.library.custom_op("pyai::attention", mutates_args=())
def attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                 scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    o, lse = ops.attention(host(q), host(k), host(v), causal=causal, scale=scale, return_lse=True)
    return tensor(o), tensor(lse)


@attention_op.register_fake
def _(q, k, v, causal, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3])


# do (B, H, Tq, D) -> dq, dk, dv of the shapes of q, k, v.
@torch.library.custom_op("pyai::attention_backward", mutates_args=())
def attention_backward_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          o: torch.Tensor, lse: torch.Tensor, causal: bool,
                          scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grads = ops.attention_grad(*map(host, (do, q, k, v, o, lse)), causal=causal, scale=scale)
    return tuple(map(tensor, grads))


@attention_backward_op.register_fake
def _(do, q, k, v, o, lse, causal, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def attention_setup_context(ctx, inputs, output):
    q, k, v, causal, scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse)
    ctx.causal, ctx.scale = causal, scale
    ctx.mark_non_differentiable(lse)


def attention_backward_autograd(ctx, do, dlse):
    dq, dk, dv = torch.ops.pyai.attention_backward(do, *ctx.saved_tensors, ctx.causal, ctx.scale)
    return dq, dk, dv, None, None


attention_op.register_autograd(attention_backward_autograd, setup_context=attention_setup_context)


def attention(q, k, v, *, causal=False, scale=None):
    """softmax(scale q k^T + mask) v on pyai's flash-style kernels, differentiable; the layout
    and defaults of torch.nn.functional.scaled_dot_product_attention: q (B, H, Tq, D), k and v
    (B, H, Tk, D), scale 1/sqrt(D). causal: query i sees key j <= i + Tk - Tq (aligned
    bottom-right, as pyai.ops.attention; the same as SDPA's is_causal when Tq == Tk)."""
    q, k, v = check_tensor("q", q), check_tensor("k", k), check_tensor("v", v)
    if q.dim() != 4:
        raise ValueError(f"q: expected a 4-d tensor (B, H, Tq, D), got shape {tuple(q.shape)}")
    scale = 1.0 / math.sqrt(q.shape[3]) if scale is None else float(scale)
    o, _ = torch.ops.pyai.attention(q, k, v, bool(causal), scale)
    return o
