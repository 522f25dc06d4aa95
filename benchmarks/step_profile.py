"""Where a model's training step spends its time, kernel by kernel: every call the step makes
through pyai.dispatch.implementation (the layers' and pyai.ops's way to a backend's kernel),
timed inside the step and summed by op and array shapes; what is left of the step is Python,
numpy and the models' own bookkeeping between the kernels.

With --again K, further steps make each call K times more at once, on the same arrays, and its
best time is shown beside its time in the step: the same kernel, now with its operands and
outputs in cache. The gap is what the step's data movement costs it (operands and outputs
arriving from L3 or memory after the op before), not the kernel's own loops. Adam's steps are not
repeated; a kernel that adds into an array it is handed adds again, so those steps' numbers are
for their timing only, not for training.

    python benchmarks/step_profile.py gpt|gan|dcgan [--steps N] [--again K]

The models and sizes are those of benchmarks/test_gpt.py, test_gan.py and test_dcgan.py. A
shared machine is noisy: compare only within a run.
"""

import argparse
import collections
import time

import numpy as np

from pyai import dispatch, ops
from pyai.bench.timing import call_seconds
from pyai.models import DCGAN, GAN, GPT
from pyai.optim import Adam

GPT_SIZES = {"vocab_size": 103, "block_size": 128, "layers": 4, "heads": 4, "channels": 128}
IN_PLACE = ("adam_update", "dense_adam_update")   # not repeated by --again


def gpt_step(rng):
    model, optimizer = GPT(**GPT_SIZES, seed=0), Adam(1e-3)
    ids, targets = (rng.integers(0, GPT_SIZES["vocab_size"], (16, GPT_SIZES["block_size"])) for _ in range(2))
    return lambda: (model.train_step(ids, targets), optimizer.step(model))


def gan_step(rng, model=GAN):
    gan = model(seed=0)
    real = rng.uniform(-1, 1, (64, gan.pixels)).astype(np.float32)
    noise, generator_noise = (rng.standard_normal((64, gan.noise_dim), dtype=np.float32) for _ in range(2))
    return lambda: gan.train_step(real, noise, generator_noise)


STEPS = {"gpt": gpt_step, "gan": gan_step, "dcgan": lambda rng: gan_step(rng, DCGAN)}


def shapes(arguments):
    return " ".join("x".join(map(str, a.shape)) for a in arguments if isinstance(a, np.ndarray))


class Profiler:
    """Wraps every kernel that dispatch.implementation hands out in a timer; `recording` turns it
    on: seconds and calls by (op, shapes), summed; with `again` set, the best of that many
    repeats of each call instead. In the step, time spent in a kernel called from inside another
    is the inner one's only; a repeat's time includes the kernels it calls."""

    def __init__(self):
        self.again = 0
        self.recording = False
        self.seconds = collections.Counter()   # this step's
        self.calls = collections.Counter()
        self.steps = []   # (seconds, again) for each step recorded: Counters by (op, shapes)
        self.inner = []   # seconds of kernels called inside the one running, a level each
        self.original = dispatch.implementation

    def implementation(self, op, backend=None):
        kernel = self.original(op, backend)
        return lambda *args, **kwargs: self.call(op, kernel, args, kwargs)

    def call(self, op, kernel, args, kwargs):
        if not self.recording:
            return kernel(*args, **kwargs)
        self.inner.append(0.0)
        start = time.perf_counter()
        result = kernel(*args, **kwargs)
        seconds = time.perf_counter() - start
        inner = self.inner.pop()
        if self.inner:
            self.inner[-1] += seconds
        key = (op, shapes(args))
        if not self.again:
            self.seconds[key] += seconds - inner
            self.calls[key] += 1
        elif op not in IN_PLACE:   # the repeats not recorded: a kernel called inside runs in them once
            self.recording = False
            self.seconds[key] += min(call_seconds(lambda: kernel(*args, **kwargs)) for _ in range(self.again))
            self.recording = True
        return result

    def end_step(self):
        self.steps.append((self.seconds, self.again))
        self.seconds = collections.Counter()

    def median(self, again):
        """{(op, shapes): median seconds a step} over the steps recorded with or without again,
        and the median of their totals."""
        steps = [seconds for seconds, repeats in self.steps if bool(repeats) == again]
        keys = set().union(*steps) if steps else set()
        return ({key: float(np.median([step[key] for step in steps])) for key in keys},
                float(np.median([sum(step.values()) for step in steps])) if steps else 0.0)

    def __enter__(self):
        dispatch.implementation = ops.implementation = self.implementation
        return self

    def __exit__(self, *exc):
        dispatch.implementation = ops.implementation = self.original


def profile(step, steps, again, warmups=3):
    """(profiler, best and median seconds of a step): `steps` steps timed whole, `steps` with
    their kernels timed, then, with `again`, `steps` with every kernel call repeated."""
    with Profiler() as profiler:
        for _ in range(warmups):
            step()
        whole = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            whole.append(time.perf_counter() - start)
        profiler.recording = True
        for repeats in [0] * steps + [again] * (steps if again else 0):
            profiler.again = repeats
            step()
            profiler.end_step()
    return profiler, min(whole), float(np.median(whole))


def report(profiler, steps, best, median):
    """The table: ops by their median time a step, most first."""
    in_step, kernels = profiler.median(False)
    again = profiler.median(True)[0]
    print(f"step: best {best * 1e3:.2f} ms, median {median * 1e3:.2f}; its kernels {kernels * 1e3:.2f} ms (median of "
          f"{steps} more steps), the rest {(median - kernels) * 1e3:.2f}\n")
    print("| op | arrays | calls a step | ms a step | of the step |" + (" ms again | step / again |" if again else ""))
    print("|---|---|---|---|---|" + ("---|---|" if again else ""))
    for key, seconds in sorted(in_step.items(), key=lambda item: -item[1]):
        row = f"| {key[0]} | {key[1]} | {profiler.calls[key] // steps} | {seconds * 1e3:.3f} | {seconds / median:.1%} |"
        if again:
            row += f" {again[key] * 1e3:.3f} | {seconds / again[key]:.2f} |" if again.get(key) else " - | - |"
        print(row)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=sorted(STEPS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--again", type=int, default=0, metavar="K")
    args = parser.parse_args()
    if args.steps < 1 or args.again < 0:
        parser.error("--steps must be at least 1 and --again at least 0")
    step = STEPS[args.model](np.random.default_rng(0))
    profiler, best, median = profile(step, args.steps, args.again)
    report(profiler, args.steps, best, median)


if __name__ == "__main__":
    main()
