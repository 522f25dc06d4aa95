"""Optimizers with Keras semantics: `step(model)` updates every parameter in place.

`model` is anything with `parameters()` and `gradients()` (see `pyai.nn`), after its backward.
An optimizer's state, for checkpoints, is `state() -> {name: array}` and `load_state(arrays)`.

A model with a flat buffer (`model.flat`, `pyai.nn.flat`) is stepped in one fused pass over the
whole buffer, Adam's moments being flat buffers too; before it, under mpiexec, the flat gradients
are averaged over every process (`pyai.distributed`), so every process takes the same step.
"""

import numpy as np

from pyai import distributed, ops
from pyai.checks import real_number
from pyai.nn.flat import aligned_zeros


def parameters_and_gradients(model):
    """(name, parameter, gradient) for every parameter, or a clear error where backward is missing."""
    triples = []
    for (name, parameter), (_, grad) in zip(model.parameters(), model.gradients(), strict=True):
        if grad is None:
            raise RuntimeError(f"parameter {name!r} has no gradient: call backward before step")
        triples.append((name, parameter, grad))
    return triples


def flat_gradients(model):
    """model.flat after backward, its gradient buffer averaged over the processes; None for a
    model without one (whose gradients a data-parallel run cannot average)."""
    parameters_and_gradients(model)
    flat = getattr(model, "flat", None)
    if flat is None:
        if distributed.world().size > 1:
            raise RuntimeError(f"{type(model).__name__}: data-parallel training needs a model with a flat "
                               f"parameter buffer (model.flat = pyai.nn.FlatParameters(model))")
        return None
    flat.gather(model)
    distributed.world().average(flat.gradients)
    return flat


class SGD:
    """param -= lr * grad."""

    def __init__(self, lr=0.01):
        self.lr = real_number("lr", lr, low=0.0)

    def step(self, model):
        flat = flat_gradients(model)
        if flat is not None:
            ops.sgd_update(flat.parameters, flat.gradients, lr=self.lr)
            distributed.world().check_consistent(flat.parameters)
            return
        for _, parameter, grad in parameters_and_gradients(model):
            ops.sgd_update(parameter, grad, lr=self.lr)

    def state(self):
        return {}

    def load_state(self, arrays):
        if arrays:
            raise ValueError(f"SGD has no state, got {sorted(arrays)}")


class Adam:
    """Keras Adam: first and second moments m, v per parameter, bias-corrected by the step count."""

    def __init__(self, lr=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        self.lr = real_number("lr", lr, low=0.0)
        self.beta_1 = real_number("beta_1", beta_1, low=0.0, high=1.0)
        self.beta_2 = real_number("beta_2", beta_2, low=0.0, high=1.0)
        self.epsilon = real_number("epsilon", epsilon, low=0.0)
        if self.beta_1 == 1.0 or self.beta_2 == 1.0:
            raise ValueError("beta_1, beta_2: must be below 1 (the bias correction divides by 1 - beta^step)")
        self.steps = 0
        self.m = {}   # parameter name -> array like the parameter, created at its first step
        self.v = {}
        self.flat = None   # (model.flat, flat m, flat v): where m's and v's arrays are views

    def step(self, model):
        flat = flat_gradients(model)
        self.steps += 1
        if flat is not None:
            m, v = self.flat_moments(flat)
            ops.adam_update(flat.parameters, flat.gradients, m, v, step=self.steps, lr=self.lr,
                            beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
            distributed.world().check_consistent(flat.parameters)
            return
        for name, parameter, grad in parameters_and_gradients(model):
            if name not in self.m:
                self.m[name] = np.zeros_like(parameter)
                self.v[name] = np.zeros_like(parameter)
            ops.adam_update(parameter, grad, self.m[name], self.v[name], step=self.steps, lr=self.lr,
                            beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)

    def flat_moments(self, flat):
        """m and v as flat buffers laid out like `flat`, holding what m and v held; from then on
        the per-parameter arrays of m and v are views of them."""
        if self.flat is None or self.flat[0] is not flat:
            moments = []
            for slot in (self.m, self.v):
                buffer = aligned_zeros(flat.size)
                for name, view in zip(flat.names, flat.split(buffer)):
                    if name in slot:
                        view[...] = slot[name]
                    slot[name] = view
                moments.append(buffer)
            self.flat = (flat, *moments)
        return self.flat[1:]

    def state(self):
        arrays = {"steps": np.array(self.steps, dtype=np.int64)}
        arrays.update({f"m/{name}": m for name, m in self.m.items()})
        arrays.update({f"v/{name}": v for name, v in self.v.items()})
        return arrays

    def load_state(self, arrays):
        """Restore what `state()` returned: the step count and an m and a v for each parameter."""
        arrays = dict(arrays)
        steps = np.asarray(arrays.pop("steps", -1))
        if steps.ndim != 0 or steps.dtype.kind not in "iu" or steps < 0:
            raise ValueError("Adam state: expected 'steps', an integer >= 0")
        slots = {"m": {}, "v": {}}
        for key, array in arrays.items():
            slot, _, name = key.partition("/")
            if slot not in slots or not name:
                raise ValueError(f"Adam state: unexpected entry {key!r}")
            slots[slot][name] = np.array(array, dtype=np.float32)
        m, v = slots["m"], slots["v"]
        for name in m.keys() | v.keys():
            if name not in m or name not in v or m[name].shape != v[name].shape:
                raise ValueError(f"Adam state: parameter {name!r} needs an m and a v of the same shape")
        self.steps, self.m, self.v, self.flat = int(steps), m, v, None
