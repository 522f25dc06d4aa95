"""Data-parallel scaling of one GPT training step: 1 and 2 processes under mpiexec, one thread each.

    python benchmarks/data_parallel.py          # launches mpiexec -n 1 and -n 2 itself; one table

The model and global batch are benchmarks/test_gpt.py's (4 blocks, 128 channels, context 128,
16 windows: 2,048 tokens a step), so N processes each take 16 / N windows. A step is what
`pyai.training.train_gpt` does: forward and backward on the process's rows, the allreduce of the
flat gradient buffer (`pyai.distributed`), one fused Adam pass. Efficiency is the speed-up over
one process divided by the process count. Beside the measured steps, on paper: the bytes each
process sends in a ring allreduce of that gradient, 2 (N - 1) / N x 4 bytes per parameter, and
how long that takes at INTERCONNECTS' bandwidths, against the compute time of a step spread over
N machines. A shared machine is noisy: compare only within a run, and note the load.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np

SIZES = {"vocab_size": 103, "block_size": 128, "layers": 4, "heads": 4, "channels": 128}
BATCH = 16
STEPS, WARMUPS = 8, 2
PROCESS_COUNTS = (1, 2)
INTERCONNECTS = {"25 GbE (3.1 GB/s)": 3.125e9, "100 Gb/s InfiniBand EDR (12.5 GB/s)": 12.5e9,
                 "NVLink 4 (450 GB/s a direction)": 450e9}
PAPER_PROCESSES = (2, 4, 16)   # the global batch of 16 windows splits at most 16 ways


def measure():
    """In each process under mpiexec: the median step time and the allreduce's share of it."""
    from pyai import distributed
    from pyai.models import GPT
    from pyai.optim import Adam

    world = distributed.world()
    model, optimizer = GPT(**SIZES, seed=0), Adam(1e-3)
    rng = np.random.default_rng(0)
    rows = world.shard(BATCH)
    scratch = np.ones(model.flat.size, np.float32)
    steps, allreduces = [], []
    for step in range(WARMUPS + STEPS):
        ids = rng.integers(0, SIZES["vocab_size"], (BATCH, SIZES["block_size"]))
        targets = rng.integers(0, SIZES["vocab_size"], (BATCH, SIZES["block_size"]))
        barrier(world)
        start = time.perf_counter()
        world.mean([model.train_step(ids[rows], targets[rows])])
        optimizer.step(model)   # the allreduce of the gradients, then Adam
        stepped = time.perf_counter()
        barrier(world)
        allreduce_start = time.perf_counter()
        world.average(scratch)   # the same allreduce alone, timed apart from the step
        if step >= WARMUPS:
            steps.append(stepped - start)
            allreduces.append(time.perf_counter() - allreduce_start)
    if world.is_root():
        print(json.dumps({"processes": world.size, "step_s": float(np.median(steps)),
                          "allreduce_s": float(np.median(allreduces)), "parameters": model.flat.size}))


def barrier(world):
    if world.comm is not None:
        world.comm.Barrier()


def launch(processes):
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    output = subprocess.run([mpiexec, "-n", str(processes), sys.executable, __file__, "--measure"],
                            env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    from pyai import bench

    results = [launch(processes) for processes in PROCESS_COUNTS]
    one = results[0]["step_s"]
    tokens = BATCH * SIZES["block_size"]
    gradient_bytes = 4 * results[0]["parameters"]
    print(f"GPT training step {SIZES}, global batch {BATCH} ({tokens} tokens), one thread per process, "
          f"median of {STEPS}; {bench.cpu_model()}\n")
    for line in bench.markdown_header(["processes", "ms/step", "tokens/s", "speed-up", "efficiency",
                                       "allreduce ms", "bytes allreduced per process per step"]):
        print(line)
    for result in results:
        n = result["processes"]
        ring_bytes = 2 * (n - 1) / n * gradient_bytes
        print(bench.markdown_row([n, f"{result['step_s'] * 1e3:.1f}", f"{tokens / result['step_s']:.0f}",
                                  f"{one / result['step_s']:.2f}x", f"{one / result['step_s'] / n:.0%}",
                                  f"{result['allreduce_s'] * 1e3:.2f}", f"{ring_bytes / 1e6:.2f} MB"]))
    print(f"\nOn paper, N machines (the gradient: {results[0]['parameters']:,} float32, "
          f"{gradient_bytes / 1e6:.2f} MB; compute = one process's step / N, {one * 1e3:.0f} ms / N here):\n")
    for line in bench.markdown_header(["interconnect", *[f"N={n}: allreduce / compute ms" for n in PAPER_PROCESSES]]):
        print(line)
    for name, bandwidth in INTERCONNECTS.items():
        cells = [f"{2 * (n - 1) / n * gradient_bytes / bandwidth * 1e3:.2f} / {one / n * 1e3:.0f}"
                 for n in PAPER_PROCESSES]
        print(bench.markdown_row([name, *cells]))


if __name__ == "__main__":
    measure() if "--measure" in sys.argv else main()
