"""Flat parameter buffers, and data-parallel training with 2 processes under mpiexec.

The flat buffers change where the numbers live, not the numbers: Adam over a model's flat buffers
must give bit for bit what Adam gives tensor by tensor (the same float32 operations, element by
element). With 2 processes the sums of the float32 gradients run in another order than in one
process, so those comparisons allow 1e-5 relative for one step's gradients and 1e-4 for weights
and Adam's moments after 12 steps (Adam divides by sqrt(v), which carries a gradient's rounding
into the step). The GAN's two networks each train on the other's slightly different weights, which
amplifies those roundings: after its 28 steps the weights were 9e-5 apart and the moments 2.6e-3,
so its tolerances are 1e-3 and 3e-2; a missing or wrong average is off by far more (and the
one-step gradients are held to 1e-5).

The 2-process tests need mpi4py and an MPI launcher (`pip install pyai[mpi]`: the `mpich` wheel
brings `mpiexec`); each process runs one thread, so 2 of them fit on 2 cores.
"""

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import assert_close
from pyai import checkpoint, cli, distributed
from pyai.losses import BinaryCrossentropy
from pyai.models import GAN, GPT, MLP
from pyai.nn import Dense, Sequential
from pyai.optim import Adam

WORKER = os.path.join(os.path.dirname(__file__), "mpi_worker.py")
GRADIENT_TOL = 1e-5
WEIGHT_TOL = 1e-4
GAN_WEIGHT_TOL, GAN_MOMENT_TOL = 1e-3, 3e-2
LAUNCH_TIMEOUT_S = 240   # a cold start compiles nothing (Numba's cache), but a loaded machine is slow
GPT_FLAGS = ["--batch-size", "5", "--block-size", "16", "--layers", "1", "--heads", "2", "--channels", "16",
             "--eval-every", "4"]


# ---- Flat buffers (one process) ----

def models():
    gan = GAN(image_shape=(5, 3), noise_dim=7, generator_sizes=(11,), discriminator_sizes=(13,), seed=1)
    return {"mlp": MLP([7, 11, 3], seed=1), "gpt": GPT(11, 7, layers=1, heads=2, channels=8, seed=1),
            "generator": gan.generator, "discriminator": gan.discriminator}


@pytest.mark.parametrize("name", ["mlp", "gpt", "generator", "discriminator"])
def test_parameters_and_gradients_are_views_of_one_buffer_each(name, rng):
    model = models()[name]
    flat = model.flat
    parameters = model.parameters()
    assert sum(parameter.size for _, parameter in parameters) <= flat.size < (
        sum(parameter.size for _, parameter in parameters) + 16 * len(parameters))
    assert np.array_equal(np.concatenate([view.ravel() for view in flat.parameter_views]),
                          np.concatenate([p.ravel() for _, p in parameters]))
    # every tensor starts a 64-byte cache line, but a Dense layer's bias, right after its weight
    # (their gradients one matrix: weight_and_bias_grad's); the floats between tensors are 0
    for i, (tensor, (start, _)) in enumerate(zip(flat.names, flat.offsets)):
        after_weight = (i > 0 and tensor.endswith("bias") and flat.names[i - 1] == tensor[:-4] + "weight"
                        and len(flat.shapes[i - 1]) == 2)
        assert start == flat.offsets[i - 1][1] if after_weight else start % 16 == 0, tensor
    assert any(tensor.endswith("bias") for tensor in flat.names)
    assert all(view.ctypes.data % 64 == 0 for view, tensor in zip(flat.parameter_views + flat.gradient_views,
                                                                   2 * flat.names) if not tensor.endswith("bias"))
    used = np.zeros(flat.size, bool)
    for start, end in flat.offsets:
        used[start:end] = True
    assert not flat.parameters[~used].any() and not flat.gradients[~used].any()
    for (parameter_name, parameter), view in zip(parameters, flat.parameter_views, strict=True):
        assert parameter is view and np.shares_memory(parameter, flat.parameters), parameter_name
    if name == "gpt":
        model.train_step(rng.integers(0, 11, (3, 7)), rng.integers(0, 11, (3, 7)))
    else:
        model.forward(rng.standard_normal((3, model.layers[0].in_features)).astype(np.float32))
        model.backward(rng.standard_normal((3, model.layers[-1].out_features)).astype(np.float32))
    for gradient_name, gradient in model.gradients():
        assert np.shares_memory(gradient, flat.gradients), f"{name}: {gradient_name}"
    assert np.abs(flat.gradients).min() >= 0 and np.abs(flat.gradients).max() > 0
    assert np.array_equal(np.concatenate([view.ravel() for view in flat.gradient_views]),
                          np.concatenate([g.ravel() for _, g in model.gradients()]))


def per_tensor_twin(mlp):
    """The same layers and weights as `mlp`, in separate arrays (no flat buffer)."""
    twin = Sequential(*[Dense(layer.in_features, layer.out_features, layer.activation, layer.alpha)
                        for layer in mlp.layers])
    for (_, mine), (_, theirs) in zip(twin.parameters(), mlp.parameters(), strict=True):
        mine[...] = theirs
    return twin


def test_adam_over_the_flat_buffers_matches_adam_per_tensor_bit_for_bit(rng):
    mlp = MLP([13, 17, 5], activation="leaky_relu", seed=2)
    twin = per_tensor_twin(mlp)
    assert not hasattr(twin, "flat")
    loss = BinaryCrossentropy(from_logits=True)
    flat_adam, tensor_adam = Adam(0.01), Adam(0.01)
    for step in range(4):
        x = rng.standard_normal((9, 13)).astype(np.float32)
        targets = rng.integers(0, 2, (9, 5)).astype(np.float32)
        for model, optimizer in ((mlp, flat_adam), (twin, tensor_adam)):
            loss(model.forward(x), targets)
            model.backward(loss.backward(), input_gradient=False)
            optimizer.step(model)
        if step == 1:   # a checkpoint's state, loaded into the flat Adam, must carry on the same
            flat_adam.load_state({key: np.array(array) for key, array in flat_adam.state().items()})
    for (name, mine), (_, theirs) in zip(mlp.parameters(), twin.parameters(), strict=True):
        assert np.array_equal(mine, theirs), name
    for key, array in tensor_adam.state().items():
        assert np.array_equal(flat_adam.state()[key], array), key


def test_a_parameter_replaced_outside_the_flat_buffer_is_a_clear_error(rng):
    mlp = MLP([3, 2], seed=0)
    mlp.forward(rng.standard_normal((4, 3)).astype(np.float32))
    mlp.backward(rng.standard_normal((4, 2)).astype(np.float32))
    mlp.layers[0].weight = mlp.layers[0].weight.copy()
    with pytest.raises(RuntimeError, match="'0.weight' was replaced by an array outside the model's flat buffer"):
        Adam().step(mlp)


def test_one_process_is_a_world_of_one_without_mpi():
    world = distributed.world()
    assert (world.rank, world.size, world.is_root()) == (0, 1, True)
    assert world.shard(7) == slice(0, 7)
    gradients = np.arange(5, dtype=np.float32)
    world.average(gradients)
    assert np.array_equal(gradients, np.arange(5, dtype=np.float32))
    assert world.mean([1.5, 2.0]) == [1.5, 2.0]


def test_a_bad_timeout_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PYAI_MPI_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="PYAI_MPI_TIMEOUT: expected a positive number of seconds, got 'soon'"):
        distributed.timeout_from_environment()


def test_mpiexec_without_mpi4py_is_a_clear_error(monkeypatch, capsys):
    def no_mpi4py():
        raise ImportError("No module named 'mpi4py'")

    monkeypatch.setenv("PMI_SIZE", "2")   # what MPICH's mpiexec sets in each process it starts
    monkeypatch.setattr(distributed, "_world", None)
    monkeypatch.setattr(distributed, "mpi", no_mpi4py)
    says = r"mpiexec started 2 processes, but mpi4py is not installed: pip install pyai\[mpi\]"
    with pytest.raises(RuntimeError, match=says):
        distributed.world()
    assert cli.main(["train", "mlp", "--epochs", "1"]) == 1
    assert capsys.readouterr().err.startswith("pyai: error: mpiexec started 2 processes, but mpi4py")


def test_the_nccl_path_imports_and_stays_off_without_a_gpu_backend():
    from pyai import nccl
    assert nccl.reducer(comm=None) is None   # numba-cpu: the gradients stay on the host, with MPI
    assert callable(nccl.NcclSum.sum)


# ---- 2 processes under mpiexec ----

def mpiexec():
    pytest.importorskip("mpi4py")
    beside_python = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    launcher = beside_python if os.path.exists(beside_python) else shutil.which("mpiexec")
    if launcher is None:
        pytest.skip("no mpiexec: pip install pyai[mpi] brings MPICH's")
    return launcher


def launch(arguments, cwd, timeout_s=LAUNCH_TIMEOUT_S, **environment):
    """Run `arguments` in 2 processes of one thread each; (the completed process, seconds)."""
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMPI_ALLOW_RUN_AS_ROOT": "1",
           "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", **environment}
    start = time.perf_counter()
    result = subprocess.run([mpiexec(), "-n", "2", sys.executable, *arguments], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout_s)
    return result, time.perf_counter() - start


def succeeded(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def test_two_processes_average_to_the_whole_batch_gradients(tmp_path):
    succeeded(launch([WORKER, "gradients", str(tmp_path / "gradients.npz")], tmp_path)[0])
    with np.load(tmp_path / "gradients.npz") as saved:
        for model in ("gpt", "mlp"):
            assert saved[f"{model}/shard_rows"] == 2   # rank 0's rows of 5: shards of 2 and 3
            assert_close(f"{model}: 2-process gradients", saved[f"{model}/averaged"],
                         saved[f"{model}/whole_batch"], GRADIENT_TOL)


def assert_same_checkpoints(path, reference, model_class, weight_tol=WEIGHT_TOL, moment_tol=WEIGHT_TOL):
    """All weights, and each of Adam's moments, as one vector each: the attention's key bias has a
    zero gradient in exact arithmetic, so its own Adam steps follow rounding noise, which differs
    with the summation order (a tensor of its own would be off by 100%)."""
    arrays, expected = checkpoint.read_npz(path), checkpoint.read_npz(reference)
    assert sorted(arrays) == sorted(expected)
    for kind, tol in (("weights/", weight_tol), ("optimizer/", moment_tol)):
        names = [name for name in expected if name.startswith(kind) and expected[name].dtype == np.float32]
        if names:
            assert_close(f"{model_class.__name__} {kind}*", np.concatenate([arrays[n].ravel() for n in names]),
                         np.concatenate([expected[n].ravel() for n in names]), tol)
    if "history" in expected:
        assert_close("history", arrays["history"], expected["history"], weight_tol)


def test_gpt_trains_the_same_in_2_processes_and_resumes_with_any_count(tmp_path):
    """12 steps in one process, against 4 steps in 2 processes, 4 more in 1, the last 4 in 2."""
    assert cli.main(["train", "gpt", "--steps", "12", *GPT_FLAGS, "--out", str(tmp_path / "one")]) == 0
    out = str(tmp_path / "mixed")
    succeeded(launch(["-m", "pyai", "train", "gpt", "--steps", "4", *GPT_FLAGS, "--out", out], tmp_path)[0])
    assert cli.main(["train", "gpt", "--steps", "8", "--resume", "--out", out]) == 0
    result = succeeded(launch(["-m", "pyai", "train", "gpt", "--steps", "12", "--resume", "--out", out],
                              tmp_path)[0])
    assert result.stdout.count("trained 12 steps") == 1   # rank 0 alone prints
    assert_same_checkpoints(tmp_path / "mixed" / "gpt.npz", tmp_path / "one" / "gpt.npz", GPT)


def test_gan_and_mlp_train_the_same_in_2_processes(tmp_path):
    assert cli.main(["train", "gan", "--epochs", "1", "--out", str(tmp_path / "gan1")]) == 0
    assert cli.main(["train", "mlp", "--epochs", "2", "--batch-size", "31", "--out", str(tmp_path / "mlp1.npz")]) == 0
    succeeded(launch(["-m", "pyai", "train", "gan", "--epochs", "1", "--out", str(tmp_path / "gan2")], tmp_path)[0])
    # 1,437 training digits in batches of 31: the last batch of 11 splits into 5 and 6 rows
    succeeded(launch(["-m", "pyai", "train", "mlp", "--epochs", "2", "--batch-size", "31",
                      "--out", str(tmp_path / "mlp2.npz")], tmp_path)[0])
    assert_same_checkpoints(tmp_path / "gan2" / "gan.npz", tmp_path / "gan1" / "gan.npz", GAN,
                            GAN_WEIGHT_TOL, GAN_MOMENT_TOL)
    assert_same_checkpoints(tmp_path / "mlp2.npz", tmp_path / "mlp1.npz", MLP)


@pytest.mark.parametrize("mode, says", [
    ("raise", "RuntimeError: rank 1 fails on purpose"),
    ("kill", "BAD TERMINATION"),
    ("hang", "waited more than 3 s in the allreduce of the gradients: another process has failed or hangs"),
    ("diverge", "the weights differ between processes after 100 optimizer steps"),
])
def test_a_failed_process_ends_the_run_with_an_error(tmp_path, mode, says):
    result, seconds = launch([WORKER, mode], tmp_path, timeout_s=120, PYAI_MPI_TIMEOUT="3")
    assert result.returncode != 0
    assert says in result.stdout + result.stderr, result.stdout[-2000:] + result.stderr[-2000:]
    assert seconds < 60
