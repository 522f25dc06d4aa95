"""A Dense layer's weight and bias gradient and its Adam step: pyai's one pass
(`kernels/numba_cpu/dense_adam.py`) beside the two passes it replaces (weight_and_bias_grad, then
adam_update), at the GAN's layer shapes. The two take turns in one process, 5 calls each a round;
before every call the caches are flushed (a 48 MB write), then x and dy read again: in a training
step the layer's input and gradient are fresh, its parameters and moments are not.

    python benchmarks/dense_adam_vs_two_passes.py [rounds]

A ratio is the two passes' time over the one pass's: above 1, the one pass is faster. A shared
machine is noisy: compare only within a run.
"""

import sys
import time

import numpy as np

from pyai.kernels.numba_cpu import adam, matmul
from pyai.kernels.numba_cpu.dense_adam import dense_adam_update

SHAPES = [(64, 100, 256), (64, 256, 512), (64, 512, 1024), (64, 1024, 784), (128, 784, 512), (128, 512, 256),
          (64, 100, 6272)]   # the GAN's layers, then the DCGAN generator's Dense
SETTINGS = (2e-4, 0.5, 0.999, 1e-7)


def main(rounds=10):
    rng = np.random.default_rng(0)
    flush = np.ones(48 << 18, np.float32)
    print("| batch x in x out | one pass ms (best / median) | two passes ms (best / median) | ratio of medians |")
    print("|---|---|---|---|")
    for batch, inputs, outputs in SHAPES:
        x = rng.standard_normal((batch, inputs)).astype(np.float32)
        dy = rng.standard_normal((batch, outputs)).astype(np.float32)
        size = (inputs + 1) * outputs
        param, m, v = (rng.standard_normal(size).astype(np.float32) ** 2 for _ in range(3))
        grad = np.empty(size, np.float32)
        runs = {"one": lambda step: dense_adam_update(x, dy, grad, param, m, v, *SETTINGS, step),
                "two": lambda step: (matmul.weight_and_bias_grad(x, dy, out=grad.reshape(inputs + 1, outputs)),
                                     adam.adam_update(param, grad, m, v, *SETTINGS, step))}
        times = {name: [] for name in runs}
        step = 1
        for _ in range(rounds):
            for name, run in runs.items():
                for _ in range(5):
                    flush += 1
                    x.sum(), dy.sum()
                    start = time.perf_counter()
                    run(step)
                    times[name].append(time.perf_counter() - start)
                    step += 1
        one, two = (np.array(times[name]) * 1e3 for name in ("one", "two"))
        print(f"| {batch} x {inputs} x {outputs} | {one.min():.3f} / {np.median(one):.3f} | "
              f"{two.min():.3f} / {np.median(two):.3f} | {np.median(two) / np.median(one):.2f}x |")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
