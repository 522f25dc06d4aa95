"""The multilayer perceptron, its checkpoints, and a mini-batch training loop.

    model = MLP([64, 64, 10], activation="leaky_relu")       # logits out
    model = MLP.sigmoid([64, 32, 10])                        # the classic sigmoid MLP, for MSE
    fit(model, BinaryCrossentropy(from_logits=True), Adam(0.01), x, targets, epochs=30, batch_size=32)
    model.save("mlp.npz");  model = MLP.load("mlp.npz")

A checkpoint is an .npz file (see `pyai.io`): the constructor's arguments as a JSON string under
"config", each parameter under "weights/<name>", and optionally an optimizer's state under
"optimizer/<name>".
"""

import json

import numpy as np
from tqdm import tqdm

from pyai import io
from pyai.checks import as_float32, positive_int
from pyai.data import check_finite
from pyai.nn import Dense, Sequential


class MLP(Sequential):
    """Dense layers of sizes [inputs, hidden..., outputs]: `activation` after each hidden layer,
    `output_activation` (None for logits) after the last. Weights are drawn from `seed`."""

    def __init__(self, layer_sizes, activation="sigmoid", output_activation=None, alpha=0.2, seed=0):
        sizes = [positive_int(f"layer_sizes[{index}]", size) for index, size in enumerate(layer_sizes)]
        if len(sizes) < 2:
            raise ValueError(f"layer_sizes: expected at least [inputs, outputs], got {sizes}")
        rng = np.random.default_rng(seed)
        activations = [activation] * (len(sizes) - 2) + [output_activation]
        super().__init__(*[Dense(inputs, outputs, layer_activation, alpha, rng)
                           for inputs, outputs, layer_activation in zip(sizes, sizes[1:], activations)])
        self.config = {"layer_sizes": sizes, "activation": activation,
                       "output_activation": output_activation, "alpha": float(alpha), "seed": seed}

    @classmethod
    def sigmoid(cls, layer_sizes, seed=0):
        """The classic back-propagation MLP: sigmoid hidden layers, sigmoid outputs, for MSE."""
        return cls(layer_sizes, activation="sigmoid", output_activation="sigmoid", seed=seed)

    def __repr__(self):
        return "MLP(" + ", ".join(f"{key}={value!r}" for key, value in self.config.items()) + ")"

    # x is (batch, inputs) -> (batch, outputs)
    def predict(self, x):
        return self.forward(check_finite("x", as_float32("x", x, ndim=2)))

    def save(self, path, optimizer=None):
        """The config and weights (and the optimizer's state, when given) to `path`, atomically."""
        arrays = {"config": np.array(json.dumps(self.config))}
        arrays.update({f"weights/{name}": array for name, array in self.parameters()})
        if optimizer is not None:
            arrays.update({f"optimizer/{name}": array for name, array in optimizer.state().items()})
        io.save(path, arrays)

    @classmethod
    def load(cls, path, optimizer=None):
        """The MLP saved at `path`, built from its config; restores `optimizer`'s state when given."""
        arrays = io.load(path)
        if "config" not in arrays:
            raise io.CheckpointError(f"checkpoint {path}: has no 'config', so the MLP cannot be rebuilt")
        config = read_config(path, arrays)
        try:
            model = cls(**config)
        except (ValueError, TypeError) as error:
            message = f"checkpoint {path}: its config does not make an MLP ({error})"
            raise io.CheckpointError(message) from error
        model.load_weights(path, optimizer, arrays)
        return model

    def load_weights(self, path, optimizer=None, arrays=None):
        """Copy the weights saved at `path` into this model's arrays, checking names and shapes.

        With `optimizer`, its state is restored too. Nothing changes unless everything fits.
        """
        arrays = io.load(path) if arrays is None else arrays
        weights = {name.removeprefix("weights/"): array
                   for name, array in arrays.items() if name.startswith("weights/")}
        io.check(path, weights, dict(self.parameters()))
        self.check_config(path, arrays)
        if optimizer is not None:
            self.load_optimizer_state(path, optimizer, arrays)
        for name, parameter in self.parameters():
            parameter[...] = weights[name]

    def check_config(self, path, arrays):
        """Same shapes are not enough: the layers' activations must match too (the seed need not)."""
        if "config" not in arrays:
            return
        saved = read_config(path, arrays)
        differing = sorted(key for key in self.config if key != "seed" and saved.get(key) != self.config[key])
        if differing:
            raise io.CheckpointError(f"checkpoint {path}: its MLP differs from {self!r} in "
                                     + ", ".join(f"{key}={saved.get(key)!r}" for key in differing))

    def load_optimizer_state(self, path, optimizer, arrays):
        state = {name.removeprefix("optimizer/"): array
                 for name, array in arrays.items() if name.startswith("optimizer/")}
        shapes = {name: parameter.shape for name, parameter in self.parameters()}
        for name, array in state.items():
            slot, _, parameter = name.partition("/")
            if slot in ("m", "v") and shapes.get(parameter) != array.shape:
                raise io.CheckpointError(f"checkpoint {path}: optimizer tensor {name!r} has shape "
                                         f"{array.shape}, which fits no parameter of {self!r}")
        try:
            optimizer.load_state(state)
        except ValueError as error:
            raise io.CheckpointError(f"checkpoint {path}: {error}") from error


def read_config(path, arrays):
    try:
        config = json.loads(str(arrays["config"]))
    except ValueError as error:
        raise io.CheckpointError(f"checkpoint {path}: 'config' is not valid JSON ({error})") from error
    if not isinstance(config, dict):
        raise io.CheckpointError(f"checkpoint {path}: 'config' is not a JSON object")
    return config


def fit(model, loss, optimizer, x, targets, *, epochs, batch_size, seed=0, progress=True):
    """Mini-batch training, shuffled each epoch; returns the mean loss of each epoch.

    x is (n, inputs), targets is (n, outputs). A tqdm bar shows the epochs with the last epoch's loss.
    """
    x = check_finite("x", as_float32("x", x, ndim=2))
    targets = check_finite("targets", as_float32("targets", targets, ndim=2))
    if len(targets) != len(x):
        raise ValueError(f"targets: expected {len(x)} rows, one per row of x, got {len(targets)}")
    epochs = positive_int("epochs", epochs)
    batch_size = positive_int("batch_size", batch_size)
    rng = np.random.default_rng(seed)
    history = []
    with tqdm(range(epochs), desc="training", unit="epoch", disable=not progress) as bar:
        for _ in bar:
            order = rng.permutation(len(x))
            total = 0.0
            for start in range(0, len(x), batch_size):
                batch = order[start:start + batch_size]
                total += loss(model.forward(x[batch]), targets[batch]) * len(batch)
                model.backward(loss.backward(), input_gradient=False)
                optimizer.step(model)
            history.append(total / len(x))
            bar.set_postfix(loss=f"{history[-1]:.4f}")
    return history
