"""Shared test harness: the backend fixture, fresh random inputs, and one way to compare arrays.

Tolerances are relative, ||out - ref|| / ||ref||, stated once per test with the reason.
Every test that takes `backend` runs once per backend usable on this machine, so a backend that
fills its row of the dispatch table joins the same tests.
"""

import numpy as np
import pytest

import pyai
from pyai import dispatch

USABLE_BACKENDS = [row["name"] for row in pyai.backends() if row["usable"]]


@pytest.fixture(params=USABLE_BACKENDS)
def backend(request):
    with pyai.use_backend(request.param):
        yield request.param


def require(op, backend):
    """Skip (with the reason) where a usable backend has not implemented `op` yet."""
    if op not in dispatch.ops_of(backend):
        pytest.skip(f"op {op!r} is not implemented on backend {backend!r}")


@pytest.fixture
def rng(request):
    """A generator with a fresh seed each run; the seed is printed when the test fails."""
    seed = np.random.SeedSequence().entropy % (2**32)
    request.node.user_properties.append(("seed", seed))
    print(f"random seed: {seed}")
    return np.random.default_rng(seed)


def relative_error(out, ref):
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, f"shape {out.shape} != reference shape {ref.shape}"
    assert np.all(np.isfinite(out)), "output has NaN or infinity"
    norm = np.linalg.norm(ref)
    return np.linalg.norm(out - ref) / (norm if norm > 0 else 1.0)


def assert_close(name, out, ref, tol):
    """Fail with which tensor, how far off and the tolerance; NaN never passes."""
    error = relative_error(out, ref)
    assert error <= tol, f"{name}: relative error {error:.3e} > tolerance {tol:.1e}"
