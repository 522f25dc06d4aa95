"""The peers pyai is timed against, each optional: a peer that is not installed is left out of
every table with one line saying so, never an error.

numpy (OpenBLAS) is always there; TensorFlow and PyTorch come with `pip install pyai[bench]`.
PyTorch is given as many threads as Numba has, so every peer runs on the same cores.
"""

import importlib
import os
import sys
import tempfile

import numba

OPTIONAL = {"tensorflow": "tensorflow-cpu", "torch": "torch"}   # module -> what pip installs


def load(name):
    """The module `name`, set up for benchmarking, or None if it is not installed."""
    try:
        module = import_quietly(name) if name == "tensorflow" else importlib.import_module(name)
    except ImportError:
        return None
    if name == "torch":
        avoid_two_openmp_runtimes()
        module.set_num_threads(numba.get_num_threads())
    return module


def import_quietly(name):
    """Import `name` without the start-up lines TensorFlow's C++ code writes to file descriptor 2
    (oneDNN and CPU-feature notices, before its logging is set up, so TF_CPP_MIN_LOG_LEVEL does
    not hold them all back): they are kept in a temporary file, and shown only if the import fails."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # and its later INFO and WARNING lines
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            return importlib.import_module(name)
        except BaseException:
            captured.seek(0)
            os.write(saved, captured.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def avoid_two_openmp_runtimes():
    """pyai's parallel kernels on Numba's OpenMP threading layer crash (SIGSEGV in
    attention_backward) once PyTorch's scaled_dot_product_attention backward has run in the same
    process: two OpenMP runtimes (seen with torch 2.13, numba 0.68). Numba's own workqueue layer
    does not, so a process that has torch as a peer uses it, unless Numba's threads have started
    already. The report names the layer."""
    from numba.np.ufunc import parallel

    if not parallel._is_initialized:
        numba.config.THREADING_LAYER = "workqueue"


def installed(names=tuple(OPTIONAL)):
    """{name: module or None} for the optional peers in `names`."""
    return {name: load(name) for name in names}


def missing(peers):
    """{name: one line saying so} for each optional peer in `peers` that is not installed."""
    return {name: f"{name} is not installed, so it is not a peer here: pip install {OPTIONAL[name]}"
            for name, module in peers.items() if module is None}


def skipped_params(peers, pytest, before=()):
    """One skipped pytest parameter per peer that is not installed, (*before, peer name), for a
    test parametrized over peers (with `before` in the places of any arguments ahead of the
    peer's): the run's summary then says which peer is missing and how to install it."""
    return [pytest.param(*before, name, id=f"{name} not installed", marks=pytest.mark.skip(reason=line))
            for name, line in missing(peers).items()]
