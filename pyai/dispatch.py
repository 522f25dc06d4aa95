"""The backend table: one row per backend, one column per op.

Every public op in `pyai.ops` validates its arguments once, then looks up the function that
implements it on the chosen backend here. A backend module (`pyai/_backends/<name>.py`) fills its
row with `@register(op, backend)` and says whether it can run on this machine with a probe that
returns None when usable, or the reason it is not.

Choosing a backend:
  - globally:        pyai.set_backend("numba-cpu")
  - for a block:     with pyai.use_backend("cuda"): ...
  - for one call:    pyai.ops.leaky_relu(x, backend="cuda")
The default is "numba-cpu", or the PYAI_BACKEND environment variable when set.
"""

import contextlib
import importlib
import os

BACKENDS = ("numba-cpu", "numba-cuda", "cuda")
_MODULES = {"numba-cpu": "numba_cpu", "numba-cuda": "numba_cuda", "cuda": "cuda"}
DEVICE_ARRAY_BACKENDS = ("numba-cuda", "cuda")   # rows whose ops take GPU arrays as well as numpy ones

_table = {}      # (op, backend) -> function
_probes = {}     # backend -> function() -> None | reason string
_loaded = set()
_current = [os.environ.get("PYAI_BACKEND", "numba-cpu")]


class BackendUnavailableError(RuntimeError):
    """The backend asked for cannot run on this machine (no GPU, extension not built, ...)."""


def register(op, backend):
    def decorate(function):
        _table[(op, backend)] = function
        return function
    return decorate


def register_probe(backend):
    def decorate(function):
        _probes[backend] = function
        return function
    return decorate


def _check_name(name):
    if name not in BACKENDS:
        raise ValueError(f"backend: unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")


def _load(backend):
    if backend not in _loaded:
        importlib.import_module(f"pyai._backends.{_MODULES[backend]}")
        _loaded.add(backend)


def unavailable_reason(backend):
    """None when `backend` can run here, else a sentence saying why not."""
    _check_name(backend)
    _load(backend)
    return _probes[backend]()


def implementation(op, backend=None):
    """The function implementing `op` on `backend` (default: the current backend)."""
    backend = backend or _current[0]
    _check_name(backend)
    reason = unavailable_reason(backend)
    if reason is not None:
        raise BackendUnavailableError(f"backend {backend!r} is not usable here: {reason}")
    try:
        return _table[(op, backend)]
    except KeyError:
        raise NotImplementedError(f"op {op!r} is not implemented on backend {backend!r}") from None


def ops_of(backend):
    _load(backend)
    return sorted(op for op, name in _table if name == backend)


def backends():
    """Every backend with whether it is usable here and, if not, why."""
    rows = []
    for name in BACKENDS:
        reason = unavailable_reason(name)
        rows.append({"name": name, "usable": reason is None, "reason": reason, "ops": ops_of(name)})
    return rows


def get_backend():
    return _current[0]


def takes_device_arrays(backend=None):
    """Whether the ops of `backend` (default: the current one) accept arrays already on the GPU
    (pyai.checks lets them through) rather than numpy arrays only."""
    return (backend or _current[0]) in DEVICE_ARRAY_BACKENDS


def set_backend(name):
    """Choose the backend every op uses from now on (unless a call names its own)."""
    _check_name(name)
    _current[0] = name


@contextlib.contextmanager
def use_backend(name):
    """Choose the backend for the ops inside a `with` block."""
    _check_name(name)
    previous = _current[0]
    _current[0] = name
    try:
        yield
    finally:
        _current[0] = previous
