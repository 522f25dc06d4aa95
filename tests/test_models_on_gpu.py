"""The GAN's, the DCGAN's and the GPT's training steps on each GPU backend against the same steps on
numba-cpu, from the same weights and batches: the losses of every step and the parameters after
the last. numba-cpu is held to TensorFlow by tests/test_gan.py, test_dcgan.py and test_gpt.py; these run
where TensorFlow is not (the GPU machine). Under the CUDA simulator (GPU threads as Python
threads) the numba-cuda backend takes one step of the smallest models (~20 s each); on a GPU,
three steps of larger ones.

Tolerances: float32 sums in another order (the GPU's tiles, its exp and tanh) differ by ~1e-6
relative in one step; Adam's first steps move each weight by about lr whatever the size of its
gradient, so weights whose gradients are nearly zero magnify that: 1e-4 for the losses, 1e-3 for
the parameters after three steps. The attention's key bias is left out: softmax ignores a shift
of every score of a row, which is all it adds, so its gradient is rounding noise on both
backends, and Adam turns noise into steps of lr (tests/test_gpt.py says the same).
"""

import numpy as np
import pytest

import pyai
from conftest import CUDA_SIMULATOR, assert_close, require
from pyai.models import DCGAN, GAN, GPT
from pyai.optim import Adam

LOSS_TOLERANCE, PARAMETER_TOLERANCE = 1e-4, 1e-3
# The GPT's Adam epsilon: with Keras's 1e-7, a bias whose gradient happened to be ~1e-7 of the tiny
# model's (a sum of a few tokens' near-cancelling terms) moved by lr g / (|g| + 1e-7), and the
# backends' 1e-2 relative difference in such a g came out as 1.5e-3 in the parameters (seed
# 1695870969, on the code of before and after 2026-12-07's layer norm change alike); at 1e-4 a
# gradient that small moves its weight by ~1e-3 lr and a usual one (~1e-2) still by ~lr
GPT_ADAM_EPSILON = 1e-4
SMALL = {"image_shape": (4, 5), "noise_dim": 8, "generator_sizes": (16, 12), "discriminator_sizes": (12,)}
# the DCGAN's: the simulator's (a 1 x 1 x 3 feature map doubled twice to 4 x 4), then a GPU's (2 x 2 x 8 to 8 x 8)
SMALL_DCGAN = {True: {"image_shape": (4, 4), "noise_dim": 3, "generator_sizes": (5,), "generator_filters": (3, 2, 2),
                      "discriminator_filters": (2, 3)},
               False: {"image_shape": (8, 8), "noise_dim": 6, "generator_sizes": (12,),
                       "generator_filters": (8, 4, 3), "discriminator_filters": (4, 8)}}
# (steps, GAN batch, GPT sizes, GPT batch): the simulator's, then a GPU's
SIZES = {True: (1, 2, {"vocab_size": 5, "block_size": 4, "layers": 1, "heads": 1, "channels": 4}, 1),
         False: (3, 17, {"vocab_size": 13, "block_size": 8, "layers": 2, "heads": 2, "channels": 16}, 3)}


def sizes(backend):
    return SIZES[backend == "numba-cuda" and CUDA_SIMULATOR]


def on_gpu_backend(backend, ops):
    if backend == "numba-cpu":
        pytest.skip("numba-cpu is the reference these tests compare with")
    for op in ops:
        require(op, backend)


def gan_steps(backend, batches, model=GAN, options=SMALL):
    """(losses of each step, parameters after them) of a small GAN (or DCGAN) trained on `backend`."""
    gan = model(**options, seed=3)
    with pyai.use_backend(backend):
        losses = [[step[key] for key in ("discriminator_loss", "generator_loss")]
                  for step in (gan.train_step(*batch) for batch in batches)]
    return losses, dict(gan.parameters())


def gpt_steps(backend, batches, gpt_sizes):
    model, optimizer = GPT(**gpt_sizes, seed=3), Adam(lr=0.01, epsilon=GPT_ADAM_EPSILON)
    losses = []
    with pyai.use_backend(backend):
        for ids, targets in batches:
            losses.append(model.train_step(ids, targets))
            optimizer.step(model)
    return losses, dict(model.parameters())


def assert_same_training(backend, steps, batches, *options):
    losses, parameters = steps(backend, batches, *options)
    reference_losses, reference_parameters = steps("numba-cpu", batches, *options)
    assert_close(f"{backend} losses of {len(batches)} steps", losses, reference_losses, LOSS_TOLERANCE)
    for name, parameter in parameters.items():
        if name.endswith("attn.key.bias"):
            continue
        assert_close(f"{backend} {name} after {len(batches)} steps", parameter, reference_parameters[name],
                     PARAMETER_TOLERANCE)


def test_gan_steps_on_a_gpu_backend_equal_numba_cpus(backend, rng):
    on_gpu_backend(backend, GAN.TRAINING_OPS)
    steps, batch, _, _ = sizes(backend)
    pixels, noise = SMALL["image_shape"][0] * SMALL["image_shape"][1], SMALL["noise_dim"]
    batches = [(rng.uniform(-1, 1, (batch, pixels)).astype(np.float32),
                rng.standard_normal((batch, noise), dtype=np.float32),
                rng.standard_normal((batch, noise), dtype=np.float32)) for _ in range(steps)]
    assert_same_training(backend, gan_steps, batches)


def test_dcgan_steps_on_a_gpu_backend_equal_numba_cpus(backend, rng):
    on_gpu_backend(backend, DCGAN.TRAINING_OPS)
    steps, batch, _, _ = sizes(backend)
    options = SMALL_DCGAN[backend == "numba-cuda" and CUDA_SIMULATOR]
    pixels = options["image_shape"][0] * options["image_shape"][1]
    batches = [(rng.uniform(-1, 1, (batch, pixels)).astype(np.float32),
                rng.standard_normal((batch, options["noise_dim"]), dtype=np.float32),
                rng.standard_normal((batch, options["noise_dim"]), dtype=np.float32)) for _ in range(steps)]
    assert_same_training(backend, gan_steps, batches, DCGAN, options)


def gpt_batches(rng, steps, gpt_sizes, batch):
    shape = (batch, gpt_sizes["block_size"])
    return [(rng.integers(0, gpt_sizes["vocab_size"], shape), rng.integers(0, gpt_sizes["vocab_size"], shape))
            for _ in range(steps)]


def test_gpt_steps_on_a_gpu_backend_equal_numba_cpus(backend, rng):
    on_gpu_backend(backend, GPT.TRAINING_OPS)
    steps, _, gpt_sizes, batch = sizes(backend)
    assert_same_training(backend, gpt_steps, gpt_batches(rng, steps, gpt_sizes, batch), gpt_sizes)
