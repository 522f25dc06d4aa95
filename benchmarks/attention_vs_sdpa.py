"""Attention at one shape, causal unless told, pyai beside PyTorch's scaled_dot_product_attention, forward and
forward + backward, best of 20 each, three rounds in one process, each call right after the one
before (as in a training step: no pause that lets the threads fall asleep). Within a round all of
pyai's calls come first, then PyTorch's: PyTorch's OpenMP threads keep spinning for a while after
each call, and a pyai call right after one would share the cores with them.

    python benchmarks/attention_vs_sdpa.py 16 4 128 32      # B H T D: the GPT step's attention
    python benchmarks/attention_vs_sdpa.py 1 8 2048 64 full # every query sees every key

A ratio is PyTorch's time over pyai's: above 1, pyai is faster. A shared machine is noisy: compare
only within a run.
"""

import sys

import numba
import numpy as np
import torch
import torch.nn.functional as F

from pyai import ops
from pyai.bench.timing import best_times


def main(batch, heads, length, depth, causal=True):
    torch.set_num_threads(numba.get_num_threads())
    rng = np.random.default_rng(0)
    q, k, v, do = (rng.standard_normal((batch, heads, length, depth), dtype=np.float32) for _ in range(4))
    tq, tk, tv = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))

    def pyai_both():
        o, lse = ops.attention(q, k, v, causal=causal, return_lse=True)
        ops.attention_grad(do, q, k, v, o, lse, causal=causal)

    def torch_both():
        F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal).backward(torch.from_numpy(do))

    runners = {"pyai forward": lambda: ops.attention(q, k, v, causal=causal, return_lse=True),
               "pyai forward + backward": pyai_both,
               "torch forward": lambda: F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal),
               "torch forward + backward": torch_both}
    flops = 4 * batch * heads * length * length * depth / (2 if causal else 1)
    for _ in range(3):
        t = {name: seconds * 1e3 for library in ("pyai", "torch") for name, seconds in best_times(
            {name: run for name, run in runners.items() if name.startswith(library)}, repeats=20,
            pause_s=0).items()}
        print(f"forward: pyai {t['pyai forward']:.2f} ms ({flops / t['pyai forward'] / 1e6:.0f} GFLOP/s), "
              f"torch {t['torch forward']:.2f} ms, {t['torch forward'] / t['pyai forward']:.2f}x; "
              f"forward + backward: pyai {t['pyai forward + backward']:.2f} ms, "
              f"torch {t['torch forward + backward']:.2f} ms, "
              f"{t['torch forward + backward'] / t['pyai forward + backward']:.2f}x")


if __name__ == "__main__":
    shape = [int(argument) for argument in (sys.argv[1:5] or (16, 4, 128, 32))]
    main(*shape, causal=sys.argv[5:6] != ["full"])
