"""The multilayer perceptron: Dense layers with an activation between them.

    model = MLP([64, 64, 10], activation="leaky_relu")       # logits out
    model = MLP.sigmoid([64, 32, 10])                        # the classic sigmoid MLP, for MSE
    fit(model, BinaryCrossentropy(from_logits=True), Adam(0.01), x, targets, epochs=30, batch_size=32)
    model.save("mlp.npz");  model = MLP.load("mlp.npz")

`fit` is in `pyai.training`; `save` and `load` write and read `pyai.checkpoint`'s format.
"""

import numpy as np

from pyai import checkpoint
from pyai.checks import as_float32, fits_in_memory, positive_int
from pyai.data import check_finite
from pyai.nn import Dense, FlatParameters, Sequential


class MLP(Sequential):
    """Dense layers of sizes [inputs, hidden..., outputs]: `activation` after each hidden layer,
    `output_activation` (None for logits) after the last. Weights are drawn from `seed`."""

    def __init__(self, layer_sizes, activation="sigmoid", output_activation=None, alpha=0.2, seed=0):
        sizes = [positive_int(f"layer_sizes[{index}]", size) for index, size in enumerate(layer_sizes)]
        if len(sizes) < 2:
            raise ValueError(f"layer_sizes: expected at least [inputs, outputs], got {sizes}")
        fits_in_memory("layer_sizes", sum(a * b + b for a, b in zip(sizes, sizes[1:])), "an MLP")
        rng = np.random.default_rng(seed)
        activations = [activation] * (len(sizes) - 2) + [output_activation]
        super().__init__(*[Dense(inputs, outputs, layer_activation, alpha, rng)
                           for inputs, outputs, layer_activation in zip(sizes, sizes[1:], activations)])
        self.config = {"layer_sizes": sizes, "activation": activation,
                       "output_activation": output_activation, "alpha": float(alpha), "seed": seed}
        self.flat = FlatParameters(self)

    @classmethod
    def sigmoid(cls, layer_sizes, seed=0):
        """The classic back-propagation MLP: sigmoid hidden layers, sigmoid outputs, for MSE."""
        return cls(layer_sizes, activation="sigmoid", output_activation="sigmoid", seed=seed)

    def __repr__(self):
        return "MLP(" + ", ".join(f"{key}={value!r}" for key, value in self.config.items()) + ")"

    # x is (batch, inputs) -> (batch, outputs)
    def predict(self, x, batch_size=None):
        """The outputs for x, `batch_size` rows at a time (default: all at once). Batches of the
        training batch size run the kernels training compiled; one batch of many rows runs
        another matmul loop, which a first run would compile (a few CPU seconds)."""
        x = check_finite("x", as_float32("x", x, ndim=2))
        if batch_size is None:
            return self.forward(x)
        batch_size = positive_int("batch_size", batch_size)
        return np.concatenate([self.forward(x[start:start + batch_size])
                               for start in range(0, max(len(x), 1), batch_size)])

    def save(self, path, optimizer=None):
        """The config and weights (and the optimizer's state, when given) to `path`, atomically."""
        checkpoint.save(path, self, optimizer)

    @classmethod
    def load(cls, path, optimizer=None):
        """The MLP saved at `path`, built from its config; restores `optimizer`'s state when given."""
        return checkpoint.load(path, cls, optimizer)[0]

    def load_weights(self, path, optimizer=None):
        """Copy the weights saved at `path` into this model's arrays, checking names, shapes and
        the config but for the seed. With `optimizer`, its state is restored too. Nothing changes
        unless everything fits."""
        checkpoint.load_into(path, self, optimizer)
