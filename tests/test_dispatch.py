"""Choosing a backend: the table, its report, and the global, block and per-call choices."""

import threading

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
    assert dispatch.BACKENDS[0] == "numba-cpu"   # the default first, then the others by name
    with pytest.raises(ValueError, match=f"unknown backend 'gpu'; expected one of {', '.join(dispatch.BACKENDS)}$"):
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


def test_every_op_of_every_row_is_a_public_op():
    reached_by_keyword = {"binary_crossentropy_logits", "binary_crossentropy_logits_grad",  # from_logits=True
                          "gelu_with_derivative", "matmul_times",   # return_derivative=True, times=
                          "linear_with_gelu_derivative",            # linear's return_derivative=True
                          "matmul_leaky_relu_grad",                 # leaky_relu_output=
                          "layer_norm_grad_residual"}               # residual=
    for name in dispatch.BACKENDS:
        missing = [op for op in dispatch.ops_of(name)
                   if not callable(getattr(pyai.ops, op, None)) and op not in reached_by_keyword]
        assert not missing, f"{name} implements ops that pyai.ops does not offer: {missing}"


def test_an_op_missing_from_a_backend_row_is_not_implemented_error(monkeypatch):
    from pyai._backends import numba_cuda
    monkeypatch.setattr(numba_cuda, "probe", lambda: None)
    with pytest.raises(NotImplementedError, match="'relu' is not implemented on backend 'numba-cuda'"):
        dispatch.implementation("relu", "numba-cuda")


def test_a_block_choice_holds_in_its_own_thread_only(rng):
    """use_backend in one thread leaves the others on the process's backend: their plain calls
    keep working while the block is open on an unusable backend."""
    start = pyai.get_backend()
    x = rng.standard_normal(64).astype(np.float32)
    expected = pyai.ops.leaky_relu(x, 0.1)
    inside, outside = threading.Barrier(2), threading.Barrier(2)
    seen = {}

    def block():
        with pyai.use_backend("cuda"):
            inside.wait()
            outside.wait()       # the other thread works while this block is open
            seen["block"] = pyai.get_backend()

    def plain_calls():
        inside.wait()
        seen["other"] = pyai.get_backend()
        seen["results"] = [pyai.ops.leaky_relu(x, 0.1) for _ in range(200)]
        outside.wait()

    threads = [threading.Thread(target=block), threading.Thread(target=plain_calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert seen["block"] == "cuda" and seen["other"] == start
    for result in seen["results"]:
        np.testing.assert_array_equal(result, expected)
    assert pyai.get_backend() == start


def test_per_call_choices_in_many_threads_never_leak(rng):
    """Threads naming backends per call, mixed with plain calls: every plain call runs on the
    process's backend (an unusable backend leaking in would raise)."""
    x = rng.standard_normal(32).astype(np.float32)
    expected = pyai.ops.relu(x)
    unusable = [row["name"] for row in pyai.backends() if not row["usable"]]
    errors = []

    def work(index):
        try:
            for _ in range(100):
                if unusable and index % 2:
                    with pytest.raises(pyai.BackendUnavailableError):
                        pyai.ops.relu(x, backend=unusable[0])
                np.testing.assert_array_equal(pyai.ops.relu(x), expected)
        except Exception as error:   # collected: an assertion in a thread would be lost
            errors.append(error)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:3]
