"""Optimizers with Keras semantics: `step(model)` updates every parameter in place.

`model` is anything with `parameters()` and `gradients()` (see `pyai.nn`), after its backward.
An optimizer's state, for checkpoints, is `state() -> {name: array}` and `load_state(arrays)`.

A model with a flat buffer (`model.flat`, `pyai.nn.flat`) is stepped in one fused pass over the
whole buffer, Adam's moments being flat buffers too; before it, under mpiexec, the flat gradients
are averaged over every process (`pyai.distributed`), so every process takes the same step.
"""

import functools

import numpy as np

from pyai import dispatch, distributed, ops
from pyai.checks import real_number
from pyai.nn.flat import LINE, aligned_zeros
from pyai.nn.layers import kernel_ready, weight_and_bias_gradient


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
    flat = getattr(model, "flat", None)
    if flat is None:
        parameters_and_gradients(model)
        if distributed.world().size > 1:
            raise RuntimeError(f"{type(model).__name__}: data-parallel training needs a model with a flat "
                               f"parameter buffer (model.flat = pyai.nn.FlatParameters(model))")
        return None
    flat.gather(model)
    distributed.world().average(flat.gradients)
    return flat


def backward_then_step(optimizer, model, dy, backward):
    """model.backward(dy, **backward), then optimizer.step(model); what backward returned."""
    result = model.backward(dy, **backward)
    optimizer.step(model)
    return result


def dense_runs(model, flat):
    """(layer, start, stop) for each layer of `model` that can step its parameters as backward
    makes their gradients (a Dense layer: `fused_update`), where its weight and bias lie back to
    back in `flat`: [start, stop) of the flat buffers."""
    slots = model.slots()
    runs = []
    for i, ((_, layer, attribute), (_, following, next_attribute)) in enumerate(zip(slots, slots[1:])):
        if (hasattr(layer, "fused_update") and following is layer and (attribute, next_attribute) == ("weight", "bias")
                and flat.offsets[i][1] == flat.offsets[i + 1][0]):
            runs.append((layer, flat.offsets[i][0], flat.offsets[i + 1][1]))
    return runs


def runs_left(flat, stepped):
    """The runs of `flat` holding the parameters not in the `stepped` runs, each a parameter's
    run or several joined across the few floats of padding between them (zeros, which a step
    leaves at zero)."""
    done = sorted(stepped)
    left = []
    for start, stop in flat.offsets:
        if any(first <= start and stop <= last for first, last in done):
            continue
        if left and start - left[-1][1] < LINE:
            left[-1] = (left[-1][0], stop)
        else:
            left.append((start, stop))
    return left


class SGD:
    """param -= lr * grad."""

    def __init__(self, lr=0.01):
        self.lr = real_number("lr", lr, low=0.0)

    def backward_and_step(self, model, dy, **backward):
        """model.backward(dy, **backward), then step(model); returns what backward returns."""
        return backward_then_step(self, model, dy, backward)

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
        self.plan = None   # (model, model.flat, ...): fused_plan's

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

    def backward_and_step(self, model, dy, **backward):
        """model.backward(dy, **backward), then step(model); returns what backward returns. Where
        the backend fuses them (dense_adam_update: numba-cpu, one process) and `model` has a flat
        buffer, each Dense layer's weight and bias gradient is stepped as it is made, in one pass,
        while it is in cache (kernels/numba_cpu/dense_adam.py), after the layer's input gradient,
        which needs the weights as they were; then the rest of the parameters as step would. The
        floats are those of backward then step."""
        flat = getattr(model, "flat", None)
        if flat is None or distributed.world().size > 1 or not dispatch.implements("dense_adam_update"):
            return backward_then_step(self, model, dy, backward)
        step = self.steps + 1   # counted once backward has run
        m, v = self.flat_moments(flat)
        update = dispatch.implementation("dense_adam_update")
        stepped = []   # (start, stop) of the flat runs stepped during backward
        layers, runs_left_after = self.fused_plan(model, flat)
        for layer, start, stop in layers:
            layer.fused_update = functools.partial(self.dense_update, update, flat, m, v, start, stop, layer, step,
                                                   stepped)
        try:
            result = model.backward(dy, **backward)
        finally:
            for layer, _, _ in layers:
                layer.fused_update = None
        self.steps = step
        flat.gather(model)   # a clear error where a parameter got no gradient
        key = tuple(stepped)
        if key not in runs_left_after:
            runs_left_after[key] = runs_left(flat, stepped)
        for start, stop in runs_left_after[key]:
            ops.adam_update(flat.parameters[start:stop], flat.gradients[start:stop], m[start:stop], v[start:stop],
                            step=step, lr=self.lr, beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
        return result

    def fused_plan(self, model, flat):
        """dense_runs(model, flat), and {runs stepped: runs_left(flat, those)} filled as steps meet
        them: worked out once for a model and its flat buffer, whose layout is fixed when the
        buffer is made (a layer replaced since then is not the buffer's: flat.gather refuses it).
        A GAN step had walked the model's slots for them, cold from cache after the kernels, in
        each of its two backward passes."""
        if self.plan is None or self.plan[0] is not model or self.plan[1] is not flat:
            self.plan = (model, flat, dense_runs(model, flat), {})
        return self.plan[2:]

    def dense_update(self, update, flat, m, v, start, stop, layer, step, stepped, x, dpre):
        """A Dense layer's backward hook: its weight and bias gradients from its input x and
        d loss / d pre-activation, stepped at once where the arrays are the kernel's, else only
        made (and stepped by backward_and_step with the rest); returns the two gradient views."""
        weight, bias = layer.gradient_views["weight"], layer.gradient_views["bias"]
        if layer.shapes_fit() and kernel_ready(x, dpre):
            update(x, dpre, flat.gradients[start:stop], flat.parameters[start:stop], m[start:stop], v[start:stop],
                   self.lr, self.beta_1, self.beta_2, self.epsilon, step)
            stepped.append((start, stop))
            return weight, bias
        return weight_and_bias_gradient(x, dpre, weight, bias, layer.shapes_fit())

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
