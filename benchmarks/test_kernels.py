"""pytest-benchmark view of `pyai bench`: every case, every peer (numpy, TensorFlow, PyTorch),
grouped so that pyai sits beside its peers in one table.

    pytest benchmarks/test_kernels.py --benchmark-group-by=group --benchmark-columns=min,median,rounds

The work per call is in each result's extra_info (`work`, `unit`), so rates can be computed from
the saved JSON (--benchmark-json). `pyai bench` prints the same cases as rates, ratios and
fractions of the machine's measured limits. A peer that is not installed is one skipped test.
"""

import pytest

from pyai import bench

PEERS = bench.installed_peers()
CASES = bench.cases(quick=False, peers=PEERS)
PARAMS = [pytest.param(case, peer, id=f"{case.name} | {peer}")
          for case in CASES for peer in case.runners] + bench.skipped_params(PEERS, pytest, before=(None,))


@pytest.mark.parametrize("case,peer", PARAMS)
def test_kernel(benchmark, case, peer):
    benchmark.group = case.name
    benchmark.extra_info.update(work=case.work, unit=case.unit, peer=peer)
    benchmark.pedantic(case.runners[peer], rounds=10, warmup_rounds=1)

