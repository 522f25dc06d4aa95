"""Checkpoints: exact round trips, atomic writes, and clear errors for files that cannot be used.

No tolerance here: a checkpoint stores the float32 arrays themselves, so everything read back must
be bit-for-bit what was written, and a model rebuilt from it must compute bit-for-bit the same.
"""

import json
import os
import time

import numpy as np
import pytest

from conftest import require, skip_in_cuda_simulator
from pyai import checkpoint
from pyai.losses import BinaryCrossentropy
from pyai.models import GAN, GPT, MLP
from pyai.optim import SGD, Adam
from pyai.training import Training

TRAINING_OPS = ["linear", "matmul", "leaky_relu_grad", "binary_crossentropy_logits_grad", "adam_update"]


def require_all(backend):
    for op in TRAINING_OPS:
        require(op, backend)
    skip_in_cuda_simulator(backend, "training a model (a GAN step takes ~20 s there)")


def train(model, optimizer, batches):
    loss = BinaryCrossentropy(from_logits=True)
    for x, y in batches:
        loss(model.forward(x), y)
        model.backward(loss.backward())
        optimizer.step(model)


def random_batches(rng, count, inputs=8, outputs=3):
    return [(rng.normal(size=(16, inputs)).astype(np.float32),
             rng.integers(0, 2, (16, outputs)).astype(np.float32)) for _ in range(count)]


def test_round_trip_gives_identical_outputs(backend, rng, tmp_path):
    require_all(backend)
    model = MLP([8, 6, 3], activation="leaky_relu", alpha=0.1, seed=5)
    train(model, Adam(lr=0.01), random_batches(rng, 3))
    path = tmp_path / "mlp.npz"
    model.save(path)

    loaded = MLP.load(path)
    assert loaded.config == model.config
    for (name, parameter), (loaded_name, loaded_parameter) in zip(model.parameters(), loaded.parameters()):
        assert loaded_name == name and np.array_equal(loaded_parameter, parameter), name
    x = rng.normal(size=(5, 8)).astype(np.float32)
    assert np.array_equal(loaded.predict(x), model.predict(x))


def test_resuming_from_a_checkpoint_matches_training_straight_through(backend, rng, tmp_path):
    require_all(backend)
    batches = random_batches(rng, 6)
    straight, straight_adam = MLP([8, 6, 3], activation="leaky_relu"), Adam(lr=0.01)
    train(straight, straight_adam, batches)

    first, first_adam = MLP([8, 6, 3], activation="leaky_relu"), Adam(lr=0.01)
    train(first, first_adam, batches[:3])
    first.save(tmp_path / "checkpoint.npz", optimizer=first_adam)
    resumed_adam = Adam(lr=0.01)
    resumed = MLP.load(tmp_path / "checkpoint.npz", optimizer=resumed_adam)
    assert resumed_adam.steps == 3
    train(resumed, resumed_adam, batches[3:])

    for (name, parameter), (_, resumed_parameter) in zip(straight.parameters(), resumed.parameters()):
        assert np.array_equal(resumed_parameter, parameter), f"{name} differs after resuming"


def test_the_file_is_a_plain_npz_with_a_json_config(tmp_path):
    path = tmp_path / "mlp.npz"
    MLP([4, 3, 2], activation="tanh").save(path, optimizer=Adam())
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["config", "format", "optimizer/steps", "weights/0.bias",
                                         "weights/0.weight", "weights/1.bias", "weights/1.weight"]
        assert json.loads(str(archive["config"]))["layer_sizes"] == [4, 3, 2]


def fail_midway(file, *args, **kwargs):
    file.write(b"PK\x03\x04 half a checkpoint")
    raise OSError("simulated: no space left on device")


def test_a_failed_write_leaves_no_file_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(np, "savez", fail_midway)
    with pytest.raises(OSError, match="simulated"):
        MLP([4, 3, 2]).save(tmp_path / "mlp.npz")
    assert os.listdir(tmp_path) == []


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "mlp.npz"
    model = MLP([4, 3, 2], seed=1)
    model.save(path)
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez", fail_midway)
    with pytest.raises(OSError, match="simulated"):
        MLP([4, 3, 2], seed=2).save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["mlp.npz"]


def test_another_architecture_is_refused_naming_the_file_and_tensor(tmp_path):
    path = tmp_path / "mlp.npz"
    MLP([8, 6, 3]).save(path)
    with pytest.raises(checkpoint.CheckpointError, match=r"mlp\.npz: tensor '0\.weight' is float32\[8, 6\], "
                                                 r"this model expects float32\[8, 5\]"):
        MLP([8, 5, 3]).load_weights(path)
    with pytest.raises(checkpoint.CheckpointError, match=r"missing tensors \['2\.weight', '2\.bias'\]"):
        MLP([8, 6, 3, 3]).load_weights(path)


def test_same_shapes_with_other_activations_are_refused(tmp_path):
    path = tmp_path / "mlp.npz"
    MLP([8, 6, 3], activation="sigmoid").save(path)
    with pytest.raises(checkpoint.CheckpointError, match="activation='sigmoid'"):
        MLP([8, 6, 3], activation="relu").load_weights(path)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*nothing\.npz: no such file"):
        MLP.load(tmp_path / "nothing.npz")


@pytest.mark.parametrize("corrupt", ["garbage", "truncated", "single_array"])
def test_a_corrupt_file_is_a_clear_error(tmp_path, corrupt):
    path = tmp_path / "mlp.npz"
    MLP([8, 6, 3]).save(path)
    if corrupt == "garbage":
        path.write_bytes(bytes(range(256)) * 4)
    elif corrupt == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    else:
        with open(path, "wb") as file:
            np.save(file, np.ones(3, np.float32))
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoint .*mlp\.npz"):
        MLP.load(path)


def test_object_arrays_are_never_unpickled(tmp_path):
    path = tmp_path / "mlp.npz"
    model = MLP([8, 6, 3])
    arrays = {f"weights/{name}": parameter for name, parameter in model.parameters()}
    arrays["config"] = np.array(json.dumps(model.config))
    arrays["weights/0.bias"] = np.array([{"pickled": "code could run here"}], dtype=object)
    np.savez(path, **arrays)   # numpy writes object arrays with pickle by default
    with pytest.raises(checkpoint.CheckpointError, match=r"tensor 'weights/0\.bias' cannot be read"):
        MLP.load(path)
    with pytest.raises(TypeError, match="object arrays"):
        checkpoint.write_npz(path, arrays)


def test_non_finite_weights_are_refused(tmp_path):
    model = MLP([8, 6, 3])
    model.save(tmp_path / "mlp.npz")
    model.layers[1].weight[2, 1] = np.inf
    with pytest.raises(checkpoint.CheckpointError, match=r"not saved: 'weights/1\.weight' holds NaN"):
        model.save(tmp_path / "mlp.npz")
    assert np.isfinite(MLP.load(tmp_path / "mlp.npz").layers[1].weight).all()   # the old file stays
    arrays = checkpoint.read_npz(tmp_path / "mlp.npz")   # a file written by other means
    arrays["weights/1.weight"] = model.layers[1].weight
    checkpoint.write_npz(tmp_path / "crafted.npz", arrays)
    with pytest.raises(checkpoint.CheckpointError, match=r"tensor '1\.weight' holds NaN or infinity"):
        MLP.load(tmp_path / "crafted.npz")


def test_a_save_removes_the_temporary_files_of_killed_saves(tmp_path):
    model, path = MLP([4, 2]), tmp_path / "mlp.npz"
    stale = tmp_path / f"mlp.npz.{'a' * 32}.tmp"
    recent = tmp_path / f"mlp.npz.{'b' * 32}.tmp"      # maybe a save in progress: kept
    other = tmp_path / f"other.npz.{'c' * 32}.tmp"     # another checkpoint's: kept
    mine_by_name_only = tmp_path / "mlp.npz.notours.tmp"
    for file in (stale, recent, other, mine_by_name_only):
        file.write_bytes(b"half a checkpoint")
    old = time.time() - 2 * checkpoint.STALE_SECONDS
    for file in (stale, other, mine_by_name_only):
        os.utime(file, (old, old))
    model.save(path)
    assert not stale.exists() and recent.exists() and other.exists() and mine_by_name_only.exists()
    assert MLP.load(path).config == model.config


def test_optimizer_state_must_fit_the_optimizer_and_model(backend, rng, tmp_path):
    require_all(backend)
    model, adam = MLP([8, 6, 3], activation="leaky_relu"), Adam()
    train(model, adam, random_batches(rng, 1))
    path = tmp_path / "mlp.npz"
    model.save(path, optimizer=adam)
    with pytest.raises(checkpoint.CheckpointError, match="SGD has no state"):
        MLP.load(path, optimizer=SGD())
    other = MLP([8, 5, 3], activation="leaky_relu")
    arrays = checkpoint.read_npz(path)
    arrays.update({f"weights/{name}": parameter for name, parameter in other.parameters()})
    arrays["config"] = np.array(json.dumps(other.config))
    checkpoint.write_npz(path, arrays)
    with pytest.raises(checkpoint.CheckpointError, match=r"optimizer tensor 'm/0\.weight' has shape \(8, 6\)"):
        MLP.load(path, optimizer=Adam())


# ---- One format for every model: the MLP, the GAN (with its own two Adams) and the GPT ----

def trained_mlp(rng):
    model, adam = MLP([8, 6, 3], activation="leaky_relu", seed=4), Adam(lr=0.01)
    train(model, adam, random_batches(rng, 2))
    return model, adam


def trained_gan(rng):
    gan = GAN(image_shape=(4, 5), noise_dim=8, generator_sizes=(16,), discriminator_sizes=(12,), seed=4)
    noise = rng.standard_normal((6, 8), dtype=np.float32)
    gan.train_step(rng.uniform(-1, 1, (6, 20)).astype(np.float32), noise, noise)
    return gan, None   # the GAN keeps its Adams itself


def trained_gpt(rng):
    model, adam = GPT(11, 6, layers=1, heads=2, channels=8, seed=4), Adam(lr=0.01)
    model.train_step(rng.integers(0, 11, (2, 6)), rng.integers(0, 11, (2, 6)))
    adam.step(model)
    return model, adam


KINDS = {"MLP": (MLP, trained_mlp), "GAN": (GAN, trained_gan), "GPT": (GPT, trained_gpt)}


def optimizer_states(model, optimizer):
    return {f"{prefix}{key}": array for prefix, each in checkpoint.optimizers_of(model, optimizer).items()
            for key, array in each.state().items()}


def a_training():
    training = Training(seed=7, batch_size=4)
    training.epoch, training.step = 2, 9
    training.history = [[1.0, 0.5], [2.0, 0.25]]
    training.rng.standard_normal(5)   # moves the generator off its seeded state
    return training


@pytest.mark.parametrize("kind", KINDS)
def test_every_model_kind_comes_back_whole(kind, rng, tmp_path):
    """Weights, optimizer states, training state and metadata, bit for bit, for each kind of model."""
    model_class, make = KINDS[kind]
    model, optimizer = make(rng)
    training = a_training()
    path = tmp_path / f"{kind}.npz"
    checkpoint.save(path, model, optimizer, training, metadata={"note": "é", "lr": 0.01})

    restored_optimizer = None if optimizer is None else Adam()
    restored_training = Training()
    restored, metadata = checkpoint.load(path, model_class, restored_optimizer, restored_training)
    assert type(restored) is model_class and restored.config == model.config
    assert metadata == {"note": "é", "lr": 0.01}
    for (name, parameter), (restored_name, copy) in zip(model.parameters(), restored.parameters(), strict=True):
        assert restored_name == name and np.array_equal(copy, parameter), f"{kind}: {name}"
    expected, got = optimizer_states(model, optimizer), optimizer_states(restored, restored_optimizer)
    assert sorted(got) == sorted(expected) and any("m/" in key for key in got), kind
    for key in expected:
        assert np.array_equal(got[key], expected[key]), f"{kind}: optimizer {key}"
    assert restored_training.state() == training.state() and restored_training.history == training.history
    assert np.array_equal(restored_training.rng.standard_normal(3), training.rng.standard_normal(3))


@pytest.mark.parametrize("kind", KINDS)
def test_a_checkpoint_of_another_kind_is_refused_naming_the_file_and_the_kind(kind, rng, tmp_path):
    model_class, make = KINDS[kind]
    path = tmp_path / "model.npz"
    checkpoint.save(path, make(rng)[0])
    for other in KINDS.values():
        if other[0] is not model_class:
            with pytest.raises(checkpoint.CheckpointError,
                               match=rf"checkpoint .*model\.npz: holds an? {kind}, which does not make an? "
                                     rf"{other[0].__name__} .*expected a checkpoint of an? {other[0].__name__} "
                                     rf"in pyai's format {checkpoint.FORMAT_VERSION}"):
                checkpoint.load(path, other[0])


@pytest.mark.parametrize("version", [0, checkpoint.FORMAT_VERSION + 1, "1"])
def test_another_format_version_is_refused_naming_the_file_and_the_version(tmp_path, version):
    path = tmp_path / "mlp.npz"
    MLP([4, 3]).save(path)
    arrays = checkpoint.read_npz(path)
    arrays["format"] = np.array(json.dumps({"version": version, "kind": "MLP"}))
    checkpoint.write_npz(path, arrays)
    with pytest.raises(checkpoint.CheckpointError,
                       match=rf"checkpoint .*mlp\.npz: is of format {version!r}; expected a checkpoint of "
                             rf"an MLP in pyai's format {checkpoint.FORMAT_VERSION}"):
        MLP.load(path)


def test_a_file_without_a_format_entry_is_refused(tmp_path):
    """Named arrays alone, as a checkpoint written before the format had a version holds them."""
    path = tmp_path / "old.npz"
    model = MLP([4, 3])
    np.savez(path, config=np.array(json.dumps(model.config)),
             **{f"weights/{name}": parameter for name, parameter in model.parameters()})
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoint .*old\.npz: has no 'format' entry"):
        MLP.load(path)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_a_truncated_file_of_any_kind_is_a_checkpoint_error(kind, keep, rng, tmp_path):
    model_class, make = KINDS[kind]
    path = tmp_path / "model.npz"
    model, optimizer = make(rng)
    checkpoint.save(path, model, optimizer, a_training())
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoint .*model\.npz"):
        checkpoint.load(path, model_class, None if optimizer is None else Adam(), Training())


def test_a_corrupt_format_entry_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "mlp.npz"
    MLP([4, 3]).save(path)
    arrays = checkpoint.read_npz(path)
    for format_entry, says in ((np.array("{not json"), "'format' is not valid JSON"),
                               (np.array([1, 2], np.uint8), "'format' is not valid JSON"),
                               (np.array("[1]"), "'format' is not a JSON object")):
        checkpoint.write_npz(path, {**arrays, "format": format_entry})
        with pytest.raises(checkpoint.CheckpointError, match=says):
            MLP.load(path)


def test_an_object_array_in_any_entry_is_refused_unread(tmp_path):
    """np.load with allow_pickle=False refuses to unpickle, so no code in the file can run."""
    path = tmp_path / "mlp.npz"
    MLP([4, 3]).save(path)
    arrays = checkpoint.read_npz(path)
    arrays["format"] = np.array([{"version": 1, "kind": "MLP"}], dtype=object)
    np.savez(path, **arrays)   # numpy pickles object arrays by default
    with pytest.raises(checkpoint.CheckpointError, match=r"tensor 'format' cannot be read"):
        MLP.load(path)


def test_training_state_is_required_only_when_asked_for(rng, tmp_path):
    path = tmp_path / "gan.npz"
    gan, _ = trained_gan(rng)
    checkpoint.save(path, gan)
    checkpoint.load(path, GAN)
    with pytest.raises(checkpoint.CheckpointError, match=r"gan\.npz: holds no training state"):
        checkpoint.load(path, GAN, training=Training())


def test_a_training_state_that_does_not_fit_is_refused_and_changes_nothing(rng, tmp_path):
    path = tmp_path / "gan.npz"
    gan, _ = trained_gan(rng)
    checkpoint.save(path, gan, training=a_training())
    saved = checkpoint.read_npz(path)
    state = json.loads(str(saved["training"]))
    state["rng"] = {"bit_generator": "NotAGenerator"}
    checkpoint.write_npz(path, {**saved, "training": np.array(json.dumps(state))})
    training = Training(seed=3)
    with pytest.raises(checkpoint.CheckpointError, match=r"gan\.npz: 'training' is not a training state"):
        checkpoint.load(path, GAN, training=training)
    assert training.state() == Training(seed=3).state()


def test_a_failed_rename_keeps_the_previous_checkpoint_and_leaves_no_temporary(rng, tmp_path, monkeypatch):
    """The write fails after the temporary file is complete, just before it replaces the old one."""
    path = tmp_path / "gan.npz"
    gan, _ = trained_gan(rng)
    checkpoint.save(path, gan, training=a_training())
    before = path.read_bytes()

    def refuse(source, destination):
        raise OSError("simulated: the rename failed")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="simulated"):
        checkpoint.save(path, GAN(image_shape=(4, 5), noise_dim=8, seed=9), training=Training())
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["gan.npz"]
