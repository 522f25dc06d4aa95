"""One GPT training step (forward, cross-entropy, backward, Adam): pyai beside the same model in
Keras (tf.function, tf.GradientTape, Keras Adam), same sizes, from the same weights.

    python benchmarks/test_gpt.py        # one table: ms per step, tokens/s, ratio to Keras
    pytest benchmarks/test_gpt.py --benchmark-columns=min,median,rounds

Sizes: 4 blocks, 4 heads, 128 channels, context 128, batch 16 (2,048 tokens a step), vocabulary
103 (the characters of `pyai train gpt`'s corpus). A shared machine is noisy: compare only within
a run, and note the load.
"""

import time

import numpy as np
import pytest

from pyai.models import GPT
from pyai.optim import Adam
from pyai.reference.keras import to_keras

SIZES = {"vocab_size": 103, "block_size": 128, "layers": 4, "heads": 4, "channels": 128}
BATCH = 16
TOKENS = BATCH * SIZES["block_size"]
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


def runners():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, SIZES["vocab_size"], (BATCH, SIZES["block_size"]))
    targets = rng.integers(0, SIZES["vocab_size"], (BATCH, SIZES["block_size"]))
    return {"pyai": pyai_step(GPT(**SIZES, seed=0), Adam(1e-3), ids, targets),
            "keras": keras_step(GPT(**SIZES, seed=0), ids, targets)}


RUNNERS = runners()


@pytest.mark.parametrize("peer", list(RUNNERS))
def test_gpt_step(benchmark, peer):
    benchmark.group = NAME
    benchmark.extra_info.update(tokens_per_step=TOKENS, peer=peer)
    benchmark.pedantic(RUNNERS[peer], rounds=10, warmup_rounds=2)


def best_time(function, repeats):
    function()   # compile and trace outside the timing
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main(repeats=10):
    seconds = {peer: best_time(run, repeats) for peer, run in RUNNERS.items()}
    print(f"{NAME}: {TOKENS} tokens a step; best of {repeats}")
    print(f"{'peer':<8} {'ms/step':>8} {'tokens/s':>9} {'vs keras':>9}")
    for peer, time_s in seconds.items():
        print(f"{peer:<8} {time_s * 1e3:8.1f} {TOKENS / time_s:9.0f} {seconds['keras'] / time_s:8.2f}x")


if __name__ == "__main__":
    main()
