"""The benchmark's own arithmetic and measurements (not timings: those are no test's business)."""

import datetime
import importlib
import time

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


def test_fma_kernel_issues_the_fmas_it_counts():
    # with multiplier 1 and addend 1 every FMA adds 1 to one lane of one accumulator, so the
    # kernel's output sums to the number of FMAs it issued; fma_flops counts 2 FLOPs for each
    threads, iterations = 3, 50
    out = np.zeros((threads, bench.peaks.WIDTH), np.float32)
    bench.fma_chains(out, iterations, np.float32(1), np.float32(1))
    assert np.all(out == bench.peaks.ACCUMULATORS * iterations)
    assert bench.fma_flops(threads, iterations) == 2 * out.sum()


def test_fma_peak_is_a_positive_finite_rate():
    rate = bench.fma_peak(1, iterations=1000, repeats=2, min_seconds=0)
    assert np.isfinite(rate) and rate > 0


def test_copy_bandwidth_is_a_positive_finite_rate():
    rate = bench.copy_bandwidth(floats=2**16, repeats=2, min_seconds=0)
    assert np.isfinite(rate) and rate > 0


def test_a_limit_outlasts_a_slow_start():
    """The limits are the best over at least min_seconds, so a slow first spell (threads not yet
    all running) is outlasted, where the best of `repeats` calls alone would keep it."""
    calls = []

    def slow_then_fast():
        calls.append(None)
        time.sleep(0.02 if len(calls) <= 4 else 0.001)

    assert bench.timing.best_time(slow_then_fast, repeats=2) >= 0.02
    calls.clear()
    assert bench.timing.best_time(slow_then_fast, repeats=2, min_seconds=0.2) < 0.01


def test_a_missing_peer_is_left_out_with_one_line(monkeypatch):
    real_import = importlib.import_module

    def import_without_torch(name, *args):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", import_without_torch)
    peers = bench.installed_peers(("torch",))
    assert peers == {"torch": None}
    assert list(bench.missing(peers).values()) == [
        "torch is not installed, so it is not a peer here: pip install torch"]
    case = bench.matmul_case(8, np.random.default_rng(0), peers)
    assert set(case.runners) == {"pyai", "numpy"}
    [param] = bench.skipped_params(peers, pytest, before=(None,))
    assert param.values == (None, "torch") and "not installed" in param.marks[0].kwargs["reason"]


def test_results_file_names_the_cpu_isa_cores_and_date(tmp_path, capsys):
    case = bench.Case("matmul 8^3", 1024.0, "GFLOP/s", {"pyai": None, "numpy": None})
    seconds = {"pyai": 1e-6, "numpy": 2e-6}   # 1.024 and 0.512 GFLOP/s
    limits = bench.CpuLimits(threads=2, fma_peak_one_core=100.0, fma_peak=200.0, copy_bandwidth=10.0)
    lines = [*bench.report.header("pyai bench", {}, limits, "a test"),
             *bench.markdown_header(["case", "unit", "pyai", "numpy", "floor", "pyai / best peer", "notes"]),
             bench.report.case_row(case, seconds, limits, ["numpy"])]
    path = bench.report.emit(lines, tmp_path, "cpu")
    text = path.read_text()
    today = datetime.date.today().isoformat()
    assert path.name == f"cpu-{today}.md"
    assert bench.cpu_model() in text and today in text and bench.isa() in text
    assert f"{bench.cpu_cores()[0]} cores" in text
    assert "| matmul 8^3 | GFLOP/s | 1.0 (1%) | 0.5 (0%) | - | 2.00x numpy |" in text
    assert f"wrote {path}" in capsys.readouterr().out


def test_attention_inside_the_frameworks_does_the_same_work_in_both_columns():
    """pyai's kernels through pyai.torch and pyai.keras, and each framework's own attention, give
    the same gradients (to float32 rounding: relative error 1e-5), so the two columns compare
    like with like."""
    peers = {"torch": pytest.importorskip("torch"), "tensorflow": pytest.importorskip("tensorflow")}
    cases = bench.framework_attention_cases(16, np.random.default_rng(0), peers, heads=2, depth=8)
    assert [case.name.split()[-2] for case in cases] == ["PyTorch", "Keras"]
    for case, peer in zip(cases, ["torch", "tensorflow"]):
        ours, theirs = case.runners["pyai"](), case.runners[peer]()
        for name, out, ref in zip(["dq", "dk", "dv"], ours, theirs, strict=True):
            out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
            error = np.linalg.norm(out - ref) / np.linalg.norm(ref)
            assert error < 1e-5, f"{case.name}: {name} relative error {error:.2e}"


def test_dcgan_layer_flops_count_each_window_once():
    from pyai.models import DCGAN

    gan = DCGAN()
    generator = bench.layer_flops(gan.generator, (100,))
    discriminator = bench.layer_flops(gan.discriminator, (784,))
    # Dense 100->256->6272, ConvT 7x7 inputs x 4x4 x 128->64, ConvT 14x14 x 4x4 x 64->32, Conv 28x28 x 3x3 x 32->1
    assert generator == [2 * 100 * 256, 2 * 256 * 6272, 0, 2 * 49 * 16 * 128 * 64, 2 * 196 * 16 * 64 * 32,
                         2 * 784 * 9 * 32, 0]
    # Conv 14x14 outputs x 3x3 x 1->64, Conv 7x7 x 3x3 x 64->128, Dense 6272->1
    assert discriminator == [0, 2 * 196 * 9 * 64, 2 * 49 * 9 * 64 * 128, 0, 2 * 6272]


def step_profile():
    """benchmarks/step_profile.py, which is a script, not a module of the package."""
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "step_profile.py"
    spec = importlib.util.spec_from_file_location("step_profile", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_profile_counts_each_kernel_call_of_a_step_by_op_and_shapes():
    from pyai import dispatch, ops
    profile = step_profile()
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((5, 7), dtype=np.float32), rng.standard_normal((7, 3), dtype=np.float32)
    w, bias = rng.standard_normal((7, 11), dtype=np.float32), rng.standard_normal(11, dtype=np.float32)
    original = dispatch.implementation
    profiler, best, median = profile.profile(lambda: (ops.matmul(a, b), ops.matmul(a, b), ops.linear(a, w, bias)),
                                             steps=3, again=2, warmups=1)
    assert dispatch.implementation is original and ops.implementation is original
    in_step, kernels = profiler.median(False)
    again, _ = profiler.median(True)
    assert set(in_step) == set(again) == {("matmul", "5x7 7x3"), ("linear", "5x7 7x11 11")}
    assert profiler.calls[("matmul", "5x7 7x3")] == 6 and profiler.calls[("linear", "5x7 7x11 11")] == 3
    assert all(seconds > 0 for seconds in [*in_step.values(), *again.values()])
    assert kernels > 0 and 0 < best <= median


def test_step_profile_times_a_kernel_called_inside_another_only_once():
    profile = step_profile()
    profiler = profile.Profiler()
    profiler.recording = True
    inner = lambda: time.sleep(0.2)   # noqa: E731
    outer = lambda x: (time.sleep(0.05), profiler.call("inner", inner, (), {}))   # noqa: E731
    profiler.call("outer", outer, (np.ones((2, 3)),), {})
    profiler.end_step()
    seconds, total = profiler.median(False)
    assert seconds[("inner", "")] >= 0.2 and 0.05 <= seconds[("outer", "2x3")] < 0.2
    assert total == pytest.approx(seconds[("inner", "")] + seconds[("outer", "2x3")])
