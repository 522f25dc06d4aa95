"""Logs and pictures: progress as plain lines when stderr is not a terminal, the loss curve and
`pyai bench --json/--plot` as matplotlib PNGs and JSON, all from real runs and measurements."""

import dataclasses
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tqdm import tqdm

from pyai import bench, info, progress
from pyai.bench import peers
from pyai.bench.report import case_record
from pyai.cli import main
from pyai.images import CURVES_SIZE, save_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_cli(*argv):
    """`python -m pyai ...` with stdout and stderr piped, as in a CI log."""
    result = subprocess.run([sys.executable, "-m", "pyai", *argv], capture_output=True, text=True,
                            timeout=600, env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    return result


def test_a_piped_training_prints_one_plain_line_per_epoch():
    result = run_cli("train", "mlp", "--epochs", "3", "--hidden", "8")
    assert "\r" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("training: ")]
    assert [line.split(",")[0] for line in lines] == [f"training: {epoch}/3 epochs" for epoch in (1, 2, 3)]
    assert all("loss=" in line for line in lines), lines


def test_a_piped_gpt_run_prints_one_line_per_evaluation(tmp_path):
    result = run_cli("train", "gpt", "--steps", "6", "--eval-every", "3", "--layers", "1", "--heads", "2",
                     "--channels", "8", "--block-size", "8", "--batch-size", "2", "--out", str(tmp_path))
    assert "\r" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("training gpt: ")]
    assert [line.split(",")[0] for line in lines] == ["training gpt: 3/6 steps", "training gpt: 6/6 steps"]
    assert all("held_out=" in line for line in lines), lines


def test_a_gan_run_off_a_terminal_prints_one_line_per_epoch(tmp_path, capsys):
    from test_gan_cli import write_mnist_like
    data = write_mnist_like(tmp_path, count=140)
    assert main(["train", "gan", "--epochs", "2", "--data", str(data), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    steps = 140 // 64   # full batches of 64
    lines = [line for line in err.splitlines() if line.startswith("training gan: ")]
    assert "\r" not in err
    assert [line.split(",")[0] for line in lines] == [f"training gan: {steps}/{2 * steps} steps",
                                                      f"training gan: {2 * steps}/{2 * steps} steps"]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_a_tqdm_bar(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    with progress.bar(total=3, desc="training", unit="step") as bar:
        assert isinstance(bar, tqdm)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(progress.bar(total=3, desc="training", unit="step"), progress.Lines)


def assert_png(path, size=None, min_side=300):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert size is None or (width, height) == size
    assert min(width, height) >= min_side and max(width, height) <= 4000, (path, width, height)
    assert colours is None or len(colours) > 20, f"{path} is nearly blank"   # lines, text, antialiasing


def test_the_loss_curve_is_a_png_of_a_real_run(tmp_path):
    from pyai.data import load_digits, one_hot
    from pyai.losses import BinaryCrossentropy
    from pyai.models import MLP
    from pyai.optim import Adam
    from pyai.training import fit

    x, labels, _, _ = load_digits(seed=0)
    model = MLP([64, 16, 10], output_activation=None, seed=0)
    history = fit(model, BinaryCrossentropy(from_logits=True), Adam(lr=0.01), x, one_hot(labels, 10),
                  epochs=4, batch_size=64, progress=False)
    path = tmp_path / "losses.png"
    save_curves(path, {"training": history, "noisy": np.repeat(history, 200)}, "MLP loss", "epoch")
    assert_png(path, size=CURVES_SIZE)
    with pytest.raises(ValueError, match="nothing to draw"):
        save_curves(tmp_path / "empty.png", {"training": []}, "empty", "epoch")


@pytest.fixture(scope="module")
def limits():
    """This machine's limits, measured briefly: the same quantities `pyai bench` measures."""
    return bench.CpuLimits(threads=2, fma_peak_one_core=bench.fma_peak(1, iterations=1000, repeats=2, min_seconds=0),
                           fma_peak=bench.fma_peak(2, iterations=1000, repeats=2, min_seconds=0),
                           copy_bandwidth=bench.copy_bandwidth(floats=2**16, repeats=2, min_seconds=0))


def case_records(limits):
    rng = np.random.default_rng(0)
    records = []
    for case in (bench.matmul_case(48, rng, {}), bench.linear_case(32, 40, 24, rng, {}),
                 bench.leaky_relu_case(4096, rng, {})):
        records.append(case_record(case, bench.best_times(case.runners, 2), limits))
    return records + [{"limits": dataclasses.asdict(limits)}]


def test_bench_charts_of_a_real_run(tmp_path, limits):
    written = bench.plot(tmp_path / "charts", "cases", case_records(limits))
    assert [path.name for path in written] == ["ratios.png", "gflops.png"]
    for path in written:
        assert_png(path)


def test_attention_charts_of_a_real_sweep(tmp_path, limits):
    rng = np.random.default_rng(0)
    records = []
    for backward in (False, True):
        for causal in (False, True):
            for n in (16, 32):
                case = bench.attention_case(n, causal, backward, rng, {}, heads=2, depth=16)
                peaks = {name: bench.resident_peak_bytes(runner) for name, runner in case.runners.items()}
                records.append({"pass": "fwd+bwd" if backward else "fwd", "T": n, "causal": causal,
                                "work": case.work, "seconds": bench.best_times(case.runners, 2),
                                "peak_bytes": peaks})
    written = bench.plot(tmp_path, "attention", records + [{"limits": dataclasses.asdict(limits)}])
    assert [path.name for path in written] == ["attention-time.png", "attention-memory.png",
                                               "attention-gflops.png"]
    for path in written:
        assert_png(path)


def test_bench_json_and_plot_through_the_command_line(tmp_path, limits, monkeypatch, capsys):
    """`pyai bench --json FILE --plot DIR` on a real run of two small cases."""
    from pyai.bench import report
    rng = np.random.default_rng(0)
    monkeypatch.setattr(report, "cases", lambda quick, peers: [bench.matmul_case(40, rng, peers),
                                                               bench.leaky_relu_case(3000, rng, peers)])
    monkeypatch.setattr(report, "installed", lambda: {})
    monkeypatch.setattr(report.CpuLimits, "measure", classmethod(lambda cls, quick=False: limits))
    path = tmp_path / "run.json"
    assert main(["bench", "--quick", "--json", str(path), "--plot", str(tmp_path / "charts")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {path}" in out and "| matmul 40^3 |" in out
    results = json.loads(path.read_text())
    assert set(results["machine"]) == set(info.collect())
    assert results["machine"]["cpu"]["model"] == info.cpu_model()
    assert results["limits"] == dataclasses.asdict(limits)
    assert [case["case"] for case in results["cases"]] == ["matmul 40^3", "leaky_relu fwd+grad 0M floats"]
    for case in results["cases"]:
        assert {"pyai", "numpy"} <= set(case["seconds"])
        assert all(np.isfinite(seconds) and seconds > 0 for seconds in case["seconds"].values())
        assert case["rates"]["pyai"] == pytest.approx(case["work"] / case["seconds"]["pyai"] / 1e9)
    for name in ("ratios.png", "gflops.png"):
        assert_png(tmp_path / "charts" / name)


def test_start_up_lines_written_to_file_descriptor_2_stay_off_stderr(tmp_path, monkeypatch, capfd):
    """What TensorFlow's C++ code does on import (oneDNN and CPU-feature notices written straight
    to descriptor 2), done by two small modules: a quiet import holds the lines back, and shows
    them when the import fails."""
    (tmp_path / "noisy_peer.py").write_text("import os\nos.write(2, b'I0000 port.cc:153] oneDNN notice\\n')\n")
    (tmp_path / "broken_peer.py").write_text("import os\nos.write(2, b'E0000 why it broke\\n')\n"
                                             "raise ImportError('broken_peer: missing library')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    module = peers.import_quietly("noisy_peer")
    assert module.__name__ == "noisy_peer" and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert capfd.readouterr().err == ""
    with pytest.raises(ImportError, match="missing library"):
        peers.import_quietly("broken_peer")
    assert capfd.readouterr().err == "E0000 why it broke\n"
