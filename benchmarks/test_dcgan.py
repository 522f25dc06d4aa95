"""The convolutions and one DCGAN training step (batch 64, MNIST sizes): pyai beside TensorFlow
(tf.function, oneDNN) and PyTorch (eager, channels-last; the step's twin in
benchmarks/torch_twins.py), measured in one run, with the fraction of the machine's measured FMA
peak each reaches.

    python benchmarks/test_dcgan.py             # one table: conv layers forward and backward, the step
    pytest benchmarks/test_dcgan.py --benchmark-group-by=group --benchmark-columns=min,median,rounds

The cases and their work are `pyai.bench.conv_cases` and `pyai.bench.dcgan_step_case`. A shared
machine is noisy: compare only within a run.
"""

import numpy as np
import pytest

from pyai import bench
from pyai.models import DCGAN

PEERS = bench.installed_peers()


def step_case(rng):
    case = bench.dcgan_step_case(rng, PEERS)
    if PEERS["torch"]:
        import torch_twins

        torch_step = torch_twins.dcgan_step(DCGAN(seed=0))
        case.runners["torch"] = lambda: torch_step(*case.inputs)
    return case


CASES = bench.conv_cases(False, np.random.default_rng(0), PEERS) + [step_case(np.random.default_rng(1))]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
@pytest.mark.parametrize("peer", ["pyai", "tensorflow", "torch"])
def test_dcgan(benchmark, case, peer):
    if peer not in case.runners:
        pytest.skip(f"{peer} is not installed")
    benchmark.group = case.name
    benchmark.extra_info.update(work=case.work, unit=case.unit, peer=peer)
    benchmark.pedantic(case.runners[peer], rounds=10, warmup_rounds=2)


def main(repeats=10):
    limits = bench.CpuLimits.measure()
    print(f"best of {repeats}, peers interleaved; {bench.cpu_model()}, {limits.describe()}\n")
    peers = [name for name in ("tensorflow", "torch") if PEERS[name]]
    for line in bench.markdown_header(["case", "pyai ms", *(f"{name} ms" for name in peers),
                                       *(f"pyai / {name}" for name in peers), "pyai GFLOP/s (of peak)"]):
        print(line)
    for case in CASES:
        seconds = bench.best_times(case.runners, repeats)
        rate = case.work / seconds["pyai"] / 1e9
        print(bench.markdown_row([case.name, f"{seconds['pyai'] * 1e3:.2f}",
                                  *(f"{seconds[name] * 1e3:.2f}" for name in peers),
                                  *(f"{seconds[name] / seconds['pyai']:.2f}x" for name in peers),
                                  f"{rate:.1f} ({limits.fraction(rate, case.unit):.0%})"]), flush=True)
    print(f"\ntargets: conv layers {CASES[0].target}; the step {CASES[-1].target}")
    for line in bench.missing(PEERS).values():
        print(line)


if __name__ == "__main__":
    main()
