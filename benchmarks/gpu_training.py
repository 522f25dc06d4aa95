"""Trains the GPT, the GAN and the DCGAN for a few hundred steps on each usable GPU backend, and
times the same steps in PyTorch eager on the same GPU, as one table.

    python benchmarks/gpu_training.py [--steps 300] [--mnist PATH] [--backends cuda numba-cuda]
                                      [--out FILE.md]

GPT: benchmarks/test_gpt.py's sizes (4 blocks, 4 heads, 128 channels, context 128, batch 16) on
the character corpus `pyai train gpt` reads (pyai.text), a fresh random batch a step, Adam 1e-3.
GAN and DCGAN: pyai.models.GAN's and DCGAN's MNIST sizes, batch 64, on MNIST from --mnist (IDX
files), else on random images in [-1, 1] (then only the losses' finiteness means anything).
Each row: the loss over the first and the last 10 steps (GPT: the cross-entropy; the GANs: the
discriminator's and the generator's losses), whether every loss was finite, and the median
wall time of a step after the first 5 (compilation and first calls left out); a backend that
lacks one of a model's ops, or a run that raised, gets a row saying so. A pyai step takes
numpy arrays and gives numpy arrays, so each op copies its inputs to the GPU and its results
back; PyTorch's step keeps the model and the batch on the GPU and waits for its loss, so the
ratio shows what those copies cost. Exits non-zero if a loss was not finite, or if the GPT's
loss did not fall (last 10 steps' mean under 0.8 x the first 10's), or if a run raised.
"""

import argparse
import statistics
import sys
import time
import traceback

import numpy as np

import pyai
from pyai import dispatch, text
from pyai.models import DCGAN, GAN, GPT
from pyai.optim import Adam

GPT_SIZES = {"vocab_size": None, "block_size": 128, "layers": 4, "heads": 4, "channels": 128}
DEVICE = "cuda"   # where the PyTorch twins run
GPT_BATCH, GAN_BATCH, WARMUP, WINDOW = 16, 64, 5, 10


def timed(step, steps):
    """(losses of each step as a list of tuples, median seconds of the steps after WARMUP), or
    (None, why) when the run raised."""
    losses, seconds = [], []
    try:
        for index in range(steps):
            start = time.perf_counter()
            losses.append(step(index))
            seconds.append(time.perf_counter() - start)
    except Exception as error:   # one broken run must not hide the others' figures
        traceback.print_exc()
        return None, f"raised at step {len(losses)}: {type(error).__name__}: {str(error)[:200]}"
    return losses, statistics.median(seconds[WARMUP:] or seconds)


def backend_runs(backends, ops, make_step, steps):
    """{"pyai <backend>": timed(...)} for each backend, or (None, the ops it lacks)."""
    rows = {}
    for backend in backends:
        missing = [op for op in ops if op not in dispatch.ops_of(backend)]
        if missing:
            rows[f"pyai {backend}"] = None, f"not run: the backend lacks {', '.join(missing)}"
            continue
        with pyai.use_backend(backend):
            rows[f"pyai {backend}"] = timed(make_step(), steps)
    return rows


def gpt_runs(steps, backends, torch):
    corpus = text.load_corpus()
    vocabulary = text.Vocabulary(corpus)
    ids = vocabulary.encode(corpus)
    sizes = dict(GPT_SIZES, vocab_size=len(vocabulary))
    batches = [text.random_batch(ids, GPT_BATCH, sizes["block_size"], np.random.default_rng(step))
               for step in range(steps)]

    def make_step():
        model, optimizer = GPT(**sizes, seed=0), Adam(1e-3)

        def step(index):
            loss = model.train_step(*batches[index])
            optimizer.step(model)
            return (loss,)
        return step

    rows = backend_runs(backends, GPT.TRAINING_OPS, make_step, steps)
    if torch is not None:
        import torch_twins
        runs = [torch_twins.gpt_step(sizes, *batch, device=DEVICE) for batch in batches[:1]]
        rows["PyTorch eager (same batch each step)"] = timed(lambda index: (runs[0](),), steps)
    return rows


def gan_runs(model, steps, backends, torch, images):
    """The runs of `model`, GAN or DCGAN (the same training step on other networks)."""
    rng = np.random.default_rng(0)
    noise_dim = model().noise_dim
    noises = [rng.standard_normal((2, GAN_BATCH, noise_dim), dtype=np.float32) for _ in range(steps)]
    reals = [images[rng.integers(0, len(images), GAN_BATCH)] for _ in range(steps)]

    def make_step():
        gan = model(seed=0)

        def step(index):
            losses = gan.train_step(reals[index], *noises[index])
            return losses["discriminator_loss"], losses["generator_loss"]
        return step

    rows = backend_runs(backends, model.TRAINING_OPS, make_step, steps)
    if torch is not None:
        import torch_twins
        twin = (torch_twins.dcgan_step if model is DCGAN else torch_twins.gan_step)(model(seed=0), device=DEVICE)
        rows["PyTorch eager"] = timed(lambda index: twin(reals[index], *noises[index]), steps)
    return rows


def mnist_images(path):
    """(n, 784) float32 in [-1, 1]: MNIST from `path`, or random pixels without one."""
    if path is None:
        return np.random.default_rng(1).uniform(-1, 1, (1024, 784)).astype(np.float32)
    from pyai.data import load_mnist
    pixels, _ = load_mnist(path)
    return (pixels.reshape(len(pixels), -1) * 2 - 1).astype(np.float32)


def table_lines(model, rows, loss_names):
    torch_seconds = next((seconds for name, (losses, seconds) in rows.items()
                          if name.startswith("PyTorch") and losses is not None), None)
    lines = []
    for name, (losses, seconds) in rows.items():
        if losses is None:
            lines.append(f"| {model} | {name} | - | {seconds} | - | - | - |")
            continue
        array = np.array(losses, np.float64)
        first, last = array[:WINDOW].mean(axis=0), array[-WINDOW:].mean(axis=0)
        spans = ", ".join(f"{loss} {a:.3f} -> {b:.3f}" for loss, a, b in zip(loss_names, first, last))
        ratio = "" if torch_seconds is None or name.startswith("PyTorch") else f"{torch_seconds / seconds:.2f}"
        lines.append(f"| {model} | {name} | {len(losses)} | {spans} | {bool(np.isfinite(array).all())} | "
                     f"{seconds * 1e3:.2f} | {ratio} |")
    return lines


def failures(model, rows):
    found = []
    for name, (losses, why) in rows.items():
        if losses is None:
            if why.startswith("raised"):
                found.append(f"{model} {name}: {why}")
            continue
        array = np.array(losses, np.float64)
        if not np.isfinite(array).all():
            found.append(f"{model} {name}: a loss is not finite")
        elif model == "GPT" and not array[-WINDOW:, 0].mean() < 0.8 * array[:WINDOW, 0].mean():
            found.append(f"{model} {name}: the loss did not fall")
    return found


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description="GPT, GAN and DCGAN training on pyai's GPU backends beside PyTorch")
    parser.add_argument("--steps", type=int, default=300, help="training steps a run (default 300)")
    parser.add_argument("--mnist", help="folder of MNIST's IDX files for the GANs (default: random images)")
    parser.add_argument("--backends", nargs="+", default=["cuda", "numba-cuda"], choices=dispatch.BACKENDS)
    parser.add_argument("--out", help="also write the table to this markdown file")
    arguments = parser.parse_args(argv)
    if arguments.steps < WARMUP + WINDOW:
        parser.error(f"--steps: at least {WARMUP + WINDOW}, got {arguments.steps}")
    return arguments


def main(argv=None):
    arguments = parse_arguments(argv)
    try:   # before any training: a wrong --mnist ends the run now, not after the GPT's steps
        images = mnist_images(arguments.mnist)
    except (OSError, ValueError) as error:
        raise SystemExit(f"gpu_training.py: --mnist: {error}")
    usable = {row["name"]: row for row in pyai.backends()}
    unusable = [f"{name}: {usable[name]['reason']}" for name in arguments.backends if not usable[name]["usable"]]
    if unusable:
        raise SystemExit("backends not usable here:\n  " + "\n  ".join(unusable))
    try:
        import torch
        torch = torch if torch.cuda.is_available() else None
    except ImportError:
        torch = None
    lines = ["| model | runner | steps | loss, first 10 -> last 10 steps | all finite | ms a step | "
             "PyTorch / pyai |", "|---|---|---:|---|---|---:|---:|"]
    found = []
    for model, loss_names, runs in [
            ("GPT", ["cross-entropy"], lambda: gpt_runs(arguments.steps, arguments.backends, torch)),
            ("GAN", ["D", "G"], lambda: gan_runs(GAN, arguments.steps, arguments.backends, torch, images)),
            ("DCGAN", ["D", "G"], lambda: gan_runs(DCGAN, arguments.steps, arguments.backends, torch, images))]:
        rows = runs()
        lines += table_lines(model, rows, loss_names)
        found += failures(model, rows)
        print("\n".join(lines[-len(rows):]), flush=True)
    header = (f"GPT, GAN and DCGAN training, {arguments.steps} steps a run; the GANs' data: "
              f"{arguments.mnist or 'random images'}; device: "
              f"{torch.cuda.get_device_name() if torch is not None else 'unknown (no PyTorch with CUDA)'}\n\n")
    report = header + "\n".join(lines) + "\n" + "".join(f"\nFAILED: {line}" for line in found)
    print(report)
    if arguments.out:
        with open(arguments.out, "w") as file:
            file.write(report + "\n")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
