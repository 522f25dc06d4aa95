"""pyai.torch: pyai's linear and attention as PyTorch custom ops, against PyTorch's own.

Values and gradients are compared with F.linear + the activation and with
F.scaled_dot_product_attention in float32, to a relative error (||out - ref|| / ||ref||) of 1e-5
or twice PyTorch's own distance from its float64 result where that is larger: both compute in
float32 and differ only in the order of their sums, but PyTorch's tanh-approximate GELU at
z = -3.34 was 1.0e-5 off float64 (1 + tanh cancels) where pyai's was 6e-8. gradcheck runs on a float64
wrapper (inputs cast to float32 and the output back), because pyai computes in float32 only:
finite differences of float32 outputs carry rounding of about 1e-7 / eps, so eps is 1e-3 and
the tolerance 1e-3 absolute plus 1e-2 relative, far below the error of a wrong gradient
(order 1). relu and leaky_relu are left out of gradcheck: a finite difference across their kink
is not their derivative; their gradients are compared with PyTorch's instead.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pyai_torch = pytest.importorskip("pyai.torch")

from conftest import assert_close, relative_error  # noqa: E402

F = torch.nn.functional
TOLERANCE = 1e-5
ACTIVATIONS = {None: lambda z: z, "gelu": lambda z: F.gelu(z, approximate="tanh"), "relu": F.relu,
               "leaky_relu": lambda z: F.leaky_relu(z, 0.2), "sigmoid": torch.sigmoid, "tanh": torch.tanh}


@pytest.fixture
def generator(rng):
    return torch.Generator().manual_seed(int(rng.integers(2**31)))


def leaves(generator, *shapes, dtype=torch.float32):
    return [torch.randn(shape, generator=generator, dtype=dtype).requires_grad_() for shape in shapes]


def values_and_gradients(function, inputs, dy):
    out = function(*inputs)
    return [out, *torch.autograd.grad(out, [x for x in inputs if x is not None], dy)]


def torch_results(function, inputs, dy):
    """PyTorch's float32 values and gradients, and the same computed in float64."""
    in_float64 = [None if x is None else x.detach().double().requires_grad_() for x in inputs]
    return (values_and_gradients(function, inputs, dy),
            values_and_gradients(function, in_float64, dy.double()))


def compare(what, ours, theirs, gradient_tolerance=TOLERANCE, exact=None):
    """Each of ours within the tolerance of theirs, or within twice theirs' distance from `exact`
    (float64) where that is larger."""
    exact = exact or [None] * len(ours)
    for name, out, ref, ref64 in zip(["output", *[f"d{i}" for i in range(len(ours) - 1)]],
                                     ours, theirs, exact):
        ref = ref.detach().numpy()
        tolerance = TOLERANCE if name == "output" else gradient_tolerance
        if ref64 is not None:
            tolerance = max(tolerance, 2 * relative_error(ref, ref64.detach().numpy()))
        assert_close(f"{what}: {name}", out.detach().numpy(), ref, tolerance)


def saturating_tolerance(y):
    """tanh and sigmoid gradients come from the rounded output, 1 - y^2 and y (1 - y): where the
    unit saturates they cancel, and one ulp of y (pyai's and PyTorch's y may differ by one) is a
    relative error of up to ~6e-8 / (1 - |y|) in the gradient (1e-5 already at |y| = 0.994)."""
    margin = 1.0 - np.abs(y.detach().numpy().astype(np.float64)).max()
    return max(TOLERANCE, 10 * 6e-8 / max(margin, 1e-7))


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("x_shape, features_out, bias", [((1, 1), 1, True), ((13, 17), 5, True),
                                                         ((2, 7, 31), 11, False)])
def test_linear_matches_f_linear_and_its_gradients(generator, activation, x_shape, features_out, bias):
    x, w, b = leaves(generator, x_shape, (x_shape[-1], features_out), (features_out,))
    b = b if bias else None
    dy = torch.randn(*x_shape[:-1], features_out, generator=generator)
    ours = values_and_gradients(
        lambda x, w, b: pyai_torch.linear(x, w, b, activation=activation), (x, w, b), dy)
    theirs, exact = torch_results(
        lambda x, w, b: ACTIVATIONS[activation](F.linear(x, w.T, b)), (x, w, b), dy)
    compare(f"linear {activation} x{x_shape}", ours, theirs,
            saturating_tolerance(theirs[0]) if activation in ("tanh", "sigmoid") else TOLERANCE, exact)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (2, 3, 17, 17, 8), (1, 2, 5, 13, 16)],
                         ids=["1", "B2-H3-T17-D8", "Tq5-Tk13"])
def test_attention_matches_sdpa_and_its_gradients(generator, causal, shape):
    batch, heads, queries, keys, depth = shape
    q, k, v = leaves(generator, (batch, heads, queries, depth), (batch, heads, keys, depth),
                     (batch, heads, keys, depth))
    do = torch.randn(batch, heads, queries, depth, generator=generator)
    # pyai's causal mask is aligned bottom-right (query i sees keys j <= i + Tk - Tq); SDPA's
    # is_causal is top-left, so the same mask is given to SDPA explicitly.
    mask = torch.ones(queries, keys, dtype=torch.bool).tril(keys - queries) if causal else None
    ours = values_and_gradients(lambda q, k, v: pyai_torch.attention(q, k, v, causal=causal),
                                (q, k, v), do)
    theirs, exact = torch_results(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), (q, k, v), do)
    compare(f"attention causal={causal} {shape}", ours, theirs, exact=exact)


def test_the_ops_pass_opcheck(generator):
    """Schema, fake (shape) functions, autograd registration, and tracing by AOT autograd with
    dynamic shapes: what torch.compile and torch.export rely on."""
    x, w, b = (t.detach() for t in leaves(generator, (6, 5), (5, 3), (3,)))
    q, k, v = (t.detach() for t in leaves(generator, (1, 2, 4, 8), (1, 2, 6, 8), (1, 2, 6, 8)))
    o, lse = torch.ops.pyai.attention(q, k, v, True, 0.3)
    y, pre = torch.ops.pyai.linear(x, w, b, "gelu", 0.2)
    cases = [(torch.ops.pyai.linear, (x, w, b, "gelu", 0.2)),
             (torch.ops.pyai.linear, (x.requires_grad_(), w.requires_grad_(), None, "leaky_relu", 0.1)),
             (torch.ops.pyai.linear_backward, (torch.randn(6, 3, generator=generator), x.detach(),
                                               w.detach(), y, pre, "gelu", 0.2)),
             (torch.ops.pyai.attention, (q.requires_grad_(), k, v.requires_grad_(), True, 0.3)),
             (torch.ops.pyai.attention_backward, (torch.randn_like(o), q.detach(), k, v.detach(),
                                                  o, lse, True, 0.3))]
    for op, args in cases:
        results = torch.library.opcheck(op, args)
        assert all(result == "SUCCESS" for result in results.values()), f"{op}: {results}"


def float32_inside(function):
    """`function` on float64 tensors: cast to float32 for pyai, its output back to float64."""
    return lambda *inputs: function(*(x.float() for x in inputs)).double()


@pytest.mark.parametrize("activation", [None, "gelu", "sigmoid", "tanh"])
def test_linear_passes_gradcheck(generator, activation):
    inputs = leaves(generator, (4, 6), (6, 3), (3,), dtype=torch.float64)
    function = float32_inside(lambda x, w, b: pyai_torch.linear(x, w, b, activation=activation))
    assert torch.autograd.gradcheck(function, inputs, eps=1e-3, atol=1e-3, rtol=1e-2)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_passes_gradcheck(generator, causal):
    inputs = leaves(generator, (1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4), dtype=torch.float64)
    function = float32_inside(lambda q, k, v: pyai_torch.attention(q, k, v, causal=causal))
    assert torch.autograd.gradcheck(function, inputs, eps=1e-3, atol=1e-3, rtol=1e-2)


def test_compiled_whole_without_a_graph_break(generator):
    x, w, b = leaves(generator, (5, 4), (4, 6), (6,))

    def model(x, w, b):
        h = pyai_torch.linear(x, w, b, activation="tanh")
        return pyai_torch.attention(*(h.reshape(1, 1, 5, 6),) * 3, causal=True).sum()

    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    compare("compiled", values_and_gradients(compiled, (x, w, b), torch.tensor(1.0)),
            values_and_gradients(model, (x, w, b), torch.tensor(1.0)))


def test_exported_as_pyai_nodes(generator):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(4, 6, generator=generator))

        def forward(self, x):
            h = pyai_torch.linear(x, self.w, activation="gelu")
            return pyai_torch.attention(*(h.reshape(1, 1, -1, 6),) * 3, causal=True)

    model, x = Model(), torch.randn(5, 4, generator=generator)
    exported = torch.export.export(model, (x,))
    calls = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert {"pyai.linear.default", "pyai.attention.default"} <= calls, calls
    assert_close("exported", exported.module()(x).detach().numpy(), model(x).detach().numpy(), TOLERANCE)


@pytest.mark.parametrize("name, bad, expected", [
    ("x", lambda x: x.double(), "^x: expected a float32 tensor, got torch.float64"),
    ("w", lambda w: torch.empty(w.shape, device="meta"), "^w: expected a tensor on the CPU, got one on meta"),
    ("x", lambda x: x.numpy(), "^x: expected a torch.Tensor, got ndarray")])
def test_bad_tensors_are_refused_naming_the_argument(name, bad, expected):
    arguments = {"x": torch.ones(2, 3), "w": torch.ones(3, 4)}
    arguments[name] = bad(arguments[name])
    with pytest.raises(TypeError, match=expected):
        pyai_torch.linear(**arguments)
    with pytest.raises(ValueError, match=r"^w: expected shape \(3, out\)"):
        pyai_torch.linear(torch.ones(2, 3), torch.ones(4, 4))


class Block(torch.nn.Module):
    """A pre-norm GPT block, (B, T, C) -> (B, T, C): causal self-attention and a GELU MLP, each
    residual. Weights are (in, out); `linear` and `attention` are pyai's or PyTorch's own."""

    def __init__(self, channels, heads, use_pyai):
        super().__init__()
        self.heads, self.use_pyai = heads, use_pyai
        self.ln_1, self.ln_2 = torch.nn.LayerNorm(channels), torch.nn.LayerNorm(channels)
        shapes = {"c_attn": (channels, 3 * channels), "c_proj": (channels, channels),
                  "c_fc": (channels, 4 * channels), "mlp_proj": (4 * channels, channels)}
        for name, shape in shapes.items():
            self.register_parameter(f"{name}_w", torch.nn.Parameter(torch.randn(shape) / shape[0] ** 0.5))
            self.register_parameter(f"{name}_b", torch.nn.Parameter(torch.randn(shape[1]) * 0.1))

    def linear(self, x, name, activation=None):
        w, b = getattr(self, f"{name}_w"), getattr(self, f"{name}_b")
        if self.use_pyai:
            return pyai_torch.linear(x, w, b, activation=activation)
        return ACTIVATIONS[activation](x @ w + b)

    def forward(self, x):
        batch, time, channels = x.shape
        q, k, v = self.linear(self.ln_1(x), "c_attn").split(channels, dim=2)
        q, k, v = (t.reshape(batch, time, self.heads, -1).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        attend = pyai_torch.attention if self.use_pyai else (
            lambda q, k, v, causal: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
        y = attend(q, k, v, causal=True).transpose(1, 2).reshape(batch, time, channels)
        x = x + self.linear(y, "c_proj")
        return x + self.linear(self.linear(self.ln_2(x), "c_fc", "gelu"), "mlp_proj")


def test_a_gpt_block_trains_as_the_stock_one_does():
    """Ten Adam steps from the same weights on the same batches: the losses agree to 1e-4
    relative (float32 sums in another order, compounded over the steps)."""
    torch.manual_seed(int(np.random.SeedSequence().entropy % 2**31))
    ours, stock = Block(24, 3, use_pyai=True), Block(24, 3, use_pyai=False)
    stock.load_state_dict(ours.state_dict())
    optimizers = [torch.optim.Adam(model.parameters(), lr=1e-2) for model in (ours, stock)]
    x, target = torch.randn(2, 11, 24), torch.randn(2, 11, 24)
    losses = {id(ours): [], id(stock): []}
    for _ in range(10):
        for model, optimizer in zip((ours, stock), optimizers):
            optimizer.zero_grad()
            loss = F.mse_loss(model(x), target)
            loss.backward()
            optimizer.step()
            losses[id(model)].append(loss.item())
    ours_losses, stock_losses = np.array(losses[id(ours)]), np.array(losses[id(stock)])
    assert stock_losses[-1] < 0.8 * stock_losses[0], f"the stock block did not learn: {stock_losses}"
    assert np.allclose(ours_losses, stock_losses, rtol=1e-4, atol=0), f"{ours_losses} vs {stock_losses}"
