"""pyai.models.GAN against the same GAN in Keras (tf.GradientTape + Adam), step by step.

Tolerances, relative (||pyai - keras|| / ||keras||):
  1e-5 for outputs, losses and gradients at step 0: float32 on both sides, sums of up to 1024
       products per element, added in a different order by each library.
  1e-2 for the 20 discriminator and generator losses of 20 free-running training steps, and 5e-2
       for the weights after them. In about three draws of five they agree to 1e-7. In the rest,
       a rounding difference tips something discrete (a pre-activation across LeakyReLU's kink,
       slope 1 against 0.2) or lands on a weight whose gradient is tiny so far, where Adam's
       m / sqrt(v) turns it into a learning-rate-sized step; the GAN's game then carries the
       difference on and it grows. pyai against itself with every weight nudged by one ulp
       diverges as much. Over 150 draws the worst was 1.9e-3 for the losses and 1.2e-2 for the
       weights; a wrong Adam beta_1 is off by 2e-1.
Accuracies are thresholds on logits, so a logit within rounding of 0 may flip: at most one image
of a batch may be counted differently.
"""

import subprocess
import sys

import numpy as np
import pytest

from conftest import assert_close, require, skip_in_cuda_simulator
from pyai import checkpoint
from pyai.data import load_digits
from pyai.models import GAN, MLP
from pyai.quality import frechet_distance, quality_report, train_classifier
from pyai.reference.keras import from_keras, keras_train_step, to_keras
from pyai.training import GAN_HISTORY_COLUMNS, Training, train_gan

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

TOLERANCE = 1e-5
# A GAN's gradients pass back through LeakyReLU units (the DCGAN's: 800k in the generator, 100k
# in the discriminator); a unit whose input lies within rounding of 0 (seen: 7e-11) can take the slope 1
# in one library and alpha (0.2, the DCGAN's 0.01) in the other (seen: the layers before such a unit 2e-4 to 1.4e-3 off,
# the layers after it within 1e-6)
THROUGH_KINKS_TOLERANCE = 5e-3
# A one-element bias gradient (the DCGAN generator's last Conv2D) is a sum over 100k positions that can
# nearly cancel (seen: 9e-3 relative); each tensor is held to PER_TENSOR_TOLERANCE, a network's
# gradients together to THROUGH_KINKS_TOLERANCE
PER_TENSOR_TOLERANCE = 5e-2


def assert_gradients_close(what, gradients, references):
    gradients = [(name, np.asarray(grad, np.float64)) for name, grad in gradients]
    references = [np.asarray(ref, np.float64) for ref in references]
    for (name, grad), ref in zip(gradients, references, strict=True):
        assert_close(f"{what} of {name}", grad, ref, PER_TENSOR_TOLERANCE)
    assert_close(f"{what}s together", np.concatenate([grad.ravel() for _, grad in gradients]),
                 np.concatenate([ref.ravel() for ref in references]), THROUGH_KINKS_TOLERANCE)


LOSSES_AFTER_STEPS_TOLERANCE = 1e-2
WEIGHTS_AFTER_STEPS_TOLERANCE = 5e-2
GAN_OPS = GAN.TRAINING_OPS
BATCH = 64
SMALL = {"image_shape": (4, 5), "noise_dim": 8, "generator_sizes": (16, 12), "discriminator_sizes": (12,)}


def require_all(backend):
    for op in GAN_OPS:
        require(op, backend)
    skip_in_cuda_simulator(backend, "training the GAN (a matmul takes ~1 s there)")


def batch(rng, gan, n=BATCH):
    """Real images (uniform in [-1, 1]) and the two noise batches of one step."""
    real = rng.uniform(-1, 1, (n, gan.pixels)).astype(np.float32)
    noise = rng.standard_normal((n, gan.noise_dim), dtype=np.float32)
    return real, noise, rng.standard_normal((n, gan.noise_dim), dtype=np.float32)


def randomize_biases(gan, rng):
    """Keras starts biases at zero; nonzero ones test that they are used and copied."""
    for _, network, _ in gan.networks():
        for dense in network.layers:
            dense.bias[...] = rng.normal(0, 0.1, dense.bias.shape)


def logits_of(discriminator):
    return keras.Sequential(discriminator.layers[:-1])


def bce(targets, logits):
    return keras.losses.BinaryCrossentropy(from_logits=True)(targets, logits)


def test_importing_pyai_does_not_import_tensorflow():
    code = ("import sys, pyai, pyai.models.gan, pyai.checkpoint, pyai.training, pyai.reference; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_the_gan_architecture():
    gan = GAN()
    def layers(network):
        return [(dense.in_features, dense.out_features, dense.activation) for dense in network.layers]

    assert layers(gan.generator) == [(100, 256, "leaky_relu"), (256, 512, "leaky_relu"),
                                     (512, 1024, "leaky_relu"), (1024, 784, "tanh")]
    assert layers(gan.discriminator) == [(784, 512, "leaky_relu"), (512, 256, "leaky_relu"), (256, 1, None)]
    assert all(dense.alpha == 0.2 for _, network, _ in gan.networks() for dense in network.layers)
    assert all((optimizer.lr, optimizer.beta_1) == (2e-4, 0.5) for _, _, optimizer in gan.networks())


def test_forward_outputs_and_gradients_at_step_0_match_keras(backend, rng):
    require_all(backend)
    gan = GAN(seed=int(rng.integers(1000)))
    randomize_biases(gan, rng)
    generator, discriminator = to_keras(gan)
    real, noise, generator_noise = batch(rng, gan)

    fake = gan.generate(noise)
    assert_close(f"generator output ({backend})", fake, generator(noise).numpy(), TOLERANCE)
    assert_close(f"discriminator output ({backend})", gan.discriminate(real), discriminator(real).numpy(),
                 TOLERANCE)

    losses = gan.train_step(real, noise, generator_noise)
    # the discriminator's loss and gradients, at the weights before its update
    images = tf.concat([real, fake], axis=0)
    targets = tf.concat([tf.ones((BATCH, 1)), tf.zeros((BATCH, 1))], axis=0)
    critic = logits_of(discriminator)
    with tf.GradientTape() as tape:
        loss = bce(targets, critic(images))
    assert_close(f"discriminator loss ({backend})", losses["discriminator_loss"], loss.numpy(), TOLERANCE)
    assert_gradients_close(f"discriminator gradient ({backend})", gan.discriminator.gradients(),
                           tape.gradient(loss, critic.trainable_weights))

    # the generator's loss and gradients, through the discriminator as pyai updated it
    for layer, dense in zip(critic.layers[::2], gan.discriminator.layers, strict=True):
        layer.set_weights([dense.weight, dense.bias])
    with tf.GradientTape() as tape:
        logits = critic(generator(generator_noise))
        loss = bce(tf.ones_like(logits), logits)
    assert_close(f"generator loss ({backend})", losses["generator_loss"], loss.numpy(), TOLERANCE)
    assert_gradients_close(f"generator gradient ({backend})", gan.generator.gradients(),
                           tape.gradient(loss, generator.trainable_weights))


def assert_steps_match_keras(what, gan, keras_models, keras_step, rng, steps=20):
    """`steps` training steps of `gan` and of its Keras twins (keras_models: (generator,
    discriminator), trained by keras_step) on the same batches: the losses within
    LOSSES_AFTER_STEPS_TOLERANCE, at most one image's accuracy flipped, every weight after them
    within WEIGHTS_AFTER_STEPS_TOLERANCE."""
    rows, rows_ref = [], []
    for _ in range(steps):
        real, noise, generator_noise = batch(rng, gan)
        losses = gan.train_step(real, noise, generator_noise)
        rows.append([losses[column] for column in GAN_HISTORY_COLUMNS])
        rows_ref.append([float(value) for value in keras_step(real, noise, generator_noise)])
    rows, rows_ref = np.array(rows), np.array(rows_ref)

    assert_close(f"discriminator losses over {steps} steps ({what})", rows[:, 0], rows_ref[:, 0],
                 LOSSES_AFTER_STEPS_TOLERANCE)
    assert_close(f"generator losses over {steps} steps ({what})", rows[:, 1], rows_ref[:, 1],
                 LOSSES_AFTER_STEPS_TOLERANCE)
    worst = np.abs(rows[:, 2:] - rows_ref[:, 2:]).max()
    assert worst <= 1 / BATCH, f"accuracies differ by {worst} ({what}): more than one image flipped"
    for name, model, network in zip(("generator", "discriminator"), keras_models,
                                    (gan.generator, gan.discriminator), strict=True):
        for (parameter_name, parameter), ref in zip(network.parameters(), model.trainable_weights, strict=True):
            assert_close(f"{name} {parameter_name} after {steps} steps ({what})", parameter, ref.numpy(),
                         WEIGHTS_AFTER_STEPS_TOLERANCE)


def test_twenty_training_steps_match_keras(backend, rng):
    require_all(backend)
    gan = GAN(seed=int(rng.integers(1000)))
    keras_models = to_keras(gan)
    assert_steps_match_keras(backend, gan, keras_models, keras_train_step(*keras_models), rng)


def test_weights_go_to_keras_and_come_back(backend, rng):
    require_all(backend)
    gan = GAN(**SMALL, alpha=0.3, seed=int(rng.integers(1000)))
    randomize_biases(gan, rng)
    generator, discriminator = to_keras(gan)
    real, noise, _ = batch(rng, gan, n=7)
    assert_close(f"to_keras generator ({backend})", generator(noise).numpy(), gan.generate(noise), TOLERANCE)
    assert_close(f"to_keras discriminator ({backend})", discriminator(real).numpy(), gan.discriminate(real),
                 TOLERANCE)

    # Keras weights of its own, unlike anything pyai drew, come back into a new GAN
    for model in (generator, discriminator):
        model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in model.get_weights()])
    back = from_keras(generator, discriminator, image_shape=SMALL["image_shape"])
    assert back.config["alpha"] == 0.3 and back.image_shape == (4, 5)
    assert_close(f"from_keras generator ({backend})", back.generate(noise), generator(noise).numpy(), TOLERANCE)
    assert_close(f"from_keras discriminator ({backend})", back.discriminate(real), discriminator(real).numpy(),
                 TOLERANCE)


def test_from_keras_refuses_another_architecture():
    generator, discriminator = to_keras(GAN(**SMALL))
    wrong_activation = keras.Sequential([keras.Input((20,)), keras.layers.Dense(12), keras.layers.ReLU(),
                                         keras.layers.Dense(1), keras.layers.Activation("sigmoid")])
    with pytest.raises(ValueError, match="discriminator: its layers .* are not a pyai GAN's"):
        from_keras(generator, wrong_activation, image_shape=(4, 5))
    with pytest.raises(ValueError, match="20 pixels, not a square; pass the shape"):
        from_keras(generator, discriminator)


def test_train_step_checks_its_inputs():
    gan = GAN(**SMALL)
    real, noise = np.zeros((6, 20), np.float32), np.zeros((6, 8), np.float32)
    with pytest.raises(ValueError, match=r"real: expected shape \(batch, 20\)"):
        gan.train_step(np.zeros((6, 21)), noise, noise)
    with pytest.raises(ValueError, match=r"generator_noise: expected shape \(6, 8\)"):
        gan.train_step(real, noise, np.zeros((5, 8)))


def test_the_image_gradient_equals_the_full_backward_and_checks_dy(rng):
    """backward_to_input (the generator's update: kernels without the ops' checks where dy has
    the discriminator's output shape) gives the input gradient of the full backward, bit for
    bit; a dy of another shape is refused with the layer's error, not read out of bounds."""
    from pyai.models.gan import backward_to_input
    gan = GAN(**SMALL)
    images = rng.uniform(-1, 1, (6, 20)).astype(np.float32)
    dy = rng.standard_normal((6, 1)).astype(np.float32)
    gan.discriminator.forward(images)
    np.testing.assert_array_equal(backward_to_input(gan.discriminator, dy), gan.discriminator.backward(dy))
    with pytest.raises(ValueError, match=r"dy must have the forward output's shape \(6, 1\), got \(6, 2\)"):
        backward_to_input(gan.discriminator, np.ones((6, 2), np.float32))


def assert_one_generator_forward_gives_the_floats_of_two(make, rng, batch_size, steps=3):
    """train_step with one generator forward for both batches of images (its layers are
    row-wise) against the same GAN made to run two forwards: the same losses, accuracies,
    parameters and Adam moments, bit for bit."""
    one, two = make(), make()
    assert one.generator.row_wise()
    two.generator.row_wise = lambda: False
    for _ in range(steps):
        step = batch(rng, one, batch_size)
        assert one.train_step(*step) == two.train_step(*step)
    for (name, parameter), (_, expected) in zip(one.parameters(), two.parameters(), strict=True):
        np.testing.assert_array_equal(parameter, expected, err_msg=name)
    for prefix, optimizer in one.optimizers().items():
        for (key, array), (_, expected) in zip(optimizer.state().items(), two.optimizers()[prefix].state().items(),
                                              strict=True):
            np.testing.assert_array_equal(array, expected, err_msg=prefix + key)


@pytest.mark.parametrize("config, batch_size", [(SMALL, 5), ({}, BATCH)])
def test_one_generator_forward_for_both_batches_gives_the_floats_of_two(rng, config, batch_size):
    assert_one_generator_forward_gives_the_floats_of_two(lambda: GAN(seed=3, **config), rng, batch_size)


def test_batches_of_another_size_get_labels_of_their_size(rng):
    """train_step keeps its (2n, 1) labels from step to step (GAN.labels): batches of 5, 3, then 5
    again give the floats of a GAN that makes them afresh every step."""
    one, two = GAN(seed=5, **SMALL), GAN(seed=5, **SMALL)
    two.labels = lambda n: np.concatenate([np.ones((n, 1), np.float32), np.zeros((n, 1), np.float32)])
    for batch_size in (5, 3, 5):
        step = batch(rng, one, batch_size)
        assert one.train_step(*step) == two.train_step(*step)
        assert one.labels(batch_size).shape == (2 * batch_size, 1)
    for (name, parameter), (_, expected) in zip(one.parameters(), two.parameters(), strict=True):
        np.testing.assert_array_equal(parameter, expected, err_msg=name)
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="n: expected a positive integer"):
            one.labels(bad)


def test_resuming_from_a_checkpoint_is_exact(backend, rng, tmp_path):
    """Two epochs straight, or one, a checkpoint, a new GAN loaded from it, and one more: bit for
    bit the same weights, optimizer states, history and random generator."""
    require_all(backend)
    images = rng.uniform(-1, 1, (50, 20)).astype(np.float32)
    seed = int(rng.integers(1000))
    straight, training = GAN(**SMALL, seed=seed), Training(seed=seed, batch_size=16)
    train_gan(straight, images, training, epochs=2, progress=False)
    checkpoint.save(tmp_path / "straight.npz", straight, training=training)

    first, half = GAN(**SMALL, seed=seed), Training(seed=seed, batch_size=16)
    train_gan(first, images, half, epochs=1, progress=False)
    checkpoint.save(tmp_path / "half.npz", first, training=half)
    resumed_training = Training()
    resumed, _ = checkpoint.load(tmp_path / "half.npz", GAN, training=resumed_training)
    assert resumed_training.epoch == 1 and len(resumed_training.history) == 3
    train_gan(resumed, images, resumed_training, epochs=2, progress=False)
    checkpoint.save(tmp_path / "resumed.npz", resumed, training=resumed_training)

    expected, got = checkpoint.read_npz(tmp_path / "straight.npz"), checkpoint.read_npz(tmp_path / "resumed.npz")
    assert sorted(expected) == sorted(got)
    for name in expected:
        assert np.array_equal(expected[name], got[name]), f"{name} differs after resuming ({backend})"


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    MLP([4, 3]).save(tmp_path / "mlp.npz")
    with pytest.raises(checkpoint.CheckpointError, match="does not make a GAN"):
        checkpoint.load(tmp_path / "mlp.npz", GAN)
    gan = GAN(**SMALL)
    checkpoint.save(tmp_path / "gan.npz", gan, training=Training())
    arrays = checkpoint.read_npz(tmp_path / "gan.npz")
    arrays["weights/generator/0.weight"] = np.zeros((8, 17), np.float32)
    checkpoint.write_npz(tmp_path / "edited.npz", arrays)
    with pytest.raises(checkpoint.CheckpointError, match=r"'generator/0.weight' is float32\[8, 17\], this model"):
        checkpoint.load(tmp_path / "edited.npz", GAN)


def test_frechet_distance_matches_the_formula_with_a_general_matrix_square_root(rng):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(0.5, 2.0, size=(300, 6))
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy_linalg.sqrtm(cov_a @ cov_b).real
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a + cov_b - 2 * root)
    # float64 throughout; the two square roots differ only by rounding
    assert abs(frechet_distance(a, b) - expected) <= 1e-9 * expected
    assert abs(frechet_distance(a, a)) <= 1e-9 * np.trace(cov_a), "a set against itself is at distance 0"


def test_quality_report_tells_digits_from_noise(rng):
    x_train, labels_train, x_test, _ = load_digits()
    classifier, accuracy = train_classifier(x_train * 2 - 1, labels_train)
    assert accuracy > 0.85, f"the digit classifier is {accuracy:.1%} accurate on held-out digits"
    real = quality_report(classifier, x_train * 2 - 1, x_test * 2 - 1)
    noise = quality_report(classifier, x_train * 2 - 1, rng.uniform(-1, 1, x_test.shape))
    assert real["confident"] > 0.6 and real["classes"] == 10, real
    assert noise["confident"] < real["confident"] / 2, (real, noise)
    assert noise["frechet_distance"] > 5 * real["frechet_distance"], (real, noise)
