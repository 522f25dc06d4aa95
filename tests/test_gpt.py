"""pyai.models.GPT (2 blocks) against the same model in Keras with copied weights: logits, loss,
every parameter's gradient, and the losses of 10 Adam steps; then checkpoints, sampling, and the
`pyai train gpt` / `pyai sample gpt` commands.

Tolerances, relative: 1e-5 for logits and loss (float32 on both sides); 1e-4 for gradients, which
go back through softmax (cross-entropy's and attention's) and the layer norms' division by the
standard deviation, where the two implementations' float32 rounding differences (an online
softmax in pyai's attention, a materialized one in Keras) are amplified; 1e-4 for the losses of
10 Adam steps, where each step's differences feed the next and Adam's division by sqrt(v)
magnifies them for parameters with small gradients.
"""

import numpy as np
import pytest

from conftest import assert_close, require, skip_in_cuda_simulator
from pyai import checkpoint
from pyai.cli import main
from pyai.models import GPT
from pyai.optim import Adam
from pyai.reference.keras import to_keras

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

TOLERANCE = 1e-5
GRADIENT_TOLERANCE = 1e-4
STEPS_TOLERANCE = 1e-4
MODEL_OPS = GPT.TRAINING_OPS
VOCAB, BLOCK, BATCH = 13, 8, 3


def require_all(backend):
    for op in MODEL_OPS:
        require(op, backend)
    skip_in_cuda_simulator(backend, "training the GPT (a matmul takes ~1 s there)")


def small_gpt(tied, rng):
    """2 blocks, with every parameter moved off its initial value, so that a parameter copied to
    the wrong place (or a bias or gamma left at its default) shows."""
    model = GPT(VOCAB, BLOCK, layers=2, heads=2, channels=16, tied=tied, seed=int(rng.integers(1000)))
    for _, parameter in model.parameters():
        parameter += rng.normal(0, 0.1, parameter.shape).astype(np.float32)
    return model


def keras_loss(twin, ids, targets):
    logits = twin(tf.constant(ids))
    losses = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
    return logits, tf.reduce_mean(losses)


def random_tokens(rng):
    return rng.integers(0, VOCAB, (BATCH, BLOCK)), rng.integers(0, VOCAB, (BATCH, BLOCK))


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_gpt_logits_loss_and_gradients_match_keras(backend, rng, tied):
    require_all(backend)
    model = small_gpt(tied, rng)
    twin, variables = to_keras(model)
    ids, targets = random_tokens(rng)
    names = list(variables)
    with tf.GradientTape() as tape:
        logits_ref, loss_ref = keras_loss(twin, ids, targets)
    grads_ref = dict(zip(names, tape.gradient(loss_ref, [variables[name] for name in names])))
    assert_close(f"{backend} tied={tied} logits", model.forward(ids), logits_ref.numpy(), TOLERANCE)
    assert_close(f"{backend} tied={tied} loss", model.train_step(ids, targets), float(loss_ref), TOLERANCE)
    for name, grad in model.gradients():
        grad_ref = tf.convert_to_tensor(grads_ref[name]).numpy().reshape(grad.shape)
        if name.endswith("attn.key.bias"):
            # softmax ignores a shift of every score of a row, which is all the key bias adds: its
            # gradient is zero, so both sides hold only rounding noise
            assert np.abs(grad).max() < 1e-6 and np.abs(grad_ref).max() < 1e-6, f"{backend} {name}"
        else:
            assert_close(f"{backend} tied={tied} d{name}", grad, grad_ref, GRADIENT_TOLERANCE)


def test_gpt_losses_over_10_adam_steps_match_keras(backend, rng):
    require_all(backend)
    model = small_gpt(False, rng)
    twin, variables = to_keras(model)
    names = list(variables)
    optimizer, keras_optimizer = Adam(lr=0.01), keras.optimizers.Adam(learning_rate=0.01)
    losses, keras_losses = [], []
    ids, targets = random_tokens(rng)   # one batch, ten times: the loss must fall as it is learnt
    for _ in range(10):
        losses.append(model.train_step(ids, targets))
        optimizer.step(model)
        with tf.GradientTape() as tape:
            loss = keras_loss(twin, ids, targets)[1]
        # dense gradients: Keras gives the embeddings' as IndexedSlices, which Adam would update lazily
        weights = [variables[name] for name in names]
        grads = [tf.convert_to_tensor(grad) for grad in tape.gradient(loss, weights)]
        keras_optimizer.apply_gradients(zip(grads, weights))
        keras_losses.append(float(loss))
    assert_close(f"{backend} losses of 10 Adam steps", losses, keras_losses, STEPS_TOLERANCE)
    assert losses[-1] < losses[0], f"{backend}: 10 Adam steps did not lower the loss: {losses}"


def test_gpt_checkpoint_restores_weights_optimizer_and_metadata(tmp_path, rng):
    model, optimizer = small_gpt(True, rng), Adam(0.01)
    ids, targets = random_tokens(rng)
    model.train_step(ids, targets)
    optimizer.step(model)
    model.save(tmp_path / "gpt.npz", optimizer, metadata={"step": 1, "vocabulary": "abc"})
    restored_optimizer = Adam(0.01)
    restored, metadata = GPT.load(tmp_path / "gpt.npz", restored_optimizer)
    assert metadata == {"step": 1, "vocabulary": "abc"} and restored.config == model.config
    for (name, parameter), (_, copy) in zip(model.parameters(), restored.parameters(), strict=True):
        np.testing.assert_array_equal(copy, parameter, err_msg=name)
    assert restored_optimizer.steps == 1
    np.testing.assert_array_equal(restored.forward(ids), model.forward(ids))


def test_gpt_rejects_a_checkpoint_of_another_size(tmp_path):
    GPT(VOCAB, BLOCK, layers=1, heads=2, channels=8).save(tmp_path / "gpt.npz")
    arrays = dict(np.load(tmp_path / "gpt.npz"))
    arrays["weights/ln_f.gamma"] = np.ones(9, np.float32)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="ln_f.gamma"):
        GPT.load(tmp_path / "bad.npz")


def test_generate_samples_from_the_top_k_and_repeats_with_a_seed():
    model = GPT(VOCAB, BLOCK, layers=1, heads=2, channels=8, seed=3)
    prompt = np.array([1, 2, 3])
    first = model.generate(prompt, 12, temperature=0.8, top_k=1, rng=np.random.default_rng(0))
    assert first.shape == (15,) and list(first[:3]) == [1, 2, 3]
    # top_k=1 is greedy: every new token is the argmax of the logits of the context before it
    for end in range(3, 15):
        context = first[max(0, end - BLOCK):end][None]
        assert first[end] == np.argmax(model.forward(context)[0, -1])
    sampled = [model.generate(prompt, 12, rng=np.random.default_rng(5)) for _ in range(2)]
    np.testing.assert_array_equal(sampled[0], sampled[1])


TINY = ["--layers", "1", "--heads", "2", "--channels", "8", "--block-size", "8", "--batch-size", "4"]


def test_train_gpt_resumes_exactly_and_sample_gpt_prints_text(tmp_path, capsys):
    """6 steps in one run and 3 + 3 resumed give the same checkpoint, bit for bit."""
    assert main(["train", "gpt", "--steps", "6", "--eval-every", "3", "--out", str(tmp_path / "once"), *TINY]) == 0
    assert "held-out loss" in capsys.readouterr().out
    for steps in ("3", "6"):
        resume = ["--resume"] if steps == "6" else []
        assert main(["train", "gpt", "--steps", steps, "--eval-every", "3", "--out", str(tmp_path / "twice"),
                     *TINY, *resume]) == 0
    once, twice = (checkpoint.read_npz(tmp_path / run / "gpt.npz") for run in ("once", "twice"))
    assert once.keys() == twice.keys()
    for name in once:
        np.testing.assert_array_equal(once[name], twice[name], err_msg=name)
    capsys.readouterr()
    assert main(["sample", "gpt", "--checkpoint", str(tmp_path / "once" / "gpt.npz"), "--prompt", "def ",
                 "--tokens", "20", "--top-k", "5"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("def ") and len(printed) == len("def ") + 20 + 1   # and print's newline


@pytest.mark.parametrize("argv,message", [
    (["train", "gpt", "--heads", "3", "--channels", "8"], "heads: must divide channels"),
    (["sample", "gpt", "--checkpoint", "missing.npz"], "no such file"),
])
def test_gpt_commands_fail_in_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("pyai: error: ") and message in error and "\n" not in error
