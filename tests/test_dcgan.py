"""pyai.models.DCGAN against the same DCGAN in Keras (Conv2D, Conv2DTranspose, GradientTape + Adam),
and the conv layers it is made of.

Tolerances, relative (||pyai - keras|| / ||keras||), as in test_gan.py (see its docstring):
  1e-5 for outputs, losses and gradients at step 0: float32 on both sides, sums of up to 6272
       products (the discriminator's Dense) added in different orders.
  1e-2 for the losses of 20 free-running steps, 5e-2 for the weights after them (the loop and
       its checks are test_gan.py's assert_steps_match_keras): a rounding difference can tip a
       pre-activation across LeakyReLU's kink, and the GAN's game carries it on.
The 20 steps run a smaller DCGAN (the same layers, fewer channels, 16x16 images) to keep the suite
short; step 0 runs the full one.
"""

import numpy as np
import pytest

from conftest import assert_close, require, skip_in_cuda_simulator
from pyai import checkpoint
from pyai.models import DCGAN, GAN
from pyai.nn import Conv2D, Conv2DTranspose, Dense, Flatten, Reshape
from pyai.reference.keras import keras_train_step, to_keras
from pyai.training import Training, train_gan
from test_gan import (BATCH, assert_gradients_close, assert_one_generator_forward_gives_the_floats_of_two,
                      assert_steps_match_keras, batch, bce)

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

TOLERANCE = 1e-5
DCGAN_OPS = ["linear", "matmul", "conv2d", "conv2d_grad", "conv2d_transpose", "conv2d_transpose_grad",
             "leaky_relu_grad", "tanh_grad", "sigmoid", "binary_crossentropy_logits",
             "binary_crossentropy_logits_grad", "adam_update"]
NARROW = {"generator_sizes": (64,), "generator_filters": (16, 8, 4), "discriminator_filters": (8, 16)}
TINY = {"image_shape": (8, 12), "noise_dim": 6, **NARROW}


def require_all(backend):
    for op in DCGAN_OPS:
        require(op, backend)


def randomize_biases(gan, rng):
    for _, network, _ in gan.networks():
        for layer in network.layers:
            if layer.parameters():
                layer.bias[...] = rng.normal(0, 0.1, layer.bias.shape)


def test_the_dcgan_architecture():
    gan = DCGAN()
    def describe(layer):
        if isinstance(layer, Dense):
            return ("Dense", layer.in_features, layer.out_features, layer.activation)
        if isinstance(layer, (Conv2D, Conv2DTranspose)):
            return (type(layer).__name__, layer.in_channels, layer.out_channels, layer.kernel_size,
                    layer.stride, layer.padding, layer.activation)
        return (type(layer).__name__, layer.shape) if not isinstance(layer, Flatten) else ("Flatten",)

    assert [describe(layer) for layer in gan.generator.layers] == [
        ("Dense", 100, 256, "leaky_relu"), ("Dense", 256, 7 * 7 * 128, "leaky_relu"), ("Reshape", (7, 7, 128)),
        ("Conv2DTranspose", 128, 64, (4, 4), (2, 2), "same", "leaky_relu"),
        ("Conv2DTranspose", 64, 32, (4, 4), (2, 2), "same", "leaky_relu"),
        ("Conv2D", 32, 1, (3, 3), (1, 1), "same", "tanh"), ("Flatten",)]
    assert [describe(layer) for layer in gan.discriminator.layers] == [
        ("Reshape", (28, 28, 1)), ("Conv2D", 1, 64, (3, 3), (2, 2), "same", "leaky_relu"),
        ("Conv2D", 64, 128, (3, 3), (2, 2), "same", "leaky_relu"), ("Flatten",), ("Dense", 7 * 7 * 128, 1, None)]
    layers = [layer for _, network, _ in gan.networks() for layer in network.layers if layer.parameters()]
    assert all(layer.alpha == 0.01 for layer in layers if layer.activation == "leaky_relu")
    assert all((optimizer.lr, optimizer.beta_1) == (1e-4, 0.9) for _, _, optimizer in gan.networks())
    assert gan.generate(np.zeros((2, 100), np.float32)).shape == (2, 784)


def test_forward_outputs_and_gradients_at_step_0_match_keras(backend, rng):
    require_all(backend)
    skip_in_cuda_simulator(backend, "a DCGAN step on 28x28 images")
    gan = DCGAN(seed=int(rng.integers(1000)))
    randomize_biases(gan, rng)
    generator, discriminator = to_keras(gan)
    real, noise, generator_noise = batch(rng, gan)

    fake = gan.generate(noise)
    assert_close(f"generator output ({backend})", fake, generator(noise).numpy(), TOLERANCE)
    assert_close(f"discriminator output ({backend})", gan.discriminate(real), discriminator(real).numpy(),
                 TOLERANCE)

    losses = gan.train_step(real, noise, generator_noise)
    images = tf.concat([real, fake], axis=0)
    targets = tf.concat([tf.ones((BATCH, 1)), tf.zeros((BATCH, 1))], axis=0)
    critic = keras.Sequential(discriminator.layers[:-1])
    with tf.GradientTape() as tape:
        loss = bce(targets, critic(images))
    assert_close(f"discriminator loss ({backend})", losses["discriminator_loss"], loss.numpy(), TOLERANCE)
    assert_gradients_close(f"discriminator gradient ({backend})", gan.discriminator.gradients(),
                           tape.gradient(loss, critic.trainable_weights))

    # the generator's loss and gradients: the generator before its update, the discriminator after its own
    updated_critic = keras.Sequential(to_keras(gan)[1].layers[:-1])
    with tf.GradientTape() as tape:
        logits = updated_critic(generator(generator_noise))
        loss = bce(tf.ones_like(logits), logits)
    assert_close(f"generator loss ({backend})", losses["generator_loss"], loss.numpy(), TOLERANCE)
    assert_gradients_close(f"generator gradient ({backend})", gan.generator.gradients(),
                           tape.gradient(loss, generator.trainable_weights))


def test_twenty_training_steps_match_keras(backend, rng):
    require_all(backend)
    skip_in_cuda_simulator(backend, "twenty DCGAN steps on 16x16 images")
    gan = DCGAN(image_shape=(16, 16), **NARROW, seed=int(rng.integers(1000)))
    keras_models = to_keras(gan)
    assert_steps_match_keras(backend, gan, keras_models,
                             keras_train_step(*keras_models, learning_rate=1e-4, beta_1=0.9), rng)


def test_resuming_from_a_checkpoint_is_exact(backend, rng, tmp_path):
    require_all(backend)
    skip_in_cuda_simulator(backend, "three epochs of DCGAN training")
    images = rng.uniform(-1, 1, (40, 96)).astype(np.float32)
    seed = int(rng.integers(1000))
    straight, training = DCGAN(**TINY, seed=seed), Training(seed=seed, batch_size=16)
    train_gan(straight, images, training, epochs=2, progress=False)
    checkpoint.save(tmp_path / "straight.npz", straight, training=training)

    first, half = DCGAN(**TINY, seed=seed), Training(seed=seed, batch_size=16)
    train_gan(first, images, half, epochs=1, progress=False)
    checkpoint.save(tmp_path / "half.npz", first, training=half)
    resumed_training = Training()
    resumed, _ = checkpoint.load(tmp_path / "half.npz", DCGAN, training=resumed_training)
    train_gan(resumed, images, resumed_training, epochs=2, progress=False)
    checkpoint.save(tmp_path / "resumed.npz", resumed, training=resumed_training)

    expected, got = checkpoint.read_npz(tmp_path / "straight.npz"), checkpoint.read_npz(tmp_path / "resumed.npz")
    assert sorted(expected) == sorted(got)
    for name in expected:
        assert np.array_equal(expected[name], got[name]), f"{name} differs after resuming ({backend})"


@pytest.mark.parametrize("config, batch_size", [(TINY, 3), ({}, BATCH)])
def test_one_generator_forward_for_both_batches_gives_the_floats_of_two(rng, config, batch_size):
    assert_one_generator_forward_gives_the_floats_of_two(lambda: DCGAN(seed=3, **config), rng, batch_size, steps=2)


def test_a_dense_gan_checkpoint_does_not_make_a_dcgan(tmp_path):
    checkpoint.save(tmp_path / "gan.npz", GAN(image_shape=(8, 12), noise_dim=6), training=Training())
    with pytest.raises(checkpoint.CheckpointError, match="does not make a DCGAN"):
        checkpoint.load(tmp_path / "gan.npz", DCGAN)


def test_bad_configurations_are_clear_errors():
    with pytest.raises(ValueError, match=r"image_shape: expected \(height, width\), each a multiple of 4"):
        DCGAN(image_shape=(30, 28))
    with pytest.raises(ValueError, match=r"image_shape: expected \(height, width\)"):
        DCGAN(image_shape=(28, 28, 1))
    with pytest.raises(ValueError, match="generator_filters: expected a positive integer"):
        DCGAN(generator_filters=(16, 0, 4))


def test_conv_layers_check_their_input_and_order():
    conv = Conv2D(3, 4, 3)
    with pytest.raises(ValueError, match=r"expected x of shape \(batch, height, width, 3\)"):
        conv.forward(np.zeros((2, 5, 5, 2), np.float32))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        conv.backward(np.zeros((2, 5, 5, 4), np.float32))
    with pytest.raises(ValueError, match="padding: expected 'same' or 'valid'"):
        Conv2DTranspose(3, 4, 3, padding="full")
    reshape = Reshape((2, 3))
    with pytest.raises(ValueError, match=r"expected x of shape \(batch, ...\) with 6 values"):
        reshape.forward(np.zeros((4, 7)))
    y = reshape.forward(np.arange(12.0).reshape(2, 6))
    assert y.shape == (2, 2, 3) and reshape.backward(y).shape == (2, 6)
    flatten = Flatten()
    assert flatten.forward(np.zeros((3, 2, 2, 5))).shape == (3, 20)
    assert flatten.backward(np.ones((3, 20))).shape == (3, 2, 2, 5)
