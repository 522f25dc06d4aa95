"""pyai.models.MLP with its losses and optimizers against the same Keras model, step by step.

Tolerances, relative: 1e-5 for outputs and gradients (float32 on both sides, a few dozen products
summed per element); 1e-5 for the losses and 1e-4 for the weights after 10 optimizer steps, where
the rounding differences of each step feed into the next (Adam divides by sqrt(v), which
magnifies them for the parameters whose gradients are small).
"""

import numpy as np
import pytest

from conftest import assert_close, require
from pyai.losses import MSE, BinaryCrossentropy
from pyai.models import MLP
from pyai.optim import SGD, Adam
from pyai.training import fit

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

TOLERANCE = 1e-5
WEIGHTS_AFTER_STEPS_TOLERANCE = 1e-4
MODEL_OPS = ["linear", "matmul", "leaky_relu_grad", "relu_grad", "sigmoid_grad", "tanh_grad"]
SIZES = [13, 17, 9, 5]

# (model, pyai loss, Keras loss, how targets are drawn)
CASES = {
    "leaky_relu-logits-bce": (lambda: MLP(SIZES, activation="leaky_relu", alpha=0.3, seed=1),
                              lambda: BinaryCrossentropy(from_logits=True),
                              lambda: keras.losses.BinaryCrossentropy(from_logits=True), "binary"),
    "tanh-sigmoid-bce": (lambda: MLP(SIZES, activation="tanh", output_activation="sigmoid", seed=2),
                         BinaryCrossentropy, keras.losses.BinaryCrossentropy, "binary"),
    "relu-linear-mse": (lambda: MLP(SIZES, activation="relu", seed=3), MSE,
                        keras.losses.MeanSquaredError, "uniform"),
    "sigmoid-mlp-mse": (lambda: MLP.sigmoid(SIZES, seed=4), MSE, keras.losses.MeanSquaredError, "uniform"),
}


def require_all(backend):
    for op in MODEL_OPS + ["binary_crossentropy_logits_grad", "binary_crossentropy_grad", "mse_grad"]:
        require(op, backend)


def keras_activation(name, alpha):
    if name == "leaky_relu":
        return lambda x: tf.nn.leaky_relu(x, alpha)
    return name


def keras_copy(model):
    """A keras.Sequential of Dense layers computing what `model` computes, with its weights copied."""
    layers = [keras.layers.Dense(dense.out_features,
                                 activation=keras_activation(dense.activation, dense.alpha))
              for dense in model.layers]
    copy = keras.Sequential([keras.Input((model.layers[0].in_features,)), *layers])
    for layer, dense in zip(layers, model.layers):
        layer.set_weights([dense.weight, dense.bias])
    return copy


def randomize_biases(model, rng):
    """Keras starts biases at zero; nonzero ones test that they are used and copied."""
    for name, parameter in model.parameters():
        if name.endswith("bias"):
            parameter[...] = rng.normal(0, 0.3, parameter.shape)


def random_batch(rng, batch, targets):
    x = rng.normal(size=(batch, SIZES[0])).astype(np.float32)
    shape = (batch, SIZES[-1])
    y = rng.integers(0, 2, shape) if targets == "binary" else rng.uniform(size=shape)
    return x, y.astype(np.float32)


def keras_loss_and_gradients(copy, keras_loss, x, y):
    with tf.GradientTape() as tape:
        loss = keras_loss(tf.constant(y), copy(tf.constant(x)))
    return float(loss), tape.gradient(loss, copy.trainable_weights)


@pytest.mark.parametrize("case", CASES)
def test_mlp_outputs_and_gradients_match_keras(backend, rng, case):
    require_all(backend)
    make_model, make_loss, make_keras_loss, targets = CASES[case]
    model = make_model()
    randomize_biases(model, rng)
    copy = keras_copy(model)
    x, y = random_batch(rng, 7, targets)
    loss = make_loss()

    assert_close(f"outputs ({backend}, {case})", model.forward(x), copy(x).numpy(), TOLERANCE)
    value = loss(model.forward(x), y)
    model.backward(loss.backward())
    value_ref, grads_ref = keras_loss_and_gradients(copy, make_keras_loss(), x, y)

    assert_close(f"loss ({backend}, {case})", value, value_ref, TOLERANCE)
    for (name, grad), grad_ref in zip(model.gradients(), grads_ref, strict=True):
        assert_close(f"gradient of {name} ({backend}, {case})", grad, grad_ref.numpy(), TOLERANCE)


OPTIMIZERS = {
    "adam": (lambda: Adam(lr=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-6),
             lambda: keras.optimizers.Adam(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-6)),
    "sgd": (lambda: SGD(lr=0.5), lambda: keras.optimizers.SGD(learning_rate=0.5)),
}


@pytest.mark.parametrize("case, optimizer", [("leaky_relu-logits-bce", "adam"), ("tanh-sigmoid-bce", "adam"),
                                             ("relu-linear-mse", "adam"), ("sigmoid-mlp-mse", "sgd"),
                                             ("sigmoid-mlp-mse", "adam")])
def test_ten_training_steps_match_keras(backend, rng, case, optimizer):
    require_all(backend)
    require("adam_update" if optimizer == "adam" else "sgd_update", backend)
    make_model, make_loss, make_keras_loss, targets = CASES[case]
    make_optimizer, make_keras_optimizer = OPTIMIZERS[optimizer]
    model, loss, step = make_model(), make_loss(), make_optimizer()
    copy, keras_loss, keras_step = keras_copy(model), make_keras_loss(), make_keras_optimizer()

    losses, losses_ref = [], []
    for _ in range(10):
        x, y = random_batch(rng, 16, targets)
        losses.append(loss(model.forward(x), y))
        model.backward(loss.backward())
        step.step(model)
        value_ref, grads_ref = keras_loss_and_gradients(copy, keras_loss, x, y)
        losses_ref.append(value_ref)
        keras_step.apply_gradients(zip(grads_ref, copy.trainable_weights))

    assert_close(f"losses over 10 {optimizer} steps ({backend}, {case})", losses, losses_ref, TOLERANCE)
    for (name, parameter), weight_ref in zip(model.parameters(), copy.trainable_weights, strict=True):
        assert_close(f"{name} after 10 {optimizer} steps ({backend}, {case})", parameter,
                     weight_ref.numpy(), WEIGHTS_AFTER_STEPS_TOLERANCE)


def test_fit_learns_a_separable_problem(backend, rng):
    require_all(backend)
    require("adam_update", backend)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    labels = (x[:, 0] + x[:, 1] > 0).astype(np.float32)[:, None]
    model = MLP([4, 8, 1], activation="tanh", seed=0)
    history = fit(model, BinaryCrossentropy(from_logits=True), Adam(lr=0.05), x, labels,
                  epochs=20, batch_size=32, progress=False)
    assert len(history) == 20 and history[-1] < 0.5 * history[0], f"losses per epoch: {history}"
    accuracy = np.mean((model.predict(x) > 0) == (labels > 0.5))
    assert accuracy > 0.9, f"training accuracy {accuracy:.2f} on a linearly separable problem"


@pytest.mark.parametrize("make_optimizer", [lambda: Adam(lr=0.01, beta_1=0.8), lambda: SGD(lr=0.1)])
def test_fit_takes_the_steps_of_forward_backward_and_step_bit_for_bit(rng, make_optimizer):
    """fit steps through backward_and_step (Adam: each Dense layer stepped as its gradient is
    made); the losses and weights are those of forward, backward, then step, batch by batch,
    with the shuffled batches fit draws from its seed; a ragged last batch of 7 rows."""
    from pyai.training import shuffled_batches
    x = rng.normal(size=(71, 13)).astype(np.float32)
    labels = (rng.random((71, 5)) > 0.5).astype(np.float32)
    fitted, stepped = (MLP([13, 37, 29, 5], activation="leaky_relu", seed=3) for _ in range(2))
    loss, fit_optimizer, optimizer = BinaryCrossentropy(from_logits=True), make_optimizer(), make_optimizer()
    history = fit(fitted, loss, fit_optimizer, x, labels, epochs=2, batch_size=16, seed=5, progress=False)
    batches = np.random.default_rng(5)
    expected = []
    for _ in range(2):
        total = 0.0
        for batch in shuffled_batches(len(x), 16, batches):
            batch_loss = loss(stepped.forward(x[batch]), labels[batch])
            stepped.backward(loss.backward(), input_gradient=False)
            optimizer.step(stepped)
            total += batch_loss * len(batch)
        expected.append(total / len(x))
    assert history == expected
    for (name, parameter), (_, expected_parameter) in zip(fitted.parameters(), stepped.parameters(), strict=True):
        np.testing.assert_array_equal(parameter, expected_parameter, err_msg=name)


def test_fit_takes_no_step_on_a_batch_whose_loss_is_not_finite():
    from pyai.training import TrainingDiverged
    model = MLP([3, 4, 2], activation="leaky_relu", seed=0)
    before = [parameter.copy() for _, parameter in model.parameters()]
    x = np.ones((4, 3), np.float32)
    x[0] = 3e38   # finite, but the outputs overflow: a loss that is not finite
    with pytest.raises(TrainingDiverged, match="epoch 1"):
        fit(model, MSE(), Adam(lr=0.1), x, np.ones((4, 2), np.float32), epochs=1, batch_size=4, progress=False)
    for (name, parameter), old in zip(model.parameters(), before, strict=True):
        np.testing.assert_array_equal(parameter, old, err_msg=name)


def test_the_sigmoid_mlp_is_sigmoid_throughout():
    model = MLP.sigmoid([8, 6, 4, 3])
    assert [dense.activation for dense in model.layers] == ["sigmoid"] * 3
    assert [(dense.in_features, dense.out_features) for dense in model.layers] == [(8, 6), (6, 4), (4, 3)]


def test_same_seed_same_weights_other_seed_other_weights():
    first, again, other = MLP([5, 4, 2], seed=7), MLP([5, 4, 2], seed=7), MLP([5, 4, 2], seed=8)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(first.parameters(), again.parameters()))
    assert not np.array_equal(first.layers[0].weight, other.layers[0].weight)


def test_data_with_nan_is_rejected_where_it_comes_in():
    model = MLP([3, 2])
    x = np.ones((4, 3), np.float32)
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match="x: holds 1 NaN"):
        model.predict(x)
    targets = np.ones((4, 2), np.float32)
    targets[0, 0] = np.inf
    with pytest.raises(ValueError, match="targets: holds 1 NaN or infinite"):
        fit(model, MSE(), SGD(), np.ones((4, 3)), targets, epochs=1, batch_size=2, progress=False)


def test_step_before_backward_is_an_error():
    with pytest.raises(RuntimeError, match="'0.weight' has no gradient: call backward before step"):
        Adam().step(MLP([3, 2]))


def test_loss_backward_before_forward_is_an_error():
    with pytest.raises(RuntimeError, match="backward called before forward"):
        MSE().backward()


@pytest.mark.parametrize("sizes", [[4], [4, 0, 2], [4, -1]])
def test_mlp_rejects_bad_layer_sizes(sizes):
    with pytest.raises(ValueError, match="layer_sizes"):
        MLP(sizes)
