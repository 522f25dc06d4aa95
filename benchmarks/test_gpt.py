"""One GPT training step (forward, cross-entropy, backward, Adam): pyai beside the same model in
Keras (tf.function, tf.GradientTape, Keras Adam), same sizes, from the same weights, and in
PyTorch (eager, benchmarks/torch_twins.py: same sizes, PyTorch's own initial weights).

    python benchmarks/test_gpt.py        # one table: ms per step, tokens/s, ratio, fraction of peak
    pytest benchmarks/test_gpt.py --benchmark-columns=min,median,rounds

Sizes: 4 blocks, 4 heads, 128 channels, context 128, batch 16 (2,048 tokens a step), vocabulary
103 (the characters of `pyai train gpt`'s corpus). A shared machine is noisy: compare only within
a run, and note the load.

FLOPs a step (`FLOPS`, the matmuls only): 6 per weight per token for the 12 L C^2 block weights
and the V C tied head (forward 2, backward 4), plus causal attention's 6 L T C per token (q k^T
and p v over half the positions, 2 T C forward, 3 times that with the backward); 10.6 GFLOP.
"""

import numpy as np
import pytest

from pyai import bench
from pyai.models import GPT
from pyai.optim import Adam
from pyai.reference.keras import to_keras

SIZES = {"vocab_size": 103, "block_size": 128, "layers": 4, "heads": 4, "channels": 128}
BATCH = 16
TOKENS = BATCH * SIZES["block_size"]
LAYERS, CHANNELS, LENGTH = SIZES["layers"], SIZES["channels"], SIZES["block_size"]
FLOPS = TOKENS * (6 * (12 * LAYERS * CHANNELS**2 + SIZES["vocab_size"] * CHANNELS) + 6 * LAYERS * LENGTH * CHANNELS)
NAME = "GPT training step " + ", ".join(f"{key}={value}" for key, value in SIZES.items()) + f", batch={BATCH}"


def pyai_step(model, optimizer, ids, targets):
    return lambda: (model.train_step(ids, targets), optimizer.step(model))


def keras_step(model, ids, targets):
    import keras
    import tensorflow as tf

    twin, variables = to_keras(model)
    weights = list(variables.values())
    optimizer = keras.optimizers.Adam(learning_rate=1e-3)
    ids, targets = tf.constant(ids), tf.constant(targets)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = twin(ids)
            losses = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
            loss = tf.reduce_mean(losses)
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return loss

    return lambda: step().numpy()


def runners(peers):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, SIZES["vocab_size"], (BATCH, SIZES["block_size"]))
    targets = rng.integers(0, SIZES["vocab_size"], (BATCH, SIZES["block_size"]))
    result = {"pyai": pyai_step(GPT(**SIZES, seed=0), Adam(1e-3), ids, targets)}
    if peers["tensorflow"]:
        result["keras"] = keras_step(GPT(**SIZES, seed=0), ids, targets)
    if peers["torch"]:
        import torch_twins
        result["torch"] = torch_twins.gpt_step(SIZES, ids, targets)
    return result


PEERS = bench.installed_peers()
RUNNERS = runners(PEERS)


@pytest.mark.parametrize("peer", list(RUNNERS) + bench.skipped_params(PEERS, pytest))
def test_gpt_step(benchmark, peer):
    benchmark.group = NAME
    benchmark.extra_info.update(tokens_per_step=TOKENS, work=FLOPS, unit="GFLOP/s", peer=peer)
    benchmark.pedantic(RUNNERS[peer], rounds=10, warmup_rounds=2)


def main(repeats=10):
    limits = bench.CpuLimits.measure()
    seconds = bench.best_times(RUNNERS, repeats, warmups=2)   # compile and trace outside the timing
    print(f"{NAME}: {TOKENS} tokens, {FLOPS / 1e9:.1f} GFLOP a step; best of {repeats}, peers "
          f"interleaved; {limits.describe()}\n")
    for line in bench.markdown_header(["runner", "ms/step", "tokens/s", "GFLOP/s", "pyai / runner",
                                       "of FMA peak"]):
        print(line)
    for peer, time_s in seconds.items():
        rate = FLOPS / time_s / 1e9
        print(bench.markdown_row([peer, f"{time_s * 1e3:.1f}", f"{TOKENS / time_s:.0f}", f"{rate:.1f}",
                                  f"{time_s / seconds['pyai']:.2f}x" if peer != "pyai" else "",
                                  f"{limits.fraction(rate, 'GFLOP/s'):.1%}"]))
    for line in bench.missing(PEERS).values():
        print(line)


if __name__ == "__main__":
    main()
