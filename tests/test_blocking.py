"""The matmul's cache blocking: derived from the L2 size, overridable by `pyai tune --save`, and
exact whatever it is (small blocks and panels here make every loop of the blocked path run many
times on small matrices)."""

import numpy as np
import pytest

from conftest import assert_close
from pyai.kernels.numba_cpu import blocking
from pyai.kernels.numba_cpu.matmul import fused_matmul, matmul_reference
from pyai.kernels.numba_cpu.matmul_micro import MR


@pytest.mark.parametrize("l2, mc, few_nc", [(2 << 20, 256 // MR * MR, 1024), (1 << 20, 128 // MR * MR, 512),
                                            (512 << 10, 64 // MR * MR, 256), (None, 128 // MR * MR, 512)])
def test_blocking_follows_the_l2_size(l2, mc, few_nc):
    """MC and the few-rows slice width follow L2; the blocked loop's panel is 2048 columns on any CPU."""
    assert blocking.derived(l2) == (mc, 2048)
    assert blocking.few_rows_columns(l2) == few_nc


def test_l2_size_is_read_from_sysfs(tmp_path):
    for index, (level, size) in enumerate([("1", "48K"), ("1", "64K"), ("2", "2048K"), ("3", "480M")]):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        (folder / "level").write_text(level + "\n")
        (folder / "size").write_text(size + "\n")
    assert blocking.l2_bytes(tmp_path) == 2 << 20
    assert blocking.l2_bytes(tmp_path / "missing") is None


def test_l1_ways_are_read_from_sysfs(tmp_path):
    for index, (level, kind, ways) in enumerate([("1", "Data", "12"), ("1", "Instruction", "8"), ("2", "Unified", "16")]):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        for name, value in (("level", level), ("type", kind), ("ways_of_associativity", ways)):
            (folder / name).write_text(value + "\n")
    assert blocking.l1_ways(tmp_path) == 12
    (tmp_path / "index0" / "ways_of_associativity").write_text("twelve\n")
    assert blocking.l1_ways(tmp_path) is None
    assert blocking.l1_ways(tmp_path / "missing") is None


def test_a_saved_choice_is_used_and_a_bad_file_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv("PYAI_CACHE_DIR", str(tmp_path))
    assert blocking.saved() is None
    blocking.save(2 * MR, 256)
    assert blocking.saved() == (2 * MR, 256)
    mc, nc, source = blocking.choose()
    assert (mc, nc) == (2 * MR, 256) and "pyai tune" in source
    for bad in ['{"mc": 7, "nc": 256}', '{"mc": 12}', "not json", '{"mc": -12, "nc": 256}']:
        blocking.saved_path().write_text(bad)
        assert blocking.saved() is None, bad


@pytest.mark.parametrize("mc, nc", [(MR, 128), (2 * MR, 256), (5 * MR, 384)])
@pytest.mark.parametrize("transpose_a, transpose_b", [(False, False), (True, True)])
def test_any_blocking_gives_the_same_product(rng, mc, nc, transpose_a, transpose_b):
    m, k, n = 157, 300, 413     # past FEW_ROWS, several slices (KC 256), blocks and panels
    a = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if transpose_b else (k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    out = fused_matmul(a, b, transpose_a, transpose_b, bias, "leaky_relu", 0.2, blocking=(mc, nc))
    ref = matmul_reference(a.T if transpose_a else a, b.T if transpose_b else b, bias, "leaky_relu", 0.2)
    assert_close(f"matmul with blocking ({mc}, {nc})", out, ref, 1e-5)


def test_tune_measures_the_candidates_and_saves_the_fastest(tmp_path, monkeypatch, capsys):
    from pyai.bench import tune
    monkeypatch.setenv("PYAI_CACHE_DIR", str(tmp_path))
    assert tune.candidates(4 * MR, 512) == [(4 * MR, 512), (2 * MR, 512), (8 * MR, 512), (4 * MR, 256),
                                            (4 * MR, 1024)]
    best, rates = tune.run(save=True, sizes=(200,), repeats=1)
    assert best in rates and all(rate > 0 and np.isfinite(rate) for rate in rates.values())
    assert blocking.saved() == best
    assert "blocking in use" in capsys.readouterr().out
