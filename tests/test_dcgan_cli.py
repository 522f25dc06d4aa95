"""`pyai train gan --arch conv` and `sample` / `quality` on its checkpoints: the same grids, loss
curve, checkpoint and exact resumption as the Dense GAN's (test_gan_cli.py). The runs use 70
MNIST-shaped images, one batch of 64 a step, one step an epoch, to stay short."""

import numpy as np
import pytest
from PIL import Image

from conftest import require, skip_in_cuda_simulator
from pyai import checkpoint
from pyai.cli import main
from pyai.images import grid_size
from test_gan_cli import one_line_error, write_mnist_like

TRAINING_OPS = ["linear", "matmul", "conv2d", "conv2d_grad", "conv2d_transpose", "conv2d_transpose_grad",
                "leaky_relu_grad", "tanh_grad", "binary_crossentropy_logits",
                "binary_crossentropy_logits_grad", "adam_update"]


def train(capsys, out, data, *extra):
    assert main(["train", "gan", "--arch", "conv", "--data", str(data), "--out", str(out), *extra]) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("mnist"))


def test_train_writes_grids_a_loss_curve_and_a_dcgan_checkpoint_and_resumes_exactly(backend, capsys, tmp_path,
                                                                                    data):
    for op in TRAINING_OPS:
        require(op, backend)
    skip_in_cuda_simulator(backend, "training a DCGAN on 28x28 images (4 steps of batch 64: hours there)")
    out = train(capsys, tmp_path / "straight", data, "--epochs", "2", "--seed", "3", "--backend", backend)
    assert "trained 2 epochs" in out and "generator loss" in out, out
    straight = tmp_path / "straight"
    for epoch in (1, 2):
        assert Image.open(straight / f"samples_epoch_{epoch:03d}.png").size == grid_size(64, (28, 28))
    assert Image.open(straight / "losses.png").format == "PNG"
    assert '"kind": "DCGAN"' in str(checkpoint.read_npz(straight / "gan.npz")["format"])

    train(capsys, tmp_path / "resumed", data, "--epochs", "1", "--seed", "3", "--backend", backend)
    # --resume takes the architecture from the checkpoint: --arch may be left out
    assert main(["train", "gan", "--data", str(data), "--out", str(tmp_path / "resumed"), "--epochs", "2",
                 "--resume", "--backend", backend]) == 0
    expected, got = (checkpoint.read_npz(tmp_path / run / "gan.npz") for run in ("straight", "resumed"))
    assert sorted(expected) == sorted(got)
    for name in expected:
        assert np.array_equal(expected[name], got[name]), f"{name} differs after --resume ({backend})"

    grid = tmp_path / "grid.png"
    assert main(["sample", "gan", "--checkpoint", str(straight / "gan.npz"), "--n", "10", "--out", str(grid)]) == 0
    assert Image.open(grid).size == grid_size(10, (28, 28))
    capsys.readouterr()
    assert main(["quality", "gan", "--checkpoint", str(straight / "gan.npz"), "--data", str(data),
                 "--n", "100"]) == 0
    assert "Frechet distance" in capsys.readouterr().out

    line = one_line_error(capsys, ["train", "gan", "--arch", "dense", "--data", str(data), "--out",
                                   str(straight), "--epochs", "3", "--resume"])
    assert "--arch dense (the checkpoint has conv)" in line


def test_images_the_dcgan_cannot_make_are_a_one_line_error(capsys, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    images = np.zeros((3, 4, 6), np.uint8)
    labels = np.zeros(3, np.uint8)
    np.savez(folder / "mnist.npz", x_train=images, y_train=labels, x_test=images, y_test=labels)
    line = one_line_error(capsys, ["train", "gan", "--arch", "conv", "--data", str(folder / "mnist.npz"),
                                   "--out", str(tmp_path / "out")])
    assert "image_shape: expected (height, width), each a multiple of 4" in line, line
