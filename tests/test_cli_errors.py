"""Bad command lines and hostile files: each is one line on stderr (`pyai: error: ...`), a non-zero
exit and no traceback, and nothing is allocated for a size the data or the memory cannot hold.

The checkpoints here are tiny models saved through the API, then edited as a hostile user would.
"""

import gzip
import json
import re
import struct
import zipfile

import numpy as np
import pytest

from pyai import checkpoint, text
from pyai.cli import main
from pyai.models import GAN, GPT
from pyai.optim import Adam
from pyai.training import Training

HUGE = "1000000000000"


def one_line_error(capsys, argv, status, says):
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.replace("\r", "\n").splitlines()   # less progress bars or lines
             if line.strip() and not re.search(r"\d+%\||^training( \w+)?: \d+/\d+ ", line)]
    assert code == status, (code, captured.err)
    assert len(lines) == 1 and lines[0].startswith("pyai: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert says in lines[0], lines[0]


def edit_npz(source, target, **replacements):
    """Copy the .npz `source` to `target` with some entries replaced (arrays or raw .npy bytes)."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            value = replacements.get(name.replace("/", "__"), archive.read(info))
            if isinstance(value, np.ndarray):
                out.writestr(info.filename, npy_bytes(value))
            else:
                out.writestr(info.filename, value)
    return target


def npy_bytes(array):
    import io
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def json_entry(value):
    return np.array(json.dumps(value))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    gan = GAN(image_shape=(8, 8), noise_dim=4, generator_sizes=(8,), discriminator_sizes=(8,))
    checkpoint.save(folder / "gan.npz", gan, training=Training())
    vocabulary = text.Vocabulary(text.load_corpus())
    gpt = GPT(len(vocabulary), 8, layers=1, heads=2, channels=8)
    checkpoint.save(folder / "gpt.npz", gpt, Adam(), Training(),
                    {"vocabulary": vocabulary.characters, "lr": 3e-3})
    paths = {"gan": folder / "gan.npz", "gpt": folder / "gpt.npz", "folder": folder}
    config = dict(gan.config, generator_sizes=[10 ** 12])
    paths["gan_huge_config"] = edit_npz(paths["gan"], folder / "huge_config.npz", config=json_entry(config))
    paths["gpt_huge_layers"] = edit_npz(paths["gpt"], folder / "huge_layers.npz",
                                        config=json_entry(dict(gpt.config, layers=10 ** 9)))
    header = npy_bytes(np.zeros(1, np.float32)).replace(b"(1,)", b"(10000000000000,)")
    paths["gan_huge_header"] = edit_npz(paths["gan"], folder / "huge_header.npz",
                                        **{"weights__generator__0.weight": header})
    state = dict(Training().state(), epoch="Infinity")
    paths["gan_infinite_epoch"] = edit_npz(paths["gan"], folder / "infinite_epoch.npz",
                                           training=np.array(json.dumps(state).replace('"Infinity"', "Infinity")))
    (folder / "gan_run").mkdir()
    edit_npz(paths["gan_infinite_epoch"], folder / "gan_run" / "gan.npz")
    (folder / "gpt_run").mkdir()
    checkpoint.save(folder / "gpt_run" / "gpt.npz", gpt, Adam(), Training(batch_size=32),
                    {"vocabulary": vocabulary.characters, "lr": 3e-3})
    zero = folder / "zero_images"
    zero.mkdir()
    for kind, shape in (("images-idx3-ubyte", (0, 28, 28)), ("labels-idx1-ubyte", (0,))):
        header = bytes([0, 0, 8, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
        (zero / f"t10k-{kind}.gz").write_bytes(gzip.compress(header))
    rng = np.random.default_rng(0)
    np.savez(folder / "mnist.npz", x_train=rng.integers(0, 255, (4, 28, 28), dtype=np.uint8),
             y_train=np.arange(4), x_test=rng.integers(0, 255, (4, 8, 8), dtype=np.uint8), y_test=np.arange(4))
    return paths


# (command line, exit status, what the message says); {name} is a path from the `files` fixture
CASES = [
    (["train", "mlp", "--hidden", HUGE], 1, "layer_sizes: an MLP of"),
    (["train", "mlp", "--lr", "1e30", "--epochs", "3"], 1, "training diverged"),
    (["train", "mlp", "--lr", "1e39"], 2, "float32"),
    (["train", "mlp", "--lr", "nan"], 2, "--lr"),
    (["train", "mlp", "--alpha", "1e39"], 1, "alpha"),
    (["train", "mlp", "--alpha", "nan"], 1, "alpha"),
    (["train", "mlp", "--hidden", "10^12"], 2, "--hidden"),
    (["train", "mlp", "--epochs", "0"], 2, "--epochs"),
    (["train", "gpt", "--channels", HUGE, "--out", "{folder}/huge_gpt"], 1, "a GPT of"),
    (["train", "gpt", "--layers", "1000000000", "--out", "{folder}/deep_gpt"], 1, "a GPT of"),
    (["train", "gpt", "--heads", "3", "--out", "{folder}/odd_heads"], 1, "heads"),
    (["train", "gpt", "--lr", "1e4", "--steps", "30", "--eval-every", "10", "--out", "{folder}/diverging"], 1,
     "training diverged"),
    (["train", "gpt", "--resume", "--layers", "4", "--out", "{folder}/gpt_run"], 1, "--layers 4 (the checkpoint has 1)"),
    (["train", "gpt", "--resume", "--out", "{folder}/nothing_here"], 1, "no such file"),
    (["train", "gan", "--resume", "--out", "{folder}/gan_run"], 1, "not a training state"),
    (["train", "gan", "--data", "{folder}/zero_images", "--out", "{folder}/zero_out"], 1, "holds no images"),
    (["train", "gan", "--data", "{folder}/mnist.npz", "--out", "{folder}/mixed_out"], 1, "images of different sizes"),
    (["sample", "gan", "--checkpoint", "{gan}", "--n", HUGE, "--out", "{folder}/x.png"], 1, f"--n {HUGE}"),
    (["sample", "gan", "--checkpoint", "{gan}", "--n", "10^12", "--out", "{folder}/x.png"], 2, "--n"),
    (["sample", "gan", "--checkpoint", "{gan_huge_config}", "--out", "{folder}/x.png"], 1, "a GAN of"),
    (["sample", "gan", "--checkpoint", "{gan_huge_header}", "--out", "{folder}/x.png"], 1, "claims shape"),
    (["sample", "gpt", "--checkpoint", "{gpt_huge_layers}"], 1, "a GPT of"),
    (["sample", "gpt", "--checkpoint", "{gpt}", "--temperature", "0"], 2, "--temperature"),
    (["sample", "gpt", "--checkpoint", "{gpt}", "--top-k", "0"], 2, "--top-k"),
    (["sample", "gpt", "--checkpoint", "{gan}"], 1, "checkpoint"),
    (["quality", "gan", "--checkpoint", "{gan}", "--n", "1"], 2, "at least two samples"),
]


@pytest.mark.parametrize("argv, status, says", CASES, ids=[" ".join(case[0][:4]) for case in CASES])
def test_a_bad_command_line_or_file_is_one_line(capsys, files, argv, status, says):
    argv = [arg.format(**files) for arg in argv]
    one_line_error(capsys, argv, status, says)


def adam_checkpoint(files, tmp_path, slot, values):
    """A GPT checkpoint with a full Adam state, one moment of which holds `values`."""
    vocabulary = text.Vocabulary(text.load_corpus())
    model, metadata = checkpoint.load(files["gpt"], GPT)
    optimizer = Adam()
    optimizer.m = {name: np.zeros_like(p) for name, p in model.parameters()}
    optimizer.v = {name: np.zeros_like(p) for name, p in model.parameters()}
    getattr(optimizer, slot)["wte.table"][...] = values
    optimizer.steps = 1
    run = tmp_path / "run"
    run.mkdir()
    checkpoint.save(run / "gpt.npz", model, optimizer, Training(batch_size=32),
                    {"vocabulary": vocabulary.characters, "lr": 3e-3})
    return run


@pytest.mark.parametrize("slot, values, says", [("m", np.nan, "holds NaN or infinity"),
                                                ("v", -1.0, "negative values")])
def test_a_resumed_checkpoint_with_bad_adam_moments_is_refused(capsys, files, tmp_path, slot, values, says):
    run = adam_checkpoint(files, tmp_path, slot, 0.0)
    path = run / "gpt.npz"
    bad = np.full(np.load(path)[f"optimizer/{slot}/wte.table"].shape, values, np.float32)
    edit_npz(path, tmp_path / "edited.npz", **{f"optimizer__{slot}__wte.table": bad})
    (tmp_path / "edited.npz").replace(path)
    one_line_error(capsys, ["train", "gpt", "--resume", "--steps", "2", "--out", run], 1, says)


def test_a_diverged_gpt_run_keeps_its_last_good_checkpoint(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "gpt", "--steps", "2", "--eval-every", "2", "--out", str(out)]) == 0
    # the same run resumed with a learning rate far too high (set in the file: --lr that contradicts
    # the checkpoint is refused): the loss turns NaN within a few steps and the run stops
    metadata = json.loads(str(np.load(out / "gpt.npz")["metadata"]))
    edit_npz(out / "gpt.npz", tmp_path / "hot.npz", metadata=json_entry(dict(metadata, lr=1e4)))
    (tmp_path / "hot.npz").replace(out / "gpt.npz")
    capsys.readouterr()
    one_line_error(capsys, ["train", "gpt", "--steps", "60", "--eval-every", "1", "--resume", "--out", out], 1,
                   "keeps the last good")
    training = Training()
    model, _ = checkpoint.load(out / "gpt.npz", GPT, Adam(), training)   # finite, so it loads
    assert 2 < training.step < 60
    assert list(out.glob("*.tmp")) == []
