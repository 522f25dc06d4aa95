"""Checkpoints: exact round trips, atomic writes, and clear errors for files that cannot be used.

No tolerance here: a checkpoint stores the float32 arrays themselves, so everything read back must
be bit-for-bit what was written, and a model rebuilt from it must compute bit-for-bit the same.
"""

import json
import os

import numpy as np
import pytest

from conftest import require
from pyai import io
from pyai.losses import BinaryCrossentropy
from pyai.models import MLP
from pyai.optim import SGD, Adam

TRAINING_OPS = ["linear", "matmul", "leaky_relu_grad", "binary_crossentropy_logits_grad", "adam_update"]


def require_all(backend):
    for op in TRAINING_OPS:
        require(op, backend)


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
        assert sorted(archive.files) == ["config", "optimizer/steps", "weights/0.bias", "weights/0.weight",
                                         "weights/1.bias", "weights/1.weight"]
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
    with pytest.raises(io.CheckpointError, match=r"mlp\.npz: tensor '0\.weight' is float32\[8, 6\], "
                                                 r"this model expects float32\[8, 5\]"):
        MLP([8, 5, 3]).load_weights(path)
    with pytest.raises(io.CheckpointError, match=r"missing tensors \['2\.weight', '2\.bias'\]"):
        MLP([8, 6, 3, 3]).load_weights(path)


def test_same_shapes_with_other_activations_are_refused(tmp_path):
    path = tmp_path / "mlp.npz"
    MLP([8, 6, 3], activation="sigmoid").save(path)
    with pytest.raises(io.CheckpointError, match="activation='sigmoid'"):
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
    with pytest.raises(io.CheckpointError, match=r"checkpoint .*mlp\.npz"):
        MLP.load(path)


def test_object_arrays_are_never_unpickled(tmp_path):
    path = tmp_path / "mlp.npz"
    model = MLP([8, 6, 3])
    arrays = {f"weights/{name}": parameter for name, parameter in model.parameters()}
    arrays["config"] = np.array(json.dumps(model.config))
    arrays["weights/0.bias"] = np.array([{"pickled": "code could run here"}], dtype=object)
    np.savez(path, **arrays)   # numpy writes object arrays with pickle by default
    with pytest.raises(io.CheckpointError, match=r"tensor 'weights/0\.bias' cannot be read"):
        MLP.load(path)
    with pytest.raises(TypeError, match="object arrays"):
        io.save(path, arrays)


def test_non_finite_weights_are_refused(tmp_path):
    model = MLP([8, 6, 3])
    model.layers[1].weight[2, 1] = np.inf
    model.save(tmp_path / "mlp.npz")
    with pytest.raises(io.CheckpointError, match=r"tensor '1\.weight' holds NaN or infinity"):
        MLP.load(tmp_path / "mlp.npz")


def test_optimizer_state_must_fit_the_optimizer_and_model(backend, rng, tmp_path):
    require_all(backend)
    model, adam = MLP([8, 6, 3], activation="leaky_relu"), Adam()
    train(model, adam, random_batches(rng, 1))
    path = tmp_path / "mlp.npz"
    model.save(path, optimizer=adam)
    with pytest.raises(io.CheckpointError, match="SGD has no state"):
        MLP.load(path, optimizer=SGD())
    other = MLP([8, 5, 3], activation="leaky_relu")
    arrays = io.load(path)
    arrays.update({f"weights/{name}": parameter for name, parameter in other.parameters()})
    arrays["config"] = np.array(json.dumps(other.config))
    io.save(path, arrays)
    with pytest.raises(io.CheckpointError, match=r"optimizer tensor 'm/0\.weight' has shape \(8, 6\)"):
        MLP.load(path, optimizer=Adam())
