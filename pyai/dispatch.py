"""The backend table: one row per backend, one column per op.

Every public op in `pyai.ops` validates its arguments once, then looks up the function that
implements it on the chosen backend here. A backend is one module, `pyai/_backends/<name>.py`
(the backend "numba-cpu" is `numba_cpu.py`), found by its file name and imported on first use.
It defines three things:
  ROW                  {op name: function}, the ops it implements (a missing op is
                       NotImplementedError on that backend, never a silent fallback);
  probe()              None when the backend can run on this machine, else the reason it cannot;
  TAKES_DEVICE_ARRAYS  whether its ops accept arrays already on a GPU as well as numpy ones.
  TAKES_BFLOAT16       (optional, default False) whether matmul and linear take bfloat16 operands.
A row may be a `LazyRow`, which imports each kernel file on the first use of one of its ops:
importing a Numba kernel file compiles it (or loads it from Numba's cache), so a program compiles
only the kernels it uses, and asking which backends run here compiles none. While a file compiles
elsewhere, a file of the same functions may stand in for it (see `LazyRow`).

Choosing a backend:
  - for the process:  pyai.set_backend("numba-cpu")   (the default: "numba-cpu", or the
                      PYAI_BACKEND environment variable when set)
  - for a block:      with pyai.use_backend("cuda"): ...
  - for one call:     pyai.ops.leaky_relu(x, backend="cuda")
A block or call choice is context-local (a `contextvars.ContextVar`): it holds in the thread or
asyncio task that made it and never changes the backend of another one.
"""

import contextlib
import contextvars
import importlib
import os
import pkgutil
from collections.abc import Mapping

import pyai._backends

DEFAULT = "numba-cpu"
BACKENDS = tuple(sorted((module.name.replace("_", "-") for module in
                         pkgutil.iter_modules(pyai._backends.__path__)),
                        key=lambda name: (name != DEFAULT, name)))

_process_backend = [os.environ.get("PYAI_BACKEND", DEFAULT)]
_context_backend = contextvars.ContextVar("pyai_backend", default=None)


class LazyRow(Mapping):
    """{op: function} from {op: (kernel file in `package`, function name)}, each file imported on
    the first lookup of one of its ops; wrap(op, function) makes the row's function of it, and
    before_import(file), when given, runs before a file is first imported. It returns None, or
    the name of a file of the same functions to import in its place for now (a stand-in, while
    `file` compiles in another process): then it is asked again at each lookup of the op, until
    it returns None and `file` itself is imported."""

    def __init__(self, package, kernels, wrap=lambda op, function: function, before_import=None):
        self.package, self.kernels, self.wrap, self.before_import = package, kernels, wrap, before_import
        self.loaded, self.standing_in = {}, set()

    def __getitem__(self, op):
        if op not in self.loaded or op in self.standing_in:
            file, function = self.kernels[op]
            stand_in = self.before_import(file) if self.before_import is not None else None
            if stand_in is not None and op in self.standing_in:
                return self.loaded[op]
            module = importlib.import_module(f"{self.package}.{stand_in or file}")
            self.loaded[op] = self.wrap(op, getattr(module, function))
            if stand_in is None:
                self.standing_in.discard(op)
            else:
                self.standing_in.add(op)
        return self.loaded[op]

    def __contains__(self, op):
        return op in self.kernels   # without importing its file, as Mapping's would

    def __iter__(self):
        return iter(self.kernels)

    def __len__(self):
        return len(self.kernels)


class BackendUnavailableError(RuntimeError):
    """The backend asked for cannot run on this machine (no GPU, extension not built, ...)."""


def _check_name(name):
    if name not in BACKENDS:
        raise ValueError(f"backend: unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")


_MODULES = {}   # backend name -> its module, imported once: an op's dispatch is on every call's path


def _module(backend):
    module = _MODULES.get(backend)
    if module is None:
        _check_name(backend)
        module = _MODULES[backend] = importlib.import_module(f"pyai._backends.{backend.replace('-', '_')}")
    return module


def unavailable_reason(backend):
    """None when `backend` can run here, else a sentence saying why not."""
    return _module(backend).probe()


def implementation(op, backend=None):
    """The function implementing `op` on `backend` (default: the current backend). Every op asks,
    in as few Python steps as it can: right after a kernel each costs about a microsecond."""
    backend = backend or _context_backend.get() or _process_backend[0]
    module = _MODULES.get(backend) or _module(backend)
    reason = module.probe()
    if reason is not None:
        raise BackendUnavailableError(f"backend {backend!r} is not usable here: {reason}")
    try:
        return module.ROW[op]
    except KeyError:
        raise NotImplementedError(f"op {op!r} is not implemented on backend {backend!r}") from None


def ops_of(backend):
    return sorted(_module(backend).ROW)


def implements(op, backend=None):
    """Whether `backend` (default: the current one) has `op`."""
    return op in _module(backend or get_backend()).ROW


def backends():
    """Every backend with whether it is usable here and, if not, why."""
    rows = []
    for name in BACKENDS:
        reason = unavailable_reason(name)
        rows.append({"name": name, "usable": reason is None, "reason": reason, "ops": ops_of(name)})
    return rows


def get_backend():
    """The backend ops use now: the block's or call's choice, else the process's."""
    return _context_backend.get() or _process_backend[0]


def takes_device_arrays(backend=None):
    """Whether the ops of `backend` (default: the current one) accept arrays already on the GPU
    (pyai.checks lets them through) rather than numpy arrays only."""
    return _module(backend or get_backend()).TAKES_DEVICE_ARRAYS


def takes_bfloat16(backend=None):
    """Whether `backend` (default: the current one) computes matmul and linear on bfloat16
    operands (its module's TAKES_BFLOAT16; False where it has none)."""
    return getattr(_module(backend or get_backend()), "TAKES_BFLOAT16", False)


def takes_bfloat16_attention(backend=None):
    """Whether `backend`'s attention takes bfloat16 q, k, v (numpy arrays of ml_dtypes.bfloat16)."""
    return getattr(_module(backend or get_backend()), "TAKES_BFLOAT16_ATTENTION", False)


def set_backend(name):
    """Choose the backend every op uses from now on, in every thread (unless a block or a call
    names its own)."""
    _check_name(name)
    _process_backend[0] = name


@contextlib.contextmanager
def use_backend(name):
    """Choose the backend for the ops inside a `with` block, in this thread or task only."""
    _check_name(name)
    token = _context_backend.set(name)
    try:
        yield
    finally:
        _context_backend.reset(token)
