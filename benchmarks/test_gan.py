"""One GAN training step (batch 64, MNIST sizes): pyai beside the same step in Keras (tf.function)
and in PyTorch (eager, benchmarks/torch_twins.py), measured in one run, with the fraction of the
machine's measured FMA peak each reaches.

    python benchmarks/test_gan.py        # one table: time per step, GFLOP/s, ratio, fraction of peak
    pytest benchmarks/test_gan.py --benchmark-columns=min,median,rounds

The work per step (the matmul FLOPs it needs, 1.20 GFLOP) is counted in `pyai.bench.gan_step_case`.
The peak is `pyai.bench.CpuLimits`: independent vector FMAs on every core, measured in the same
run; no step can multiply faster. The floor is the step's 29 products alone in numpy, on warm
operands: no step on these cores can be much faster. A shared machine is noisy: compare only
within a run.
"""

import numba
import numpy as np
import pytest

from pyai import bench
from pyai.models import GAN

PEERS = bench.installed_peers()
CASE = bench.gan_step_case(np.random.default_rng(0), PEERS)
if PEERS["torch"]:
    import torch_twins

    TORCH_STEP = torch_twins.gan_step(GAN(seed=0))
    CASE.runners["torch"] = lambda: TORCH_STEP(*CASE.inputs)


@pytest.mark.parametrize("peer", list(CASE.runners) + bench.skipped_params(PEERS, pytest))
def test_gan_step(benchmark, peer):
    benchmark.group = CASE.name
    benchmark.extra_info.update(work=CASE.work, unit=CASE.unit, peer=peer)
    benchmark.pedantic(CASE.runners[peer], rounds=30, warmup_rounds=2)


def test_fma_peak(benchmark):
    threads, iterations = numba.get_num_threads(), bench.peaks.ITERATIONS
    out = np.empty((threads, bench.peaks.WIDTH), np.float32)
    one = np.float32(1)
    benchmark.group = CASE.name
    benchmark.extra_info.update(work=bench.fma_flops(threads, iterations), unit="GFLOP/s",
                                peer="FMA peak (limit)")
    benchmark.pedantic(lambda: bench.fma_chains(out, iterations, one, one), rounds=5, warmup_rounds=1)


def main(repeats=30):
    limits = bench.CpuLimits.measure()
    rates = bench.measure(CASE, repeats)
    print(f"{CASE.name}: {CASE.work / 1e9:.2f} GFLOP a step; best of {repeats}, peers interleaved; "
          f"{limits.describe()}\n")
    for line in bench.markdown_header(["runner", "ms/step", "GFLOP/s", "pyai / runner", "of FMA peak"]):
        print(line)
    for peer, rate in rates.items():
        print(bench.markdown_row([peer, f"{CASE.work / rate / 1e6:.2f}", f"{rate:.1f}",
                                  f"{rates['pyai'] / rate:.2f}x" if peer != "pyai" else "",
                                  f"{limits.fraction(rate, CASE.unit):.1%}"]))
    print(f"\ntarget: {CASE.target}")
    for line in bench.missing(PEERS).values():
        print(line)


if __name__ == "__main__":
    main()
