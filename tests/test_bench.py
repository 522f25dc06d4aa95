"""The benchmark's own arithmetic and measurements (not timings: those are no test's business)."""

import numpy as np
import pytest

from pyai import bench


def test_gan_floor_does_exactly_the_counted_work():
    case = bench.gan_step_case(np.random.default_rng(0), None)
    products = bench.gan_step_products([100, 256, 512, 1024, 784], [784, 512, 256, 1], 64)
    flops = sum(2.0 * a_rows * a_cols * b_cols for (a_rows, a_cols), (_, b_cols) in products)
    assert all(a_cols == b_rows for (_, a_cols), (b_rows, _) in products)
    assert flops == case.work == pytest.approx(1.199e9, rel=1e-3)


def test_resident_peak_sees_a_touched_allocation():
    peak = bench.resident_peak_bytes(lambda: np.ones(16 * 2**20, np.float32).sum())   # 64 MiB
    if peak is None:
        pytest.skip("this system has no /proc/self/clear_refs")
    assert 60 * 2**20 <= peak < 200 * 2**20


def test_fresh_process_peak_holds_the_unfused_score_matrix():
    # numpy's attention at T=512, 8 heads: an 8 MiB score matrix, and as much again for the
    # probabilities; pyai's flash attention keeps O(T) memory: well under one score matrix
    numpy_peak = bench.fresh_process_peak_bytes("numpy", 512, False, False)
    pyai_peak = bench.fresh_process_peak_bytes("pyai", 512, False, False)
    if numpy_peak is None:
        pytest.skip("this system has no /proc/self/clear_refs")
    assert numpy_peak >= 16 * 2**20
    assert pyai_peak < 8 * 2**20
