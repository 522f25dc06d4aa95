"""One GAN training step (batch 64, MNIST sizes): pyai beside the same step in Keras (tf.function),
measured in one run, with the fraction of the machine's matmul peak each reaches.

    python benchmarks/test_gan.py        # one table: time per step, GFLOP/s, ratio, fraction of peak
    pytest benchmarks/test_gan.py --benchmark-columns=min,median,rounds

The work per step (the matmul FLOPs it needs, 1.20 GFLOP) is counted in `pyai.bench.gan_step_case`.
The peak is numpy's (OpenBLAS) 2048^3 matmul rate measured in the same run: the practical peak of
this machine's cores, near their FMA limit. The floor is the step's 29 products alone in numpy, on
warm operands: no step on these cores can be much faster. A shared machine is noisy: compare only
within a run.
"""

import numpy as np
import pytest

from pyai import bench

CASE = bench.gan_step_case(np.random.default_rng(0), bench.tensorflow())
PEAK_SIZE = 2048
PEAK = bench.Case(f"numpy matmul {PEAK_SIZE}^3 (peak)", 2.0 * PEAK_SIZE**3, "GFLOP/s",
                  {"numpy": bench.matmul_case(PEAK_SIZE, np.random.default_rng(1), None).runners["numpy"]})


@pytest.mark.parametrize("peer", list(CASE.runners))
def test_gan_step(benchmark, peer):
    benchmark.group = CASE.name
    benchmark.extra_info.update(work=CASE.work, unit=CASE.unit, peer=peer)
    benchmark.pedantic(CASE.runners[peer], rounds=30, warmup_rounds=2)


def test_numpy_matmul_peak(benchmark):
    benchmark.group = CASE.name
    benchmark.extra_info.update(work=PEAK.work, unit=PEAK.unit, peer=PEAK.name)
    benchmark.pedantic(PEAK.runners["numpy"], rounds=5, warmup_rounds=1)


def main(repeats=30):
    peak = bench.measure(PEAK, 5)["numpy"]
    rates = bench.measure(CASE, repeats)
    print(f"{CASE.name}: {CASE.work / 1e9:.2f} GFLOP a step; best of {repeats}; "
          f"peak = {PEAK.name} = {peak:.1f} GFLOP/s")
    print(f"{'peer':<28} {'ms/step':>8} {'GFLOP/s':>8} {'vs tensorflow':>14} {'of peak':>8}")
    for peer, rate in rates.items():
        ratio = f"{rate / rates['tensorflow']:.2f}x" if "tensorflow" in rates else "-"
        print(f"{peer:<28} {CASE.work / rate / 1e6:8.2f} {rate:8.1f} {ratio:>14} {rate / peak:8.1%}")
    print(f"target: {CASE.target}")


if __name__ == "__main__":
    main()
