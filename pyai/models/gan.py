"""A GAN that learns to draw images from noise: a generator and a discriminator of Dense layers.

    gan = GAN(image_shape=(28, 28))          # noise 100; G 256-512-1024; D 512-256; Adam(2e-4, 0.5)
    losses = gan.train_step(real, noise, generator_noise)
    images = gan.generate(noise)             # (n, pixels) in [-1, 1]

    generator:     z (noise_dim) -> Dense 256 -> LeakyReLU -> Dense 512 -> LeakyReLU
                   -> Dense 1024 -> LeakyReLU -> Dense pixels -> tanh
    discriminator: image (pixels) -> Dense 512 -> LeakyReLU -> Dense 256 -> LeakyReLU -> Dense 1 -> logit

Each Dense + activation is one `nn.Dense`: one fused `ops.linear` call forward, one backward. The
discriminator's probability is sigmoid(logit); training takes binary cross-entropy from the logit,
which stays finite where the sigmoid rounds to 0 or 1.

One training step, each network with its own Adam:
  1. discriminator: fake = G(noise); one update on the real (target 1) and fake (target 0) images
     together: loss = mean BCE over the 2n images = the mean of the real and the fake losses.
  2. generator: one update on D(G(generator_noise)) against target 1, the non-saturating loss
     -log D(G(z)) (the gradient of log(1 - D(G(z))) vanishes while D wins, early in training).

The GAN keeps its two Adams, so a checkpoint of it (`pyai.checkpoint`) holds them too; the epoch
loop is `pyai.training.train_gan`.
"""

import math

import numpy as np

from pyai import ops, warmup
from pyai.checks import as_float32, fits_in_memory, positive_int, real_number
from pyai.losses import BinaryCrossentropy
from pyai.nn import Dense, FlatParameters, Sequential
from pyai.nn.layers import gradient_below
from pyai.optim import Adam


def dense_stack(sizes, output_activation, alpha, rng):
    """Dense layers of sizes [inputs, hidden..., outputs]: leaky_relu after each hidden one; the
    network's parameters in one flat buffer, `network.flat`, which its own Adam steps."""
    activations = ["leaky_relu"] * (len(sizes) - 2) + [output_activation]
    network = Sequential(*[Dense(inputs, outputs, activation, alpha, rng)
                           for inputs, outputs, activation in zip(sizes, sizes[1:], activations)])
    network.flat = FlatParameters(network)
    return network


def backward_to_input(network, dy):
    """d loss / d input of a Sequential, from dy = d loss / d output, without the weight
    gradients: the generator's update needs the image gradient through the discriminator, not
    the discriminator's own gradients. Layers without parameters have nothing else to skip. A
    Dense or convolution above one with leaky ReLU hands it d loss / d its pre-activation
    (gradient_below)."""
    pre_activation = False
    for i in reversed(range(len(network.layers))):
        layer = network.layers[i]
        if layer.TAKES_BELOW:
            below = gradient_below(network.layers, i)
            dy, pre_activation = layer.input_gradient(dy, below, pre_activation), below is not None
        elif hasattr(layer, "input_gradient"):
            dy = layer.input_gradient(dy)
        else:
            dy = layer.backward(dy)
    return dy


class GAN:
    """The generator and discriminator, their two Adam optimizers, and one training step."""

    # the ops a training step needs of a backend (it uses fused ones too, where the backend has them)
    TRAINING_OPS = ("linear", "matmul", "leaky_relu_grad", "tanh_grad", "sigmoid", "binary_crossentropy_logits",
                    "binary_crossentropy_logits_grad", "adam_update")
    label_cache = None   # labels(n)'s

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
        stacks = ([self.noise_dim, *generator_sizes, self.pixels], [self.pixels, *discriminator_sizes, 1])
        fits_in_memory("generator_sizes, discriminator_sizes, image_shape",
                       sum(a * b + b for sizes in stacks for a, b in zip(sizes, sizes[1:])), "a GAN")
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
        warmup.expect_training("gan")

    def __repr__(self):
        return "GAN(" + ", ".join(f"{key}={value!r}" for key, value in self.config.items()) + ")"

    def networks(self):
        """(name, network, its optimizer) for both networks."""
        return [("generator", self.generator, self.generator_optimizer),
                ("discriminator", self.discriminator, self.discriminator_optimizer)]

    def parameters(self):
        """(name, array) for every parameter of both networks: "generator/0.weight", ..."""
        return [(f"{name}/{parameter_name}", parameter) for name, network, _ in self.networks()
                for parameter_name, parameter in network.parameters()]

    def optimizers(self):
        """{"generator/": its Adam, "discriminator/": its Adam}: each steps the parameters of its prefix."""
        return {f"{name}/": optimizer for name, _, optimizer in self.networks()}

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

        # 1. the discriminator: real images are labelled 1, the generator's 0. A generator whose
        # layers treat each example apart makes both batches of images in one forward (it is not
        # updated before its own step, so they are the floats of two forwards): its weights are
        # read once, and its products have twice the rows; it then keeps what backward needs of
        # the second batch only
        fake = None
        if self.generator.row_wise():
            generated = self.generator.forward(np.concatenate([noise, generator_noise]))
            self.generator.keep_rows(n)
            images, fake = np.concatenate([real, generated[:n]]), generated[n:]
        else:
            images = np.concatenate([real, self.generator.forward(noise)])            # (2n, pixels)
        targets = self.labels(n)                                                      # (2n, 1)
        logits = self.discriminator.forward(images)                                   # (2n, 1)
        discriminator_loss = self.loss(logits, targets)
        self.discriminator_optimizer.backward_and_step(self.discriminator, self.loss.backward(), input_gradient=False)

        # 2. the generator: its images should be called real by the updated discriminator
        if fake is None:
            fake = self.generator.forward(generator_noise)                             # (n, pixels)
        fake_logits = self.discriminator.forward(fake)                                 # (n, 1)
        generator_loss = self.loss(fake_logits, targets[:n])                           # labelled real
        self.generator_optimizer.backward_and_step(self.generator, backward_to_input(self.discriminator,
                                                                                    self.loss.backward()),
                                                   input_gradient=False)

        # (count_nonzero, not np.mean: run right after the kernels, with Python's code and data
        # cold in cache, the two means took 78-124 us of a GAN step, the counts 36-49; AMD EPYC Zen 4)
        return {"discriminator_loss": discriminator_loss, "generator_loss": generator_loss,
                "real_accuracy": np.count_nonzero(logits[:n] > 0) / n,
                "fake_accuracy": np.count_nonzero(logits[n:] <= 0) / n}

    def labels(self, n):
        """(2n, 1) float32: n ones (real), then n zeros (generated), for n >= 1; made once for a
        batch size (the step's own: never handed out)."""
        if self.label_cache is None or len(self.label_cache) != 2 * n:
            n = positive_int("n", n)
            self.label_cache = np.concatenate([np.ones((n, 1), np.float32), np.zeros((n, 1), np.float32)])
        return self.label_cache

