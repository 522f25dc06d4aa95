"""`pyai train gan`, `pyai sample gan`, `pyai quality gan`: what they write, exact resumption, and
one-line errors (no traceback) for every bad input."""

import gzip
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import require, skip_in_cuda_simulator
from pyai import checkpoint
from pyai.cli import main
from pyai.images import grid_size
from pyai.models import MLP

TRAINING_OPS = ["linear", "matmul", "leaky_relu_grad", "tanh_grad", "binary_crossentropy_logits",
                "binary_crossentropy_logits_grad", "adam_update"]
DIGITS_STEPS_PER_EPOCH = 1797 // 64


def require_all(backend):
    for op in TRAINING_OPS:
        require(op, backend)
    skip_in_cuda_simulator(backend, "training a model (a GAN step takes ~20 s there)")


def one_line_error(capsys, argv, status=1):
    assert main(argv) == status
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyai: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def train(capsys, out, *extra):
    assert main(["train", "gan", "--out", str(out), *extra]) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint after one epoch on the 8x8 digits, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("gan")
    assert main(["train", "gan", "--epochs", "1", "--out", str(out)]) == 0
    return out


def test_train_gan_writes_sample_grids_a_loss_curve_and_a_checkpoint(backend, capsys, tmp_path):
    require_all(backend)
    out = train(capsys, tmp_path, "--epochs", "2", "--backend", backend)
    assert "trained 2 epochs" in out and "discriminator loss" in out and "generator loss" in out, out
    for epoch in (1, 2):
        assert Image.open(tmp_path / f"samples_epoch_{epoch:03d}.png").size == grid_size(64, (8, 8))
    assert Image.open(tmp_path / "losses.png").format == "PNG"
    arrays = checkpoint.read_npz(tmp_path / "gan.npz")
    assert arrays["history"].shape == (2 * DIGITS_STEPS_PER_EPOCH, 4)
    assert not list(tmp_path.glob("*.tmp")), "a temporary checkpoint was left behind"


def test_resume_continues_exactly(backend, capsys, tmp_path):
    require_all(backend)
    train(capsys, tmp_path / "straight", "--epochs", "2", "--seed", "5", "--backend", backend)
    train(capsys, tmp_path / "resumed", "--epochs", "1", "--seed", "5", "--backend", backend)
    train(capsys, tmp_path / "resumed", "--epochs", "2", "--resume", "--backend", backend)
    straight, resumed = (checkpoint.read_npz(tmp_path / run / "gan.npz") for run in ("straight", "resumed"))
    assert sorted(straight) == sorted(resumed)
    for name in straight:
        assert np.array_equal(straight[name], resumed[name]), f"{name} differs after --resume ({backend})"
    assert ((tmp_path / "straight/samples_epoch_002.png").read_bytes()
            == (tmp_path / "resumed/samples_epoch_002.png").read_bytes())


def test_resume_when_the_epochs_are_done_changes_nothing(capsys, trained):
    before = (trained / "gan.npz").read_bytes()
    assert "already trained 1 epochs; nothing to do" in train(capsys, trained, "--epochs", "1", "--resume")
    assert (trained / "gan.npz").read_bytes() == before


@pytest.mark.parametrize("count", [64, 10])
def test_sample_gan_writes_a_grid_of_the_right_size(capsys, tmp_path, trained, count):
    path = tmp_path / "grid.png"
    assert main(["sample", "gan", "--checkpoint", str(trained / "gan.npz"), "--n", str(count),
                 "--out", str(path)]) == 0
    # 8x8 digits drawn 4x larger in cells of 32 + 2 pixels: 8 x 8 cells for 64, 4 x 3 for 10
    assert Image.open(path).size == {64: (274, 274), 10: (138, 104)}[count]


def test_quality_gan_reports_the_three_figures(capsys, trained):
    assert main(["quality", "gan", "--checkpoint", str(trained / "gan.npz"), "--n", "500"]) == 0
    out = capsys.readouterr().out
    assert "accurate on held-out real images" in out
    assert "classified with confidence > 0.9" in out and "Frechet distance" in out, out


def write_mnist_like(folder, count=70):
    """IDX files of `count` random 28x28 images: MNIST's format and image size."""
    rng = np.random.default_rng(0)
    for kind, array in (("images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)),
                        ("labels-idx1-ubyte", rng.integers(0, 10, count, dtype=np.uint8))):
        header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        (folder / f"t10k-{kind}.gz").write_bytes(gzip.compress(header + array.tobytes()))
    return folder


def test_train_gan_takes_mnist_files_with_data(capsys, tmp_path):
    out = train(capsys, tmp_path / "out", "--data", str(write_mnist_like(tmp_path)), "--epochs", "1")
    assert "trained 1 epochs" in out
    assert Image.open(tmp_path / "out/samples_epoch_001.png").size == grid_size(64, (28, 28))


def test_a_missing_checkpoint_is_a_one_line_error(capsys, tmp_path):
    line = one_line_error(capsys, ["sample", "gan", "--checkpoint", str(tmp_path / "none.npz"),
                                   "--out", str(tmp_path / "grid.png")])
    assert "none.npz: no such file" in line


def test_a_sample_grid_into_a_missing_folder_is_a_one_line_error(capsys, tmp_path, trained):
    line = one_line_error(capsys, ["sample", "gan", "--checkpoint", str(trained / "gan.npz"),
                                   "--out", str(tmp_path / "missing/grid.png")])
    assert "its directory does not exist" in line


def test_a_corrupt_checkpoint_is_a_one_line_error(capsys, tmp_path, trained):
    path = tmp_path / "gan.npz"
    path.write_bytes((trained / "gan.npz").read_bytes()[:5000])
    line = one_line_error(capsys, ["sample", "gan", "--checkpoint", str(path),
                                   "--out", str(tmp_path / "g.png")])
    assert "not a readable .npz file" in line


def test_a_checkpoint_of_another_architecture_is_a_one_line_error(capsys, tmp_path, trained):
    MLP([64, 10]).save(tmp_path / "mlp.npz")
    line = one_line_error(capsys, ["sample", "gan", "--checkpoint", str(tmp_path / "mlp.npz"),
                                   "--out", str(tmp_path / "g.png")])
    assert "does not make a GAN (a checkpoint of another model?)" in line
    # a GAN for 8x8 digits cannot go on with 28x28 MNIST images
    line = one_line_error(capsys, ["train", "gan", "--out", str(trained), "--resume", "--epochs", "2",
                                   "--data", str(write_mnist_like(tmp_path))])
    assert "its GAN makes (8, 8) images" in line and "(28, 28)" in line


@pytest.mark.parametrize("argv, says", [
    (["--backend", "tpu"], "unknown backend 'tpu'"),
    (["--data", "/nonexistent/mnist"], "MNIST /nonexistent/mnist: no such file or folder"),
])
def test_bad_training_input_is_a_one_line_error(capsys, tmp_path, argv, says):
    assert says in one_line_error(capsys, ["train", "gan", "--out", str(tmp_path), *argv])


def test_corrupt_data_is_a_one_line_error(capsys, tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07")
    line = one_line_error(capsys, ["train", "gan", "--out", str(tmp_path / "out"), "--data", str(tmp_path)])
    assert "t10k-images-idx3-ubyte: longer than its header says" in line


def test_an_existing_checkpoint_is_not_overwritten_without_resume(capsys, trained):
    before = (trained / "gan.npz").read_bytes()
    assert "pass --resume to go on from it" in one_line_error(capsys, ["train", "gan", "--out", str(trained)])
    assert (trained / "gan.npz").read_bytes() == before


def test_python_dash_m_pyai_prints_one_line_for_a_corrupt_checkpoint(tmp_path):
    path = tmp_path / "gan.npz"
    path.write_bytes(b"garbage")
    result = subprocess.run([sys.executable, "-m", "pyai", "sample", "gan", "--checkpoint", str(path),
                             "--out", str(tmp_path / "g.png")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyai: error: checkpoint "), result.stderr
