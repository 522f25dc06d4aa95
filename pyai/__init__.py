"""pyai: hand-written compiled kernels for deep learning, validated against TensorFlow.

    import pyai
    y = pyai.ops.linear(x, w, b, activation="leaky_relu")
    pyai.backends()              # which backends run here, and why not
    pyai.set_backend("numba-cpu")
"""

from pyai.dispatch import BackendUnavailableError, backends, get_backend, set_backend, use_backend
from pyai import checkpoint, data, losses, models, nn, ops, optim, training

__version__ = "0.1.0"
__all__ = ["BackendUnavailableError", "backends", "get_backend", "set_backend", "use_backend",
           "checkpoint", "data", "losses", "models", "nn", "ops", "optim", "training"]
