"""pytest-benchmark view of `pyai bench`: every case, every peer, grouped so that pyai sits beside
numpy and TensorFlow in one table.

    pytest benchmarks --benchmark-group-by=group --benchmark-columns=min,median,rounds

The work per call is in each result's extra_info (`work`, `unit`), so rates can be computed from
the saved JSON (--benchmark-json). `pyai bench` prints the same cases as rates and ratios.
"""

import pytest

from pyai import bench

CASES = bench.cases(quick=False)
PARAMS = [pytest.param(case, peer, id=f"{case.name} | {peer}")
          for case in CASES for peer in case.runners]


@pytest.mark.parametrize("case,peer", PARAMS)
def test_kernel(benchmark, case, peer):
    benchmark.group = case.name
    benchmark.extra_info.update(work=case.work, unit=case.unit, peer=peer)
    benchmark.pedantic(case.runners[peer], rounds=10, warmup_rounds=1)
