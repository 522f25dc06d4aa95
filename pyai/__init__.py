"""pyai: hand-written compiled kernels for deep learning, validated against TensorFlow.

    import pyai
    y = pyai.ops.linear(x, w, b, activation="leaky_relu")
    pyai.backends()              # which backends run here, and why not
    pyai.set_backend("numba-cpu")
    pyai.threading_layer()       # which threads run the numba-cpu kernels
"""

from pyai import threads   # first: it loads libtbb before a program can start Numba's threads
from pyai.dispatch import BackendUnavailableError, backends, get_backend, set_backend, use_backend
from pyai import checkpoint, data, losses, models, nn, ops, optim, training

__version__ = "0.1.0"


def threading_layer():
    """The layer Numba's threads run the numba-cpu kernels on: 'tbb' (thread- and fork-safe, the
    one pyai picks), 'omp' or 'workqueue' (see `pyai.threads`)."""
    return threads.layer()

__all__ = ["BackendUnavailableError", "backends", "get_backend", "set_backend", "use_backend",
           "checkpoint", "data", "losses", "models", "nn", "ops", "optim", "threading_layer", "training"]
