"""pytest-benchmark: attention forward and forward + backward, pyai beside the unfused way
(TensorFlow as a tf.function, numpy) and PyTorch's fused scaled_dot_product_attention, at
B=1, H=8, D=64, T from 256 to 4096, causal and not.

    pytest benchmarks/test_attention.py --benchmark-group-by=group \
        --benchmark-columns=min,median,rounds

One group per case, so the peers sit in one table. Each result's extra_info holds the
FLOPs the result needs (`flops`: 4 B H T^2 D forward, half with the causal mask, 3.5 times that
for forward + backward; see `pyai.bench.attention_case`) and `peak_bytes`: the largest amount
of memory the call held at once that Python's tracemalloc sees: numpy's arrays, so all of
numpy's and pyai's packed copies and outputs, but not the few blocks of scratch (O(block size))
each pyai task takes inside the kernel, nor TensorFlow's or PyTorch's own allocators (None for
them). The T x T score matrix alone is 4 H T^2 bytes: 512 MiB at T = 4096.
"""

import tracemalloc

import numpy as np
import pytest

from pyai import bench

SIZES = (256, 512, 1024, 2048, 4096)
PEERS = bench.installed_peers()


def peak_traced_bytes(function):
    tracemalloc.start()
    function()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def cases():
    rng = np.random.default_rng(0)
    for n in SIZES:
        for backward in (False, True):
            for causal in (False, True):
                case = bench.attention_case(n, causal, backward, rng, PEERS)
                for peer in case.runners:
                    yield pytest.param(case, peer, id=f"{case.name} | {peer}")


@pytest.mark.parametrize("case,peer", list(cases()) + bench.skipped_params(PEERS, pytest, before=(None,)))
def test_attention(benchmark, case, peer):
    run = case.runners[peer]
    run()   # compile, trace and touch the inputs outside the timing
    benchmark.group = case.name
    benchmark.extra_info.update(flops=case.work, peer=peer, peak_bytes=(
        None if peer in PEERS else peak_traced_bytes(run)))
    benchmark.pedantic(run, rounds=5 if "T=4096" in case.name else 10, warmup_rounds=1)

