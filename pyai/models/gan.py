"""A GAN that learns to draw images from noise: the seeds' generator and discriminator on pyai's kernels.

    gan = GAN(image_shape=(28, 28))          # noise 100; G 256-512-1024; D 512-256; Adam(2e-4, 0.5)
    losses = gan.train_step(real, noise, generator_noise)
    images = gan.generate(noise)             # (n, pixels) in [-1, 1]

    generator:     z (noise_dim) -> Dense 256 -> LeakyReLU -> Dense 512 -> LeakyReLU
                   -> Dense 1024 -> LeakyReLU -> Dense pixels -> tanh
    discriminator: image (pixels) -> Dense 512 -> LeakyReLU -> Dense 256 -> LeakyReLU -> Dense 1 -> logit

Each Dense + activation is one `nn.Dense`: one fused `ops.linear` call forward, one backward. The
discriminator's probability is sigmoid(logit); training takes binary cross-entropy from the logit,
which stays finite where the sigmoid rounds to 0 or 1.

One training step, as the seeds describe it, each network with its own Adam:
  1. discriminator: fake = G(noise); one update on the real (target 1) and fake (target 0) images
     together: loss = mean BCE over the 2n images = the mean of the real and the fake losses.
  2. generator: one update on D(G(generator_noise)) against target 1, the non-saturating loss
     -log D(G(z)) (the gradient of log(1 - D(G(z))) vanishes while D wins, early in training).

`train` runs epochs of shuffled batches; `save_checkpoint` / `load_checkpoint` keep everything it
needs to go on exactly (weights, both Adams, epochs done, history, the random generator's state).
The Keras twins (`to_keras`, `from_keras`, `keras_train_step`) need tensorflow, a test dependency,
which they import only when called.
"""

import json
import math

import numpy as np
from tqdm import tqdm

from pyai import io, ops
from pyai.checks import as_float32, positive_int, real_number
from pyai.data import check_finite
from pyai.losses import BinaryCrossentropy
from pyai.nn import OUTPUT_GRADIENTS, Dense, Sequential
from pyai.optim import Adam


def dense_stack(sizes, output_activation, alpha, rng):
    """Dense layers of sizes [inputs, hidden..., outputs]: leaky_relu after each hidden one."""
    activations = ["leaky_relu"] * (len(sizes) - 2) + [output_activation]
    return Sequential(*[Dense(inputs, outputs, activation, alpha, rng)
                        for inputs, outputs, activation in zip(sizes, sizes[1:], activations)])


def backward_to_input(network, dy):
    """d loss / d input of a Sequential of Dense layers, from dy = d loss / d output, without
    the weight gradients: the generator's update needs the image gradient through the
    discriminator, not the discriminator's own gradients."""
    for dense in reversed(network.layers):
        dpre = OUTPUT_GRADIENTS[dense.activation](dy, dense.y, dense.alpha)
        dy = ops.matmul(dpre, dense.weight, transpose_b=True)
    return dy


class GAN:
    """The generator and discriminator, their two Adam optimizers, and one training step."""

    def __init__(self, image_shape=(28, 28), noise_dim=100, generator_sizes=(256, 512, 1024),
                 discriminator_sizes=(512, 256), alpha=0.2, learning_rate=2e-4, beta_1=0.5, seed=0):
        self.image_shape = tuple(positive_int(f"image_shape[{i}]", size) for i, size in enumerate(image_shape))
        if not self.image_shape:
            raise ValueError("image_shape: expected at least one dimension, got ()")
        self.pixels = math.prod(self.image_shape)
        self.noise_dim = positive_int("noise_dim", noise_dim)
        generator_sizes = [positive_int("generator_sizes", size) for size in generator_sizes]
        discriminator_sizes = [positive_int("discriminator_sizes", size) for size in discriminator_sizes]
        alpha = real_number("alpha", alpha, low=0.0)
        rng = np.random.default_rng(seed)
        self.generator = dense_stack([self.noise_dim, *generator_sizes, self.pixels], "tanh", alpha, rng)
        self.discriminator = dense_stack([self.pixels, *discriminator_sizes, 1], None, alpha, rng)
        self.generator_optimizer = Adam(learning_rate, beta_1=beta_1)
        self.discriminator_optimizer = Adam(learning_rate, beta_1=beta_1)
        self.loss = BinaryCrossentropy(from_logits=True)
        self.config = {"image_shape": list(self.image_shape), "noise_dim": self.noise_dim,
                       "generator_sizes": generator_sizes, "discriminator_sizes": discriminator_sizes,
                       "alpha": alpha, "learning_rate": float(learning_rate), "beta_1": float(beta_1),
                       "seed": seed}

    def __repr__(self):
        return "GAN(" + ", ".join(f"{key}={value!r}" for key, value in self.config.items()) + ")"

    def networks(self):
        """(name, network, its optimizer) for both networks, in checkpoint order."""
        return [("generator", self.generator, self.generator_optimizer),
                ("discriminator", self.discriminator, self.discriminator_optimizer)]

    def check_batch(self, name, array, columns, rows=None):
        array = as_float32(name, array, ndim=2)
        if array.shape[1] != columns or (rows is not None and array.shape[0] != rows):
            expected = f"({'batch' if rows is None else rows}, {columns})"
            raise ValueError(f"{name}: expected shape {expected} for {self!r}, got {array.shape}")
        return array

    # noise is (n, noise_dim) -> images (n, pixels) in [-1, 1]
    def generate(self, noise):
        return self.generator.forward(self.check_batch("noise", noise, self.noise_dim))

    # images are (n, pixels) -> the discriminator's probability that each is real, (n, 1)
    def discriminate(self, images):
        return ops.sigmoid(self.discriminator.forward(self.check_batch("images", images, self.pixels)))

    def sample(self, count, rng):
        """`count` images from fresh noise drawn from `rng`, (count, pixels) in [-1, 1]."""
        return self.generate(rng.standard_normal((positive_int("count", count), self.noise_dim),
                                                 dtype=np.float32))

    # real is (n, pixels) in [-1, 1]; noise and generator_noise are (n, noise_dim)
    def train_step(self, real, noise, generator_noise):
        """One discriminator update, then one generator update; returns the losses and the
        discriminator's accuracy on the real and the fake images, before its update."""
        real = self.check_batch("real", real, self.pixels)
        n = len(real)
        noise = self.check_batch("noise", noise, self.noise_dim, rows=n)
        generator_noise = self.check_batch("generator_noise", generator_noise, self.noise_dim, rows=n)

        # 1. the discriminator: real images are labelled 1, the generator's 0
        images = np.concatenate([real, self.generator.forward(noise)])                # (2n, pixels)
        targets = np.concatenate([np.ones((n, 1), np.float32), np.zeros((n, 1), np.float32)])
        logits = self.discriminator.forward(images)                                   # (2n, 1)
        discriminator_loss = self.loss(logits, targets)
        self.discriminator.backward(self.loss.backward(), input_gradient=False)
        self.discriminator_optimizer.step(self.discriminator)

        # 2. the generator: its images should be called real by the updated discriminator
        fake = self.generator.forward(generator_noise)                                 # (n, pixels)
        fake_logits = self.discriminator.forward(fake)                                 # (n, 1)
        generator_loss = self.loss(fake_logits, np.ones((n, 1), np.float32))
        self.generator.backward(backward_to_input(self.discriminator, self.loss.backward()))
        self.generator_optimizer.step(self.generator)

        return {"discriminator_loss": discriminator_loss, "generator_loss": generator_loss,
                "real_accuracy": float(np.mean(logits[:n] > 0)),
                "fake_accuracy": float(np.mean(logits[n:] <= 0))}


# ---- Training: epochs of shuffled batches, resumable exactly from a checkpoint ----

HISTORY_COLUMNS = ("discriminator_loss", "generator_loss", "real_accuracy", "fake_accuracy")


class Training:
    """Where a run stands besides the GAN itself: epochs done, a history row per step (the
    HISTORY_COLUMNS), and the random generator that draws every shuffle and every noise batch."""

    def __init__(self, seed=0, batch_size=64):
        self.seed = seed
        self.batch_size = positive_int("batch_size", batch_size)
        self.epoch = 0
        self.history = []
        self.rng = np.random.default_rng(seed)


def train(gan, images, training, *, epochs, progress=True, after_epoch=None):
    """Train `gan` on `images` (n, pixels) in [-1, 1] until `training.epoch` reaches `epochs`.

    Each epoch shuffles the images and takes n // batch_size full batches (the rest wait for the
    next shuffle), with fresh noise for both updates; after_epoch(training) runs after each epoch.
    `gan` may be anything with noise_dim, pixels and GAN.train_step's signature (a Keras twin).
    """
    images = check_finite("images", as_float32("images", images, ndim=2))
    if images.shape[1] != gan.pixels:
        raise ValueError(f"images: expected {gan.pixels} pixels per image, got shape {images.shape}")
    size = training.batch_size
    steps = len(images) // size
    if steps == 0:
        raise ValueError(f"images: {len(images)} images do not fill one batch of {size}")
    noise_shape = (size, gan.noise_dim)
    with tqdm(total=epochs * steps, initial=training.epoch * steps, desc="training gan", unit="step",
              disable=not progress) as bar:
        while training.epoch < epochs:
            order = training.rng.permutation(len(images))
            for step in range(steps):
                real = images[order[step * size:(step + 1) * size]]
                noise = training.rng.standard_normal(noise_shape, dtype=np.float32)
                generator_noise = training.rng.standard_normal(noise_shape, dtype=np.float32)
                result = gan.train_step(real, noise, generator_noise)
                training.history.append([result[column] for column in HISTORY_COLUMNS])
                bar.set_postfix(epoch=training.epoch + 1, d_loss=f"{result['discriminator_loss']:.3f}",
                                g_loss=f"{result['generator_loss']:.3f}", refresh=False)
                bar.update()
            training.epoch += 1
            if after_epoch is not None:
                after_epoch(training)


def tensors(gan):
    """Every weight and Adam slot by its checkpoint name ("generator/0.weight",
    "generator_adam/m/0.weight", "generator_adam/steps", ...); slots not made yet are zeros."""
    arrays = {}
    for name, network, optimizer in gan.networks():
        state = {"steps": np.array(optimizer.steps, np.int64)}
        for parameter_name, parameter in network.parameters():
            arrays[f"{name}/{parameter_name}"] = parameter
            state[f"m/{parameter_name}"] = state[f"v/{parameter_name}"] = np.zeros_like(parameter)
        state.update(optimizer.state())
        arrays.update({f"{name}_adam/{key}": array for key, array in state.items()})
    return arrays


def save_checkpoint(path, gan, training):
    """The GAN and where its training stands, to an .npz file at `path`, atomically, without pickle:
    "config" and "training" (epochs, batch size, seed, the generator's state) as JSON strings,
    "history" (steps, 4) float64, and the `tensors`."""
    state = {"seed": training.seed, "batch_size": training.batch_size, "epoch": training.epoch,
             "rng": training.rng.bit_generator.state}
    history = np.array(training.history, np.float64).reshape(-1, len(HISTORY_COLUMNS))
    io.save(path, {"config": np.array(json.dumps(gan.config)), "training": np.array(json.dumps(state)),
                   "history": history, **tensors(gan)})


def read_json(path, arrays, key):
    try:
        value = json.loads(str(arrays[key]))
    except KeyError:
        raise io.CheckpointError(f"checkpoint {path}: has no {key!r}; is it a pyai GAN checkpoint?") from None
    except ValueError as error:
        raise io.CheckpointError(f"checkpoint {path}: {key!r} is not valid JSON ({error})") from error
    if not isinstance(value, dict):
        raise io.CheckpointError(f"checkpoint {path}: {key!r} is not a JSON object")
    return value


def load_checkpoint(path):
    """(gan, training) from `save_checkpoint`'s file, or CheckpointError saying what is wrong."""
    arrays = io.load(path)
    config = read_json(path, arrays, "config")
    try:
        gan = GAN(**config)
    except (TypeError, ValueError) as error:
        raise io.CheckpointError(f"checkpoint {path}: its config does not make a GAN "
                                 f"(a checkpoint of another model?): {error}") from error
    metadata = ("config", "training", "history")
    io.check(path, {key: array for key, array in arrays.items() if key not in metadata}, tensors(gan))
    for name, network, optimizer in gan.networks():
        for parameter_name, parameter in network.parameters():
            parameter[...] = arrays[f"{name}/{parameter_name}"]
        prefix = f"{name}_adam/"
        optimizer.load_state({key.removeprefix(prefix): array
                              for key, array in arrays.items() if key.startswith(prefix)})
    return gan, read_training(path, arrays)


def read_training(path, arrays):
    state = read_json(path, arrays, "training")
    try:
        training = Training(seed=state["seed"], batch_size=state["batch_size"])
        training.epoch = int(state["epoch"])
        if training.epoch < 0:
            raise ValueError(f"epoch {training.epoch} is negative")
        training.rng.bit_generator.state = state["rng"]
    except (KeyError, TypeError, ValueError) as error:
        raise io.CheckpointError(f"checkpoint {path}: 'training' is not a GAN's training state "
                                 f"({type(error).__name__}: {error})") from error
    history = arrays.get("history")
    if (history is None or history.dtype != np.float64 or history.ndim != 2
            or history.shape[1] != len(HISTORY_COLUMNS) or not np.all(np.isfinite(history))):
        raise io.CheckpointError(f"checkpoint {path}: 'history' is not a finite float64 array of "
                                 f"{len(HISTORY_COLUMNS)} columns")
    training.history = history.tolist()
    return training


# ---- The same GAN in Keras: the peer pyai is validated and timed against (needs tensorflow) ----

def keras_layers_of(network, output_activation, keras):
    """Keras layers computing what a pyai Dense stack computes: each Dense, then its activation."""
    layers = [keras.Input((network.layers[0].in_features,))]
    for dense in network.layers[:-1]:
        layers += [keras.layers.Dense(dense.out_features), keras.layers.LeakyReLU(negative_slope=dense.alpha)]
    layers += [keras.layers.Dense(network.layers[-1].out_features), keras.layers.Activation(output_activation)]
    return layers


def to_keras(gan):
    """(generator, discriminator): keras.Sequential models with `gan`'s weights, computing the same.

    The discriminator outputs probabilities through a final Activation("sigmoid") layer, so
    `keras.Sequential(discriminator.layers[:-1])` computes its logits. Needs tensorflow.
    """
    import keras

    models = []
    for network, output_activation in ((gan.generator, "tanh"), (gan.discriminator, "sigmoid")):
        model = keras.Sequential(keras_layers_of(network, output_activation, keras))
        dense_layers = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
        for layer, dense in zip(dense_layers, network.layers, strict=True):
            layer.set_weights([dense.weight, dense.bias])
        models.append(model)
    return tuple(models)


def keras_description(model, keras):
    """A Keras model's layers as tuples (kind, size or slope or activation), to compare structures."""
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            layers.append(("Dense", layer.units, layer.activation.__name__))
        elif isinstance(layer, keras.layers.LeakyReLU):
            layers.append(("LeakyReLU", round(float(layer.negative_slope), 6)))
        elif isinstance(layer, keras.layers.Activation):
            layers.append(("Activation", layer.activation.__name__))
        else:
            layers.append((type(layer).__name__,))
    return layers


def expected_description(network, output_activation):
    """The `keras_description` of what `keras_layers_of(network, output_activation)` builds."""
    layers = []
    for dense in network.layers[:-1]:
        layers += [("Dense", dense.out_features, "linear"), ("LeakyReLU", round(dense.alpha, 6))]
    return layers + [("Dense", network.layers[-1].out_features, "linear"), ("Activation", output_activation)]


def from_keras(generator, discriminator, image_shape=None):
    """A GAN with the weights of Keras models built like `to_keras`'s; ValueError otherwise.

    image_shape defaults to a square of the generator's outputs. Needs tensorflow.
    """
    import keras

    kernels = [[layer.get_weights() for layer in model.layers if isinstance(layer, keras.layers.Dense)]
               for model in (generator, discriminator)]
    if not kernels[0] or not kernels[1]:
        raise ValueError("from_keras: both models need Dense layers")
    generator_sizes = [kernel.shape[1] for kernel, _ in kernels[0]]
    pixels = generator_sizes.pop()
    if image_shape is None:
        side = math.isqrt(pixels)
        if side * side != pixels:
            raise ValueError(f"image_shape: the generator makes {pixels} pixels, not a square; pass the shape")
        image_shape = (side, side)
    slopes = [layer.negative_slope for layer in generator.layers if isinstance(layer, keras.layers.LeakyReLU)]
    gan = GAN(image_shape=image_shape, noise_dim=kernels[0][0][0].shape[0], generator_sizes=generator_sizes,
              discriminator_sizes=[kernel.shape[1] for kernel, _ in kernels[1][:-1]],
              alpha=float(slopes[0]) if slopes else 0.2)
    for name, model, network, model_kernels, output_activation in (
            ("generator", generator, gan.generator, kernels[0], "tanh"),
            ("discriminator", discriminator, gan.discriminator, kernels[1], "sigmoid")):
        found, expected = keras_description(model, keras), expected_description(network, output_activation)
        if found != expected:
            raise ValueError(f"{name}: its layers {found} are not a pyai GAN's {expected}")
        for dense, (kernel, bias) in zip(network.layers, model_kernels, strict=True):
            if kernel.shape != dense.weight.shape:
                raise ValueError(f"{name}: a Dense kernel is {kernel.shape}, expected {dense.weight.shape}")
            dense.weight[...] = kernel
            dense.bias[...] = bias
    return gan


def keras_train_step(generator, discriminator, learning_rate=2e-4, beta_1=0.5):
    """`GAN.train_step` in Keras, for models from `to_keras`: a tf.function
    step(real, noise, generator_noise) -> (discriminator_loss, generator_loss, real_accuracy,
    fake_accuracy) as tensors, with its own two Keras Adams (tf.GradientTape). Needs tensorflow."""
    import keras
    import tensorflow as tf

    logits_of = keras.Sequential(discriminator.layers[:-1])   # shares the layers, so the weights
    loss = keras.losses.BinaryCrossentropy(from_logits=True)
    discriminator_adam = keras.optimizers.Adam(learning_rate, beta_1=beta_1)
    generator_adam = keras.optimizers.Adam(learning_rate, beta_1=beta_1)

    @tf.function
    def step(real, noise, generator_noise):
        n = tf.shape(real)[0]
        images = tf.concat([real, generator(noise)], axis=0)
        targets = tf.concat([tf.ones((n, 1)), tf.zeros((n, 1))], axis=0)
        with tf.GradientTape() as tape:
            logits = logits_of(images)
            discriminator_loss = loss(targets, logits)
        weights = logits_of.trainable_weights
        discriminator_adam.apply_gradients(zip(tape.gradient(discriminator_loss, weights), weights))

        with tf.GradientTape() as tape:
            fake_logits = logits_of(generator(generator_noise))
            generator_loss = loss(tf.ones_like(fake_logits), fake_logits)
        weights = generator.trainable_weights
        generator_adam.apply_gradients(zip(tape.gradient(generator_loss, weights), weights))
        real_accuracy = tf.reduce_mean(tf.cast(logits[:n] > 0, tf.float32))
        fake_accuracy = tf.reduce_mean(tf.cast(logits[n:] <= 0, tf.float32))
        return discriminator_loss, generator_loss, real_accuracy, fake_accuracy

    return step
