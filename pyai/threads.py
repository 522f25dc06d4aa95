"""Which threads run the numba-cpu kernels: a layer that is both thread-safe and fork-safe.

Numba runs `prange` loops on one of three threading layers, chosen once per process at the first
parallel call (NUMBA_THREADING_LAYER, default: the first of tbb, omp, workqueue that loads):
  tbb        thread-safe and fork-safe (Numba's "safe" layer): what pyai wants;
  omp        thread-safe; with GNU OpenMP a process forked after the threads started (os.fork,
             multiprocessing's "fork") is killed by Numba at its first parallel call;
  workqueue  fork-safe, but two Python threads inside parallel kernels at once abort the process.

TBB comes from the `tbb` wheel (a pyai dependency), which puts libtbb in `<prefix>/lib`, off the
loader's path, so Numba cannot find it by itself: `import pyai` loads it (RTLD_GLOBAL,
`make_tbb_loadable`), so that Numba's default order picks tbb whenever its threads start: at
pyai's first kernel (`choose()` starts them), or earlier, where a program starts them itself
(numba.set_num_threads, a parallel function of its own). Loaded only by that first kernel, as
before, a program that set the thread count first had run on GNU OpenMP, with the fork warning
below, or, asking for NUMBA_THREADING_LAYER=tbb, stopped at "No threading layer could be
loaded". The choice is process-wide, so a user's own choice wins: with NUMBA_THREADING_LAYER set
(or numba.config changed, or Numba's threads started before `import pyai`) that layer is kept,
and one that is not fork-safe is warned about once. Whatever the layer, pyai never lands on an
unsafe path silently:
  - GNU OpenMP: a forked child's numba-cpu backend reports itself unusable (`fork_problem()`,
    which the backend's probe returns), so its first op raises a clear error instead of dying;
  - workqueue: `serialize` makes the kernels take one lock, so concurrent callers wait their turn.
"""

import ctypes
import importlib.metadata
import os
import sys
import sysconfig
import threading
import warnings

import numba
from numba.np.ufunc import parallel

TBB_LIBRARY = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib", "win32": "tbb12.dll"}.get(
    sys.platform, "libtbb.so.12")

_state = {"layer": None, "why_not_tbb": None, "tbb_tried": False, "forked_child": False}
_workqueue_lock = threading.Lock()


def tbb_candidates():
    """Where the tbb wheel may have put its library: the environment's lib folder (sys.prefix and
    sysconfig's data path, which differ for --user and some venv layouts) and the wheel's own
    file list."""
    folders = [os.path.join(sys.prefix, "lib"), os.path.join(sys.prefix, "Library", "bin"),
               os.path.join(sysconfig.get_paths()["data"], "lib")]
    paths = [os.path.join(folder, TBB_LIBRARY) for folder in folders]
    try:
        files = importlib.metadata.files("tbb") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    paths += [str(file.locate()) for file in files if file.name == TBB_LIBRARY]
    return list(dict.fromkeys(os.path.abspath(path) for path in paths))


def load_tbb():
    """Load libtbb globally so Numba's tbb layer can link to it; None, or why it could not."""
    errors = []
    for path in tbb_candidates():
        if os.path.isfile(path):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                return None
            except OSError as error:
                errors.append(str(error))
    try:   # a system-wide TBB on the loader's path
        ctypes.CDLL(TBB_LIBRARY, mode=ctypes.RTLD_GLOBAL)
        return None
    except OSError as error:
        errors.append(str(error))
    return f"{TBB_LIBRARY} could not be loaded (pip install tbb): " + "; ".join(errors)


def make_tbb_loadable():
    """Load libtbb (load_tbb), once, unless Numba's threads have started (then the layer is chosen
    and loading it changes nothing): Numba's threads, whenever they start, can then run on tbb."""
    if not _state["tbb_tried"] and not parallel._is_initialized:
        _state["why_not_tbb"] = load_tbb()
        _state["tbb_tried"] = True


def user_chose_layer():
    return (os.environ.get("NUMBA_THREADING_LAYER") is not None
            or str(numba.config.THREADING_LAYER).lower() != "default"
            or parallel._is_initialized)


def gnu_openmp():
    from numba.np.ufunc import omppool
    return getattr(omppool, "openmp_vendor", "GNU") == "GNU"


def choose():
    """Start Numba's threads on a fork- and thread-safe layer unless the user chose one; once."""
    if _state["layer"] is not None:
        return
    chosen_by_user = user_chose_layer()
    make_tbb_loadable()   # where `import pyai` could not (loading TBB chooses nothing by itself)
    parallel._launch_threads()
    layer = numba.threading_layer()
    _state["layer"] = layer
    origin = ("the layer chosen before pyai was imported" if chosen_by_user
              else f"pyai's fallback: {_state['why_not_tbb']}")
    if layer == "omp" and gnu_openmp():
        os.register_at_fork(after_in_child=_mark_forked_child)
        warn(f"numba's threading layer is GNU OpenMP ({origin}): a process forked from this one "
             f"(os.fork, multiprocessing's 'fork') cannot run numba-cpu ops; use the 'spawn' or "
             f"'forkserver' start method, or the tbb layer")
    elif layer == "workqueue":
        warn(f"numba's threading layer is workqueue ({origin}), which is not thread-safe: pyai "
             f"runs its numba-cpu kernels one call at a time; install tbb for parallel callers")


def warn(message):
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _mark_forked_child():
    _state["forked_child"] = True


def layer():
    """The threading layer the numba-cpu kernels run on: 'tbb', 'omp' or 'workqueue'."""
    choose()
    return _state["layer"]


def fork_problem():
    """None, or why this process (a child forked after GNU OpenMP started) cannot run the kernels."""
    if not _state["forked_child"]:
        return None
    return ("this process was forked after numba's GNU OpenMP threads started in its parent, and "
            "GNU OpenMP cannot run in a forked child (numba would kill it); start workers with "
            "multiprocessing's 'spawn' or 'forkserver' method, or install tbb (pip install tbb)")


def serialize(function):
    """The kernel as is on a thread-safe layer; under workqueue, behind one lock."""
    if layer() != "workqueue":
        return function

    def call(*args, **kwargs):
        with _workqueue_lock:
            return function(*args, **kwargs)
    call.__name__, call.__doc__ = function.__name__, function.__doc__
    return call


make_tbb_loadable()   # on import (`import pyai` imports this first)
