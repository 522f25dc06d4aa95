"""First run: a command compiles only the kernel files it uses, says so once on stderr, and
`pyai warmup` compiles every file ahead of time, in parallel processes."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import pyai.kernels.numba_cpu as kernels
from pyai import dispatch, warmup
from pyai._backends import numba_cpu
from pyai.cli import main


def run_python(code, **environment):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, **environment}, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def test_importing_pyai_and_asking_for_the_backends_compiles_no_kernel():
    result = run_python("import sys, pyai; pyai.backends(); pyai.threading_layer(); "
                        "print(sorted(name for name in sys.modules if name.startswith('pyai.kernels.numba_')))")
    assert eval(result.stdout) == []


def test_the_notice_comes_once_before_compiling_and_never_from_the_cache(tmp_path):
    code = ("import numpy as np, pyai; x = np.arange(1, 8, dtype=np.float32); "
            "pyai.ops.sgd_update(x, x.copy(), lr=0.5); pyai.ops.relu(x - 4); print(x[:2])")
    cold = run_python(code, NUMBA_CACHE_DIR=str(tmp_path))
    assert cold.stderr.count("pyai: compiling pyai's kernels for this CPU, once: ~") == 1, cold.stderr
    assert str(tmp_path) in cold.stderr and cold.stdout.strip() == "[0.5 1. ]"
    warm = run_python(code, NUMBA_CACHE_DIR=str(tmp_path))
    assert warm.stderr == "" and warm.stdout == cold.stdout


def test_every_kernel_file_without_kernels_names_the_files_it_runs_them_from():
    """`is_cached` looks for a file's own kernels in the cache, so a file with none would be
    announced as compiling in every process: such files name the files whose kernels they run."""
    folder = pathlib.Path(kernels.__file__).parent

    def has_kernels(name):
        return "numba.njit" in (folder / f"{name}.py").read_text()

    files = sorted({file for file, _ in numba_cpu.KERNELS.values()})
    without = [name for name in files if not has_kernels(name)]
    assert without and sorted(warmup.RUNS_KERNELS_OF) == without
    assert all(has_kernels(name) for names in warmup.RUNS_KERNELS_OF.values() for name in names)


def test_warmup_compiles_its_chains_in_parallel_processes(tmp_path):
    code = ("from pyai import warmup; "
            "warmup.warm_everything(processes=2, chains=[('sgd',), ('relu',)]); "
            "print([warmup.is_cached(f) for f in ('sgd', 'relu', 'tanh')])")
    result = run_python(code, NUMBA_CACHE_DIR=str(tmp_path))
    assert result.stdout.strip() == "[True, True, False]", result.stderr
    assert "compiling" not in result.stderr   # the workers compile silently


def test_a_worker_compiles_the_other_expected_files_while_the_first_compiles_here(tmp_path):
    """sgd compiles in this process; relu, expected next, in a worker, which this process waits
    for before loading relu from the cache (so it never compiles relu itself)."""
    code = ("import json, numpy as np, pyai; from pyai import warmup; warmup.free_cores = lambda: 2; "
            "warmup.expect(['sgd_update', 'relu']); x = np.arange(1, 8, dtype=np.float32); "
            "pyai.ops.sgd_update(x, x.copy(), lr=0.5); process, handed = warmup._state['worker']; "
            "y = pyai.ops.relu(x - 1); from pyai.kernels.numba_cpu.relu import relu_forward_kernel; "
            "k = relu_forward_kernel.serial; "   # 7 elements: the kernel's one-thread compile
            "print(json.dumps([handed, process.returncode, y[:4].tolist(), "
            "sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values())]))")
    result = run_python(code, NUMBA_CACHE_DIR=str(tmp_path))
    assert result.stderr.count("pyai: compiling pyai's kernels") == 1, result.stderr
    handed, returncode, relu, loaded, compiled = json.loads(result.stdout)
    assert handed == ["relu"] and returncode == 0, result.stdout
    assert relu == [0, 0, 0.5, 1] and (loaded, compiled) == (1, 0), result.stdout


@pytest.mark.long
def test_the_matmul_compiles_only_the_loop_a_product_takes(tmp_path):
    """Importing matmul.py compiles none of its three loops; a small product compiles the serial
    few-rows one, cached under a name of its own (Numba's cache key ignores parallel=True)."""
    code = ("import json, numpy as np, pyai; from pyai.kernels.numba_cpu import matmul as mm; "
            "loops = (mm.gemm_few_rows_one_thread, mm.gemm_few_rows, mm.gemm); before = [l.ready for l in loops]; "
            "rng = np.random.default_rng(1); a, b = rng.standard_normal((7, 11), np.float32), "
            "rng.standard_normal((11, 13), np.float32); c = pyai.ops.matmul(a, b); "
            "error = float(np.linalg.norm(c - mm.matmul_reference(a, b)) / np.linalg.norm(mm.matmul_reference(a, b))); "
            "from pyai import warmup; files = sorted(p.name.split('-')[0] for p in warmup.cache_folder().glob('matmul.gemm*.nbi')); "
            "print(json.dumps([before, [l.ready for l in loops], error, files]))")
    before, after, error, files = json.loads(run_python(code, NUMBA_CACHE_DIR=str(tmp_path)).stdout)
    assert before == [False, False, False] and after == [True, False, False]
    assert error < 1e-6 and files == ["matmul.gemm_few_rows_one_thread"]


def test_no_worker_without_a_free_core_or_files_to_hand(monkeypatch):
    monkeypatch.setattr(warmup, "_state", {"announced": False, "expected": ("relu", "tanh"), "worker": None})
    monkeypatch.setattr(warmup, "is_cached", lambda file: False)
    monkeypatch.setattr(warmup, "free_cores", lambda: 1)
    assert warmup.start_worker("relu") == [] and warmup._state["worker"] is None
    monkeypatch.setattr(warmup, "free_cores", lambda: 2)
    assert warmup.worker_files("tanh") == ["relu"]
    # conv2d imports matmul, which compiles on import: it stays with the process compiling matmul
    monkeypatch.setattr(warmup, "_state", {"announced": False, "worker": None,
                                           "expected": ("softmax", "conv2d", "adam_update")})
    assert warmup.worker_files("conv2d") == ["adam", "softmax"]
    assert warmup.worker_files("adam") == ["softmax"]
    # a file with a stand-in goes to the worker alone, first or not: the rest compile here
    monkeypatch.setattr(warmup, "_state", {"announced": False, "worker": None,
                                           "expected": ("linear", "softmax", "conv2d", "adam_update")})
    assert warmup.worker_files("matmul") == ["matmul"] and warmup.worker_files("adam") == ["matmul"]


@pytest.mark.long
def test_the_plain_matmul_stands_in_while_a_worker_compiles_the_matmul(tmp_path):
    """A cold linear: plain_matmul.py runs here while the worker compiles matmul.py; once the
    worker is done the next call runs matmul.py, loaded from the cache, with the same floats."""
    code = ("import json, numpy as np, pyai; from pyai import warmup; from pyai._backends import numba_cpu; "
            "warmup.free_cores = lambda: 2; warmup.expect(['linear', 'relu']); "
            "rng = np.random.default_rng(2); x, w, b = (rng.standard_normal(s, np.float32) for s in ((9, 70), (70, 33), 33)); "
            "first = pyai.ops.linear(x, w, b, activation='leaky_relu'); standing = 'linear' in numba_cpu.ROW.standing_in; "
            "process, handed = warmup._state['worker']; process.wait(); "
            "second = pyai.ops.linear(x, w, b, activation='leaky_relu'); after = 'linear' in numba_cpu.ROW.standing_in; "
            "from pyai.kernels.numba_cpu import matmul; "
            "print(json.dumps([handed, process.returncode, standing, after, bool(np.array_equal(first, second)), "
            "matmul.gemm_few_rows_one_thread.dispatcher.stats.cache_hits.most_common(1)[0][1]]))")
    result = run_python(code, NUMBA_CACHE_DIR=str(tmp_path))
    assert result.stderr.count("pyai: compiling pyai's kernels") == 1, result.stderr
    handed, returncode, standing, after, same, loaded = json.loads(result.stdout)
    assert handed == ["matmul"] and returncode == 0, result.stdout
    assert standing and not after, result.stdout
    assert same and loaded == 1, result.stdout


def test_the_chains_hold_every_kernel_file_once():
    files = [file for chain in warmup.CHAINS for file in chain]
    assert sorted(files) == sorted({file for file, _ in numba_cpu.KERNELS.values()})
    assert set(warmup.SECONDS) == set(files)
    for file, imported in warmup.IMPORTS.items():   # a file's imports compile before it, in its chain
        chain = next(chain for chain in warmup.CHAINS if file in chain)
        assert all(chain.index(name) < chain.index(file) for name in imported), file


@pytest.fixture
def fresh_row(monkeypatch):
    """The numba-cpu row, with nothing looked up yet."""
    row = dispatch.LazyRow("pyai.kernels.numba_cpu", numba_cpu.KERNELS)
    monkeypatch.setattr(numba_cpu, "ROW", row)
    return row


def test_warmup_exercises_every_op_of_every_file(fresh_row):
    for chain in warmup.CHAINS:
        warmup.warm_files(chain)
    assert sorted(fresh_row.loaded) == sorted(numba_cpu.KERNELS)


@pytest.mark.parametrize("argv", [
    ["train", "mlp", "--epochs", "1", "--hidden", "8"],
    ["train", "mlp", "--epochs", "1", "--hidden", "8", "--activation", "gelu"],
    ["train", "gan", "--epochs", "1"],
    ["train", "gan", "--arch", "conv", "--epochs", "1"],
    ["train", "gpt", "--steps", "2", "--eval-every", "2", "--layers", "1", "--heads", "2",
     "--channels", "8", "--block-size", "8", "--batch-size", "2"],
], ids=["mlp", "mlp-gelu", "gan", "gan-conv", "gpt"])
def test_a_training_command_uses_exactly_the_ops_it_announces(fresh_row, argv, tmp_path, capsys):
    out = ["--out", str(tmp_path / "model.npz" if argv[1] == "mlp" else tmp_path)]
    assert main(argv + out) == 0, capsys.readouterr().err
    expected = warmup.ops_of_command(main_parser().parse_args(argv + out))
    assert set(fresh_row.loaded) <= set(expected)
    assert warmup.files_of(fresh_row.loaded) == warmup.files_of(expected)


def train_a_small_model(name):
    """Build a small model of TRAINING_OPS' `name` and run one training step (and Adam's, for the GPT)."""
    from pyai.models import DCGAN, GAN, GPT
    from pyai.optim import Adam
    rng = np.random.default_rng(0)
    if name == "gpt":
        model = GPT(11, 8, layers=1, heads=2, channels=8)
        model.train_step(rng.integers(0, 11, (2, 8)), rng.integers(0, 11, (2, 8)))
        Adam().step(model)
        return
    model = (GAN(image_shape=(4, 4), noise_dim=3, generator_sizes=(8,), discriminator_sizes=(8,)) if name == "gan"
             else DCGAN(image_shape=(8, 8), noise_dim=3, generator_sizes=(8,), generator_filters=(4, 4, 4),
                        discriminator_filters=(4, 4)))
    model.train_step(rng.uniform(-1, 1, (2, model.pixels)).astype(np.float32),
                     *(rng.standard_normal((2, 3), dtype=np.float32) for _ in range(2)))


@pytest.mark.parametrize("name", ["gan", "gan-conv", "gpt"])
def test_a_model_with_its_own_training_step_names_its_ops_when_built(fresh_row, monkeypatch, name):
    """So a program that trains it through the API gets pyai train's estimate and worker; a
    command's own list is kept."""
    monkeypatch.setitem(warmup._state, "expected", ())
    train_a_small_model(name)
    expected = warmup._state["expected"]
    assert expected == warmup.TRAINING_OPS[name]
    assert set(fresh_row.loaded) <= set(expected)
    assert warmup.files_of(fresh_row.loaded) == warmup.files_of(expected)
    monkeypatch.setitem(warmup._state, "expected", ("sgd_update",))
    train_a_small_model(name)
    assert warmup._state["expected"] == ("sgd_update",)


TRAIN_FULL_SIZE = """
import numpy as np
from pyai.models import DCGAN, GAN, GPT
rng = np.random.default_rng(0)
# benchmarks/test_gpt.py's model at 2 blocks: 2,048 tokens a step
model = GPT(vocab_size=103, block_size=128, layers=2, heads=4, channels=128)
for _ in range(2):
    model.train_step(rng.integers(0, 103, (16, 128)), rng.integers(0, 103, (16, 128)))
for model in (GAN(seed=0), DCGAN(seed=0)):
    real = rng.uniform(-1, 1, (64, model.pixels)).astype(np.float32)
    for _ in range(2):
        model.train_step(real, *(rng.standard_normal((64, model.noise_dim), dtype=np.float32) for _ in range(2)))
"""


@pytest.mark.long
def test_warmed_full_size_models_and_a_cached_convolution_compile_nothing(tmp_path):
    """What `pyai warmup` says after it: commands start without compiling. The files of the
    models' training ops, each exercised as warmup exercises it, hold every kernel a training step
    of each model at full size runs: the loops its shapes take (on every thread, the blocked one,
    an outer product, the fused Dense step's parallel kernel ...), not only those of small inputs.
    One cache for the three models (each compiling matmul.py afresh would take minutes): a file is
    exercised the same way whichever model names it, and
    test_a_model_with_its_own_training_step_names_its_ops_when_built checks each model's list.

    Then conv2d.py, which has no kernels of its own (they are implicit_gemm.py's, ...), its
    kernels taken out of the cache: a first convolution compiles them with the notice, and once
    they are cached, a process running the convolution again says nothing."""
    files = set(warmup.files_of({op for name in ("gan", "gan-conv", "gpt") for op in warmup.TRAINING_OPS[name]}))
    files |= {imported for file in files for imported in warmup.IMPORTS.get(file, ())}
    for chain in warmup.CHAINS:   # a process a chain, as `pyai warmup` compiles them
        ordered = [file for file in chain if file in files]
        run_python(f"from pyai import warmup; warmup.warm_files({ordered!r})", NUMBA_CACHE_DIR=str(tmp_path))
    warmed = sorted(path.name for path in tmp_path.rglob("*.nbc"))
    result = run_python(TRAIN_FULL_SIZE, NUMBA_CACHE_DIR=str(tmp_path))
    compiled = sorted(set(path.name for path in tmp_path.rglob("*.nbc")) - set(warmed))
    assert compiled == []
    assert "compiling" not in result.stderr and len(warmed) > 10

    for name in warmup.CONVOLUTION_KERNELS:
        for path in tmp_path.rglob(f"{name}.*"):
            path.unlink()
    code = ("import numpy as np, pyai; rng = np.random.default_rng(0); "
            "x = rng.standard_normal((2, 5, 5, 16), np.float32); w = rng.standard_normal((3, 3, 16, 24), np.float32); "
            "print(float(pyai.ops.conv2d(x, w).sum()))")
    cold = run_python(code, NUMBA_CACHE_DIR=str(tmp_path))
    assert cold.stderr.count("pyai: compiling pyai's kernels for this CPU, once: ~") == 1, cold.stderr
    warm = run_python(code, NUMBA_CACHE_DIR=str(tmp_path))
    assert warm.stderr == "" and warm.stdout == cold.stdout


@pytest.mark.parametrize("handed", [[], ["matmul"], ["dense_adam", "matmul"]],
                         ids=["no worker", "worker for the matmul", "worker for both"])
def test_the_estimate_counts_the_wait_for_a_worker_a_file_of_its_own_imports(monkeypatch, capsys, handed):
    """A GAN's files, cold: with a worker for matmul.py alone, plain_matmul.py stands in, but
    dense_adam.py imports matmul.py, so the step would wait for the worker; with a worker for both,
    plain_dense_adam.py stands in as well and nothing waits."""
    monkeypatch.setattr(warmup, "_state", {"announced": False, "expected": warmup.TRAINING_OPS["gan"], "worker": None})
    monkeypatch.setattr(warmup, "is_cached", lambda file: False)
    monkeypatch.setattr(warmup, "start_worker", lambda file: handed)
    warmup.announce("matmul")
    notice = capsys.readouterr().err
    seconds = int(notice.split("once: ~")[1].split(" s")[0])
    assert warmup.files_of(warmup.TRAINING_OPS["gan"]) == ["binary_crossentropy", "dense_adam", "matmul", "tanh"]
    costs = {**warmup.SECONDS, **warmup.STAND_IN_SECONDS}
    if not handed:   # this process compiles every file
        assert seconds == sum(costs[name] for name in ("binary_crossentropy", "dense_adam", "matmul", "tanh"))
    elif handed == ["matmul"]:   # the worker starts and compiles matmul.py, then this process dense_adam.py
        assert seconds == warmup.WORKER_START_SECONDS + costs["matmul"] + costs["dense_adam"]
    else:            # the stand-ins and the other files, here
        here = ("binary_crossentropy", "tanh", "plain_matmul", "plain_dense_adam")
        assert seconds == sum(costs[name] for name in here)


@pytest.mark.long
def test_dense_adam_stands_in_beside_the_matmul_while_a_worker_compiles_both(tmp_path):
    """A cold GAN-like program: the worker takes matmul.py and dense_adam.py (which imports it);
    plain_dense_adam.py steps here meanwhile, then dense_adam.py from the cache, with the same
    floats."""
    code = ("import json, numpy as np, pyai; from pyai import warmup; from pyai._backends import numba_cpu; "
            "from pyai.dispatch import implementation; "
            "warmup.free_cores = lambda: 2; warmup.expect(warmup.TRAINING_OPS['gan']); "
            "rng = np.random.default_rng(3); x, dy = rng.standard_normal((9, 70), np.float32), "
            "rng.standard_normal((9, 33), np.float32); "
            "state = [rng.standard_normal(71 * 33).astype(np.float32) for _ in range(3)]; state[2] = state[2] ** 2; "
            "copy = [a.copy() for a in state]; grads = [np.empty(71 * 33, np.float32) for _ in range(2)]; "
            "pyai.ops.linear(x, rng.standard_normal((70, 33), np.float32)); "
            "implementation('dense_adam_update')(x, dy, grads[0], *state, 1e-3, 0.9, 0.999, 1e-7, 1); "
            "standing = 'dense_adam_update' in numba_cpu.ROW.standing_in; "
            "process, handed = warmup._state['worker']; process.wait(); "
            "implementation('dense_adam_update')(x, dy, grads[1], *copy, 1e-3, 0.9, 0.999, 1e-7, 1); "
            "after = 'dense_adam_update' in numba_cpu.ROW.standing_in; "
            "same = all(np.array_equal(a, b) for a, b in zip(state + grads[:1], copy + grads[1:])); "
            "print(json.dumps([handed, process.returncode, standing, after, bool(same)]))")
    result = run_python(code, NUMBA_CACHE_DIR=str(tmp_path))
    assert result.stderr.count("pyai: compiling pyai's kernels") == 1, result.stderr
    handed, returncode, standing, after, same = json.loads(result.stdout)
    assert handed == ["dense_adam", "matmul"] and returncode == 0, result.stdout
    assert standing and not after and same, result.stdout


def main_parser():
    from pyai.cli import build_parser
    return build_parser()


def test_the_cache_falls_back_to_the_users_folder_where_the_install_is_read_only(monkeypatch):
    """Installed by root, run by another user: pyai's folder is not writable, and Numba (and
    cache_folder with it) takes its next locator, the user's cache folder."""
    from numba.core import caching, config
    from pyai.kernels.numba_cpu import cache

    def read_only(self):
        raise PermissionError(13, "Permission denied", self.get_cache_path())

    monkeypatch.setattr(config, "CACHE_DIR", "")
    monkeypatch.setattr(caching.InTreeCacheLocator, "ensure_cache_path", read_only)
    folder = cache.cache_folder()
    user_folder = caching.UserWideCacheLocator.from_function(cache.stamp, str(cache.FOLDER / "matmul.py"))
    assert folder is not None and str(folder) == user_folder.get_cache_path()
    assert cache.FOLDER not in folder.parents


def test_free_cores_leave_out_the_busy_ones(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(os, "sched_getscheduler", lambda pid: os.SCHED_OTHER)
    for load, free in ((0.2, 4), (1.6, 2), (3.9, 1), (17.0, 1)):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        assert warmup.free_cores() == free
    # real-time priority: the load waits for this process, so every core is free to it
    for policy in (os.SCHED_FIFO, os.SCHED_RR):
        monkeypatch.setattr(os, "sched_getscheduler", lambda pid, policy=policy: policy)
        assert warmup.free_cores() == 4
