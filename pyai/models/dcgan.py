"""A convolutional GAN (DCGAN): Dense layers up to a small feature map, transposed convolutions up
to the image; a convolutional discriminator.

    gan = DCGAN(image_shape=(28, 28))        # noise 100; Adam(1e-4); LeakyReLU(0.01)
    losses = gan.train_step(real, noise, generator_noise)
    images = gan.generate(noise)             # (n, pixels) in [-1, 1], like GAN's

    generator:     z (100) -> Dense 256 -> Dense (H/4)(W/4)128 -> reshape (H/4, W/4, 128)
                   -> Conv2DTranspose 64, 4x4, stride 2, 'same' -> Conv2DTranspose 32, 4x4, stride 2
                   -> Conv2D 1, 3x3, 'same', tanh -> flatten to pixels
    discriminator: pixels -> reshape (H, W, 1) -> Conv2D 64, 3x3, stride 2 -> Conv2D 128, 3x3,
                   stride 2 -> flatten -> Dense 1 -> logit
Every hidden layer is followed by LeakyReLU(alpha), fused into its op. With MNIST's 28x28 the
feature map is 7x7 and the discriminator's is 7x7x128 before the Dense. A Keras generator written
as Dense layers straight into Conv2DTranspose would hand a 2-d tensor to a 4-d layer and fail;
here the Reshape makes the feature map, as a DCGAN does.

Images go in and out flat, (n, pixels) in [-1, 1], as for `GAN`, so the same training loop,
checkpoints, sample grids and quality measures serve both: DCGAN is a GAN with other networks
(the training step is GAN's, the discriminator's logit trained with binary cross-entropy).
"""

import math

import numpy as np

from pyai import warmup
from pyai.checks import fits_in_memory, positive_int, real_number
from pyai.losses import BinaryCrossentropy
from pyai.models.gan import GAN
from pyai.nn import Conv2D, Conv2DTranspose, Dense, FlatParameters, Flatten, Reshape, Sequential
from pyai.optim import Adam

UPSAMPLE_KERNEL = 4   # each Conv2DTranspose: 4x4, stride 2, 'same'
KERNEL = 3            # the generator's last Conv2D and the discriminator's: 3x3
STRIDE = 2


class DCGAN(GAN):
    """The convolutional generator and discriminator, their two Adams, and GAN's training step."""

    TRAINING_OPS = GAN.TRAINING_OPS + ("conv2d", "conv2d_grad", "conv2d_transpose", "conv2d_transpose_grad")

    def __init__(self, image_shape=(28, 28), noise_dim=100, generator_sizes=(256,),
                 generator_filters=(128, 64, 32), discriminator_filters=(64, 128), alpha=0.01,
                 learning_rate=1e-4, beta_1=0.9, seed=0):
        self.image_shape = tuple(positive_int(f"image_shape[{i}]", size) for i, size in enumerate(image_shape))
        generator_filters = [positive_int("generator_filters", size) for size in generator_filters]
        discriminator_filters = [positive_int("discriminator_filters", size) for size in discriminator_filters]
        generator_sizes = [positive_int("generator_sizes", size) for size in generator_sizes]
        scale = STRIDE ** (len(generator_filters) - 1)
        if len(self.image_shape) != 2 or any(size % scale for size in self.image_shape):
            raise ValueError(f"image_shape: expected (height, width), each a multiple of {scale} (the "
                             f"generator doubles its feature map {len(generator_filters) - 1} times), "
                             f"got {tuple(image_shape)}")
        if not generator_filters or not discriminator_filters:
            raise ValueError("generator_filters, discriminator_filters: expected at least one each")
        self.pixels = math.prod(self.image_shape)
        self.noise_dim = positive_int("noise_dim", noise_dim)
        alpha = real_number("alpha", alpha, low=0.0)
        height, width = self.image_shape
        start = (height // scale, width // scale, generator_filters[0])
        rng = np.random.default_rng(seed)
        self.generator = generator(self.noise_dim, generator_sizes, start, generator_filters, alpha, rng)
        self.discriminator = discriminator(self.image_shape, discriminator_filters, alpha, rng)
        fits_in_memory("generator_sizes, generator_filters, discriminator_filters, image_shape",
                       sum(p.size for _, p in self.generator.parameters() + self.discriminator.parameters()),
                       "a DCGAN")
        self.generator_optimizer = Adam(learning_rate, beta_1=beta_1)
        self.discriminator_optimizer = Adam(learning_rate, beta_1=beta_1)
        self.loss = BinaryCrossentropy(from_logits=True)
        self.config = {"image_shape": list(self.image_shape), "noise_dim": self.noise_dim,
                       "generator_sizes": generator_sizes, "generator_filters": generator_filters,
                       "discriminator_filters": discriminator_filters, "alpha": alpha,
                       "learning_rate": float(learning_rate), "beta_1": float(beta_1), "seed": seed}
        warmup.expect_training("gan-conv")

    def __repr__(self):
        return "DCGAN(" + ", ".join(f"{key}={value!r}" for key, value in self.config.items()) + ")"

    def activation_sizes(self):
        """Floats per example of each generator layer's output (what sampling holds at once)."""
        filters, sizes = self.config["generator_filters"], self.config["generator_sizes"]
        scale = STRIDE ** (len(filters) - 1)
        area = self.pixels // (scale * scale)
        return [*sizes, area * filters[0], *(area * 4 ** k * f for k, f in enumerate(filters[1:], 1)), self.pixels]


def generator(noise_dim, sizes, start, filters, alpha, rng):
    """Dense layers to the (h, w, filters[0]) feature map, Conv2DTranspose layers that double it
    to filters[1:], then a 3x3 Conv2D to one tanh channel, flattened."""
    dense_sizes = [noise_dim, *sizes, math.prod(start)]
    layers = [Dense(inputs, outputs, "leaky_relu", alpha, rng) for inputs, outputs in zip(dense_sizes, dense_sizes[1:])]
    layers.append(Reshape(start))
    layers += [Conv2DTranspose(inputs, outputs, UPSAMPLE_KERNEL, STRIDE, "same", "leaky_relu", alpha, rng)
               for inputs, outputs in zip(filters, filters[1:])]
    layers += [Conv2D(filters[-1], 1, KERNEL, 1, "same", "tanh", rng=rng), Flatten()]
    return flat_network(layers)


def discriminator(image_shape, filters, alpha, rng):
    """3x3 stride-2 Conv2D layers, flattened into a Dense logit."""
    height, width = image_shape
    layers = [Reshape((height, width, 1))]
    for inputs, outputs in zip([1, *filters], filters):
        layers.append(Conv2D(inputs, outputs, KERNEL, STRIDE, "same", "leaky_relu", alpha, rng))
        height, width = -(-height // STRIDE), -(-width // STRIDE)
    layers += [Flatten(), Dense(height * width * filters[-1], 1, None, rng=rng)]
    return flat_network(layers)


def flat_network(layers):
    """A Sequential of `layers` with its parameters in one flat buffer, as the Dense GAN's."""
    network = Sequential(*layers)
    network.flat = FlatParameters(network)
    return network
