"""matmul and the fused linear, pyai beside numpy (OpenBLAS) and PyTorch, each library alone in a
fresh process: no other library's thread pool (OpenMP, TBB, TensorFlow's) shares the cores with
it, as in a program that uses one of them. Best of N after a warm-up; GFLOP/s and the ratio to
the fastest peer, also as a fraction of the FMA peak measured in a process of its own.
The libraries' processes take turns for `--rounds` rounds (pyai, numpy, torch, pyai, ...) and each
shape keeps a library's best: a shared host's slow spell then falls on every library, not on the
one whose turn it was (one round a run: 256^3 from pyai 62 to 47 GFLOP/s between two runs, numpy
72 to 69; AMD EPYC Zen 3).

    python benchmarks/matmul_processes.py [--rounds 3] [--out benchmarks/results]
"""

import argparse
import json
import subprocess
import sys

SHAPES = [(256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048),
          (4096, 4096, 4096), (64, 784, 1024), (64, 1024, 784), (128, 1024, 1024),
          (2048, 128, 384), (2048, 512, 128)]   # the last two: the GPT step's qkv and second MLP products
LIBRARIES = ("pyai", "numpy", "torch")

CHILD = """
import json, sys
import numpy as np
from pyai.bench.timing import best_times
library, shapes = sys.argv[1], json.loads(sys.argv[2])
if library == "torch":
    import numba, torch
    torch.set_num_threads(numba.get_num_threads())
    product = lambda a, b: torch.from_numpy(a) @ torch.from_numpy(b)
elif library == "numpy":
    product = lambda a, b: a @ b
else:
    import pyai
    product = pyai.ops.matmul
rng = np.random.default_rng(0)
rates = []
for m, k, n in shapes:
    a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    seconds = best_times({library: lambda: product(a, b)}, repeats=10 if m * n * k < 2**33 else 3)[library]
    rates.append(2 * m * n * k / seconds / 1e9)
print(json.dumps(rates))
"""

PEAK = """
import json, numba
from pyai.bench.peaks import fma_peak
print(json.dumps(fma_peak(numba.get_num_threads())))
"""


def in_fresh_process(code, *arguments):
    result = subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True)
    if result.returncode != 0:
        return None, result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"
    return json.loads(result.stdout.strip().splitlines()[-1]), None


def best_rates(rounds):
    """({library: best GFLOP/s of each shape over `rounds` processes, or None}, [why one is left
    out]), the libraries' processes taking turns."""
    rates, errors = dict.fromkeys(LIBRARIES), {}
    for _ in range(rounds):
        for library in LIBRARIES:
            if library in errors:
                continue
            measured, error = in_fresh_process(CHILD, library, json.dumps(SHAPES))
            if error:
                errors[library], rates[library] = error, None
            else:
                rates[library] = [max(pair) for pair in zip(rates[library] or measured, measured)]
    return rates, [f"- {library} left out: {error}" for library, error in errors.items()]


def table(rounds):
    from pyai.bench.report import cpu_model, isa
    peak, _ = in_fresh_process(PEAK)
    rates, lines = best_rates(rounds)
    present = [library for library in LIBRARIES if rates[library]]
    lines[:0] = [f"# matmul, each library in a fresh process: {cpu_model()}", "",
                 f"- ISA as pyai uses it: {isa()}; FMA peak {peak:.0f} GFLOP/s on all threads (measured)",
                 f"- each library's best of {rounds} fresh processes, taking turns", "",
                 "| m x k x n | " + " | ".join(f"{library} GFLOP/s" for library in present) +
                 " | pyai / fastest peer |", "|---" * (len(present) + 2) + "|"]
    for index, (m, k, n) in enumerate(SHAPES):
        cells = [f"{rates[library][index]:.0f} ({rates[library][index] / peak:.0%})" for library in present]
        peers = [rates[library][index] for library in present if library != "pyai"]
        ratio = f"{rates['pyai'][index] / max(peers):.2f}x" if peers and "pyai" in present else "-"
        lines.append(f"| {m}x{k}x{n} | " + " | ".join(cells) + f" | {ratio} |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="processes a library, taking turns (default 3)")
    parser.add_argument("--out", help="also write the table to OUT/matmul-processes-<date>.md")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds: expected a positive count, got {args.rounds}")
    lines = table(args.rounds)
    print("\n".join(lines))
    if args.out:
        from pyai.bench.report import results_path
        path = results_path(args.out, "matmul-processes")
        path.write_text("\n".join(lines) + "\n")
        print(f"written to {path}")


if __name__ == "__main__":
    main()
