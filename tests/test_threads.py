"""The numba-cpu kernels under threads and fork: the threading layer pyai picks (tbb) is both
thread-safe and fork-safe; the other layers, when a user chooses them, never fail silently.

Each case runs in a fresh Python process, since Numba chooses its threading layer once per
process. Results are compared with numpy in float64, to 1e-4 relative (float32 sums of <= 64 terms).
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pyai

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork and the layers are Linux's here")

# Ops on small inputs, each checked against numpy; CHECK is the source both the parent and the
# children run, so they exercise matmul, attention and adam (a parallel kernel each).
CHECK = textwrap.dedent("""
    import numpy as np
    import pyai

    def check(seed):
        rng = np.random.default_rng(seed)
        a, b = rng.standard_normal((48, 32)), rng.standard_normal((32, 40))
        assert np.allclose(pyai.ops.matmul(a, b), a @ b, rtol=1e-4, atol=1e-4)
        q, k, v = (rng.standard_normal((1, 2, 16, 8)) for _ in range(3))
        scores = np.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(8)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        expected = (weights / weights.sum(-1, keepdims=True)) @ v
        assert np.allclose(pyai.ops.attention(q, k, v), expected, rtol=1e-4, atol=1e-4)
        param = rng.standard_normal(1000).astype(np.float32)
        grad = rng.standard_normal(1000).astype(np.float32)
        m, v = np.zeros_like(param), np.zeros_like(param)
        start = param.copy()
        pyai.ops.adam_update(param, grad, m, v, step=1, lr=0.1)
        step = 0.1 * np.sqrt(1 - 0.999) / (1 - 0.9) * (0.1 * grad) / (np.sqrt(0.001 * grad**2.0) + 1e-7)
        assert np.allclose(param, start - step, atol=1e-5)
        return True
""")


def run_python(body, layer=None, timeout=240):
    """Run CHECK then `body` in a fresh interpreter; (returncode, stdout, stderr)."""
    env = dict(os.environ)
    env.pop("NUMBA_THREADING_LAYER", None)
    if layer is not None:
        env["NUMBA_THREADING_LAYER"] = layer
    source = CHECK + "import os\n" + textwrap.dedent(body)
    result = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, env=env,
                            timeout=timeout)
    return result.returncode, result.stdout, result.stderr


FORK = """
    check(0)                                     # the parallel kernels have run in the parent
    pid = os.fork()
    if pid == 0:
        try:
            check(1)
        except BaseException as error:
            print(f"child: {type(error).__name__}: {error}", flush=True)
            os._exit(3)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print("child status", status, "layer", pyai.threading_layer(), flush=True)
"""

MULTIPROCESSING_FORK = """
    import multiprocessing
    if __name__ == "__main__":
        check(0)
        with multiprocessing.get_context("fork").Pool(2) as pool:
            print("pool", pool.map(check, [1, 2, 3]), flush=True)
"""

FOUR_THREADS = """
    import threading
    results = []
    def worker(seed):
        for repeat in range(5):
            results.append(check(seed * 10 + repeat))
    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads: thread.start()
    for thread in threads: thread.join()
    print("threads", len(results), all(results), flush=True)
"""


# A program that starts Numba's threads itself, after `import pyai` and before any pyai op
# (numba.set_num_threads starts them), then forks
EARLY_THREADS = """
    import numba
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    print("layer", numba.threading_layer(), flush=True)
""" + FORK


def test_pyai_picks_tbb_when_no_layer_was_chosen():
    assert pyai.threading_layer() == "tbb" or os.environ.get("NUMBA_THREADING_LAYER")


def test_os_fork_child_runs_ops_after_parallel_kernels():
    code, out, err = run_python(FORK)
    assert code == 0 and "child status 0 layer tbb" in out, (out, err)


def test_multiprocessing_fork_children_run_ops():
    code, out, err = run_python(MULTIPROCESSING_FORK)
    assert code == 0 and "pool [True, True, True]" in out, (out, err)


def test_four_threads_call_matmul_attention_adam_at_once():
    code, out, err = run_python(FOUR_THREADS)
    assert code == 0 and "threads 20 True" in out, (out, err)


@pytest.mark.parametrize("layer", [None, "tbb"])
def test_threads_started_by_the_program_before_any_op_run_on_tbb(layer):
    """`import pyai` makes tbb loadable, so Numba's threads are tbb's however they start: without
    it they were GNU OpenMP's (with the fork warning), or, asked for tbb, none could be loaded."""
    code, out, err = run_python(EARLY_THREADS, layer=layer)
    assert code == 0 and "layer tbb" in out and "child status 0 layer tbb" in out, (out, err)
    assert "RuntimeWarning" not in err, err


def test_a_users_openmp_choice_is_kept_and_a_forked_child_gets_a_clear_error():
    code, out, err = run_python(FORK, layer="omp")
    assert code == 0, (out, err)
    assert "child: BackendUnavailableError" in out and "forked" in out, (out, err)
    assert "GNU OpenMP" in err   # the warning, once, in the parent
    assert err.count("RuntimeWarning") == 1, err


def test_workqueue_serializes_four_threads_instead_of_aborting():
    code, out, err = run_python(FOUR_THREADS, layer="workqueue")
    assert code == 0 and "threads 20 True" in out, (out, err)
    assert "workqueue" in err and "one call at a time" in err


def test_tbb_library_is_found_in_the_environment():
    from pyai import threads
    assert any(os.path.isfile(path) for path in threads.tbb_candidates())


def test_loss_sums_are_the_same_bits_on_every_call():
    """TBB hands chunks to threads dynamically; the sums use a fixed partition, so a loss (and a
    resumed run's history) does not change in its last bit from call to call."""
    rng = np.random.default_rng(3)
    p, t = rng.uniform(0.01, 0.99, (2, 300_001)).astype(np.float32)
    for loss in (lambda: pyai.ops.mse(p, t), lambda: pyai.ops.binary_crossentropy(p, t),
                 lambda: pyai.ops.binary_crossentropy(p, t, from_logits=True)):
        assert len({loss() for _ in range(30)}) == 1
