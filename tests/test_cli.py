"""The `pyai` command line: training prints a test accuracy; every error is one line, no traceback."""

import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import assert_close, require, skip_in_cuda_simulator
from pyai import dispatch
from pyai.cli import main
from pyai.data import load_digits, one_hot
from pyai.models import MLP

TRAINING_OPS = ["linear", "matmul", "leaky_relu_grad", "binary_crossentropy_logits",
                "binary_crossentropy_logits_grad", "adam_update"]
ACCURACY_LINE = re.compile(r"^test accuracy: (\d+\.\d\d)% on 360 digits", re.MULTILINE)


def require_all(backend):
    for op in TRAINING_OPS:
        require(op, backend)
    skip_in_cuda_simulator(backend, "training a model (a GAN step takes ~20 s there)")


def test_train_mlp_prints_the_test_accuracy_and_saves_the_model(backend, capsys, tmp_path):
    require_all(backend)
    path = tmp_path / "mlp.npz"
    status = main(["train", "mlp", "--epochs", "3", "--hidden", "32", "--backend", backend,
                   "--out", str(path)])
    out = capsys.readouterr().out
    assert status == 0, out
    match = ACCURACY_LINE.search(out)
    assert match, f"no accuracy line in: {out!r}"
    # 3 epochs of Adam reach ~90%; 10 classes by chance would be 10%
    assert float(match.group(1)) > 70, out

    _, _, x_test, labels_test = load_digits(seed=0)
    accuracy = 100 * np.mean(np.argmax(MLP.load(path).predict(x_test, batch_size=32), axis=1) == labels_test)
    assert f"{accuracy:.2f}%" == f"{match.group(1)}%", "the saved model is not the one that was scored"


def test_predict_in_batches_matches_predict_at_once(rng):
    """Batches of the training batch size, the last one ragged (37 rows by 8); float32 both ways,
    a few dozen products per output, so 1e-6 relative."""
    model = MLP([13, 17, 5], activation="leaky_relu", seed=int(rng.integers(1000)))
    x = rng.standard_normal((37, 13)).astype(np.float32)
    batched = model.predict(x, batch_size=8)
    assert batched.shape == (37, 5)
    assert_close("batched outputs", batched, model.predict(x), 1e-6)
    with pytest.raises(ValueError, match="batch_size: expected a positive integer, got 0"):
        model.predict(x, batch_size=0)


def one_line_error(capsys, argv, status):
    assert main(argv) == status
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyai: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def test_an_unknown_backend_is_a_one_line_error(capsys):
    line = one_line_error(capsys, ["train", "mlp", "--backend", "tpu"], status=1)
    assert "unknown backend 'tpu'" in line


def test_an_unusable_backend_is_a_one_line_error(capsys):
    unusable = [row["name"] for row in dispatch.backends() if not row["usable"]]
    if not unusable:
        pytest.skip("every backend is usable on this machine")
    line = one_line_error(capsys, ["train", "mlp", "--backend", unusable[0]], status=1)
    assert f"backend {unusable[0]!r} is not usable here" in line
    assert dispatch.get_backend() != unusable[0], "a refused backend must not stay chosen"


@pytest.mark.parametrize("argv, says", [
    (["train", "mlp", "--epochs", "0"], "argument --epochs: expected a positive integer"),
    (["train", "mlp", "--lr", "fast"], "argument --lr: invalid positive_float value"),
    (["train", "mlp", "--activation", "softmax"], "argument --activation: invalid choice"),
    (["train", "mlp", "--hidden"], "argument --hidden: expected at least one argument"),
    (["train", "cnn"], "argument MODEL: invalid choice"),
    ([], "required: COMMAND"),
])
def test_a_bad_command_line_is_a_one_line_error(capsys, argv, says):
    assert says in one_line_error(capsys, argv, status=2)


def test_python_dash_m_pyai_runs_the_same_command_line():
    result = subprocess.run([sys.executable, "-m", "pyai", "train", "mlp", "--backend", "tpu"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyai: error: ") and "'tpu'" in lines[0], result.stderr


def test_load_digits_is_scaled_stratified_and_deterministic():
    x_train, labels_train, x_test, labels_test = load_digits(seed=3)
    assert x_train.shape == (1437, 64) and x_test.shape == (360, 64)
    assert x_train.dtype == np.float32 and labels_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0 and np.all(np.isfinite(x_train))
    assert np.bincount(labels_test).min() >= 35, "every digit should be in the test split"
    again = load_digits(seed=3)
    assert np.array_equal(again[0], x_train) and np.array_equal(again[3], labels_test)
    assert not np.array_equal(load_digits(seed=4)[3], labels_test)


def test_load_digits_reads_scikit_learns_digits_and_splits_every_class_in_proportion():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x_train, labels_train, x_test, labels_test = load_digits(seed=5)
    ours = np.concatenate([np.column_stack([x, labels]) for x, labels in ((x_train, labels_train),
                                                                         (x_test, labels_test))])
    theirs = np.column_stack([digits.data.astype(np.float32) / np.float32(16.0), digits.target])
    # the same 1797 rows, each once (sorted row by row, both sides)
    assert np.array_equal(ours[np.lexsort(ours.T)], theirs[np.lexsort(theirs.T)])
    shares = np.bincount(digits.target) * len(labels_test) / len(digits.target)
    assert np.all(np.abs(np.bincount(labels_test) - shares) < 1), (np.bincount(labels_test), shares)
    with pytest.raises(ValueError, match="test_fraction: expected a number between 0 and 1"):
        load_digits(test_fraction=1.0)


def test_one_hot():
    assert np.array_equal(one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match=r"labels: expected values in \[0, 3\)"):
        one_hot(np.array([3]), 3)
