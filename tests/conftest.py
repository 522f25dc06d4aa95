"""Shared test harness: the backend fixture, fresh random inputs, and one way to compare arrays.

Tolerances are relative, ||out - ref|| / ||ref||, stated once per test with the reason.
Every test that takes `backend` runs once per backend usable on this machine, so a backend that
fills its row of the dispatch table joins the same tests.
"""

import ctypes.util
import os


def no_nvidia_driver():
    return not os.path.exists("/proc/driver/nvidia") and ctypes.util.find_library("cuda") is None


# Without a GPU the numba-cuda backend runs under numba's CUDA simulator (GPU threads as Python
# threads), which must be chosen before numba is imported. PYAI_NO_CUDASIM=1 turns this off.
if os.environ.get("PYAI_NO_CUDASIM") != "1" and no_nvidia_driver():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numba  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import pyai  # noqa: E402
from pyai import dispatch  # noqa: E402

pytest_plugins = ("cuda_emu.fixtures",)   # the emulated CUDA build's `kernels` and `order`

USABLE_BACKENDS = [row["name"] for row in pyai.backends() if row["usable"]]
CUDA_SIMULATOR = bool(numba.config.ENABLE_CUDASIM)


def pytest_collection_modifyitems(items):
    """Tests marked `long` (minutes each) run first: pytest-xdist hands tests to its workers in
    this order, and one started last would leave the other workers idle while it runs."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def skip_in_cuda_simulator(backend, what):
    """The simulator runs a GPU thread as a Python thread, ~1e5 times slower than a GPU: sizes
    past one or two thread blocks' worth take minutes there. They run on a GPU."""
    if backend == "numba-cuda" and CUDA_SIMULATOR:
        pytest.skip(f"{what}: too large for the CUDA simulator; runs on a GPU")


@pytest.fixture(params=USABLE_BACKENDS)
def backend(request):
    reason = dispatch.unavailable_reason(request.param)
    if reason is not None:   # usable when the session started: lost since (a CUDA kernel fault is sticky)
        pytest.fail(f"backend {request.param!r} became unusable during the tests: {reason}")
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
