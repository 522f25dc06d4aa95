"""What pyai's PyTorch and Keras adapters cost: `python benchmarks/adapters.py [--out DIR]`.

1. The fixed cost of a call, at sizes where the kernel takes next to nothing (linear 8x8 -> 8,
   attention T=8, D=8, one head): pyai.ops on numpy arrays, the same op through pyai.torch
   (forward alone, and forward + backward under autograd) and through pyai.keras (in a
   tf.function: forward, and forward + backward under a GradientTape), beside each framework's
   own op at the same size. Microseconds a call, best of N.
2. Causal attention forward + backward at T = 1024 and 2048 (B=1, H=8, D=64) inside each
   framework, pyai's kernels through the adapter beside the framework's own attention: the
   cases of `pyai bench` (pyai.bench.cases.framework_attention_cases).
Timing as everywhere in pyai.bench: best of N after a warm-up, the runners interleaved.
"""

import argparse

import numpy as np

from pyai import bench
from pyai.bench.report import emit, header, markdown_header, markdown_row
from pyai.bench.timing import best_times

REPEATS = 30


def fixed_cost_runners(rng):
    import keras
    import tensorflow as tf
    import torch

    import pyai
    import pyai.keras
    import pyai.torch

    x, w = rng.standard_normal((8, 8), dtype=np.float32), rng.standard_normal((8, 8), dtype=np.float32)
    b = rng.standard_normal(8, dtype=np.float32)
    q = rng.standard_normal((1, 1, 8, 8), dtype=np.float32)
    tx, tw, tb, tq = (torch.from_numpy(a).requires_grad_() for a in (x, w, b, q))
    fx, fw, fb, fq = (tf.constant(a) for a in (x, w, b, q))
    F = torch.nn.functional

    def keras_dense(x, w, b):
        return keras.activations.gelu(x @ w + b, approximate=True)

    def keras_attention(q):
        swap = (0, 2, 1, 3)
        return tf.transpose(keras.ops.dot_product_attention(*[tf.transpose(q, swap)] * 3), swap)

    def traced(function, inputs, backward):
        """A zero-argument call of `function` (and its gradients) traced once by tf.function."""
        @tf.function
        def run(*inputs):
            if not backward:
                return function(*inputs)
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                y = function(*inputs)
            return tape.gradient(y, inputs)
        return lambda: run(*inputs)

    def torch_both(function, inputs):
        return lambda: torch.autograd.grad(function(*inputs).sum(), inputs)

    def torch_forward(function, inputs):
        def run():
            with torch.no_grad():
                return function(*inputs)
        return run

    def pyai_torch_dense(x, w, b):
        return pyai.torch.linear(x, w, b, activation="gelu")

    def torch_dense(x, w, b):
        return F.gelu(x @ w + b, approximate="tanh")

    def pyai_keras_dense(x, w, b):
        return pyai.keras.linear(x, w, b, activation="gelu")

    def pyai_keras_attention(q):
        return pyai.keras.attention(q, q, q)

    def torch_attention(q):
        return F.scaled_dot_product_attention(q, q, q)

    linear_inputs, attention_inputs = (tx, tw, tb), (tq,)
    return {
        "linear 8x8->8 gelu, forward": {
            "pyai.ops (numpy)": lambda: pyai.ops.linear(x, w, b, activation="gelu"),
            "pyai.torch": torch_forward(pyai_torch_dense, linear_inputs),
            "torch": torch_forward(torch_dense, linear_inputs),
            "pyai.keras (tf.function)": traced(pyai_keras_dense, (fx, fw, fb), False),
            "keras (tf.function)": traced(keras_dense, (fx, fw, fb), False)},
        "linear 8x8->8 gelu, forward + backward": {
            "pyai.torch": torch_both(pyai_torch_dense, linear_inputs),
            "torch": torch_both(torch_dense, linear_inputs),
            "pyai.keras (tf.function)": traced(pyai_keras_dense, (fx, fw, fb), True),
            "keras (tf.function)": traced(keras_dense, (fx, fw, fb), True)},
        "attention T=8 D=8, forward": {
            "pyai.ops (numpy)": lambda: pyai.ops.attention(q, q, q),
            "pyai.torch": torch_forward(pyai.torch.attention, (tq, tq, tq)),
            "torch": torch_forward(torch_attention, attention_inputs),
            "pyai.keras (tf.function)": traced(pyai_keras_attention, (fq,), False),
            "keras (tf.function)": traced(keras_attention, (fq,), False)},
        "attention T=8 D=8, forward + backward": {
            "pyai.torch": torch_both(pyai.torch.attention, (tq, tq, tq)),
            "torch": torch_both(torch_attention, attention_inputs),
            "pyai.keras (tf.function)": traced(pyai_keras_attention, (fq,), True),
            "keras (tf.function)": traced(keras_attention, (fq,), True)},
    }


def fixed_cost_lines(rng):
    columns = ["pyai.ops (numpy)", "pyai.torch", "torch", "pyai.keras (tf.function)", "keras (tf.function)"]
    yield f"## The fixed cost of a call, microseconds (best of {REPEATS})"
    yield ""
    yield from markdown_header(["case", *columns])
    for name, runners in fixed_cost_runners(rng).items():
        seconds = best_times(runners, REPEATS)
        yield markdown_row([name, *[f"{seconds[c] * 1e6:.0f}" if c in seconds else "-" for c in columns]])
    yield ""


def attention_lines(peers, rng, sizes, repeats):
    yield f"## Causal attention forward + backward inside each framework, GFLOP/s (best of {repeats})"
    yield ""
    yield from markdown_header(["case", "pyai's kernels through the adapter", "the framework's own",
                                "pyai / framework"])
    for n in sizes:
        for case in bench.framework_attention_cases(n, rng, peers):
            seconds = best_times(case.runners, repeats)
            own = next(name for name in case.runners if name != "pyai")
            rates = {name: case.work / s / 1e9 for name, s in seconds.items()}
            yield markdown_row([case.name, f"{rates['pyai']:.1f}", f"{rates[own]:.1f} ({own})",
                                f"{rates['pyai'] / rates[own]:.2f}x"])
    yield ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", metavar="DIR", help="also write the tables to DIR/adapters-<date>.md")
    parser.add_argument("--repeats", type=int, default=5, help="for the attention cases")
    args = parser.parse_args()
    peers = bench.installed_peers()
    if not all(peers.values()):
        raise SystemExit("; ".join(bench.missing(peers).values()))
    rng = np.random.default_rng(0)
    limits = bench.CpuLimits.measure(quick=True)
    method = "best of N after a warm-up, runners interleaved; a shared machine is noisy: compare only within one run"

    def lines():
        yield from header("pyai's PyTorch and Keras adapters", peers, limits, method)
        yield from fixed_cost_lines(rng)
        yield from attention_lines(peers, rng, (1024, 2048), args.repeats)

    emit(lines(), args.out, "adapters")


if __name__ == "__main__":
    main()
