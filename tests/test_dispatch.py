"""Choosing a backend: the table, its report, and the global, block and per-call choices."""

import numpy as np
import pytest

import pyai
from pyai import dispatch


def test_backends_reports_every_backend_with_a_reason_when_unusable():
    rows = {row["name"]: row for row in pyai.backends()}
    assert set(rows) == {"numba-cpu", "numba-cuda", "cuda"}
    assert rows["numba-cpu"]["usable"] and rows["numba-cpu"]["reason"] is None
    assert {"matmul", "linear", "leaky_relu", "leaky_relu_grad", "adam_update"} <= set(
        rows["numba-cpu"]["ops"])
    for row in rows.values():
        assert row["usable"] == (row["reason"] is None)
        if not row["usable"]:
            assert isinstance(row["reason"], str) and len(row["reason"]) > 10


def test_set_backend_and_use_backend_restore_the_previous_choice():
    start = pyai.get_backend()
    with pyai.use_backend("cuda"):
        assert pyai.get_backend() == "cuda"
        with pyai.use_backend("numba-cpu"):
            assert pyai.get_backend() == "numba-cpu"
        assert pyai.get_backend() == "cuda"
    assert pyai.get_backend() == start
    pyai.set_backend("numba-cuda")
    try:
        assert pyai.get_backend() == "numba-cuda"
    finally:
        pyai.set_backend(start)


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match="unknown backend 'gpu'.*numba-cpu, numba-cuda, cuda"):
        pyai.set_backend("gpu")
    with pytest.raises(ValueError, match="unknown backend"):
        with pyai.use_backend("gpu"):
            pass


def test_per_call_backend_overrides_the_current_one(rng):
    x = rng.standard_normal(10).astype(np.float32)
    with pyai.use_backend("cuda"):
        y = pyai.ops.leaky_relu(x, 0.1, backend="numba-cpu")
    np.testing.assert_allclose(y, np.where(x > 0, x, np.float32(0.1) * x), rtol=1e-7)


@pytest.mark.parametrize("name", ["numba-cuda", "cuda"])
def test_an_unusable_backend_raises_with_its_reason(rng, name):
    reason = dispatch.unavailable_reason(name)
    if reason is None:
        pytest.skip(f"{name} is usable on this machine")
    x = rng.standard_normal(4).astype(np.float32)
    with pytest.raises(pyai.BackendUnavailableError, match="is not usable here") as error:
        pyai.ops.leaky_relu(x, backend=name)
    assert reason in str(error.value)


def test_an_op_missing_from_a_backend_row_is_not_implemented_error(monkeypatch):
    monkeypatch.setitem(dispatch._probes, "numba-cuda", lambda: None)
    with pytest.raises(NotImplementedError, match="'relu' is not implemented on backend 'numba-cuda'"):
        dispatch.implementation("relu", "numba-cuda")
