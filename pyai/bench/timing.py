"""How pyai's benchmarks time a call: best of N after a warm-up, peers interleaved (CPU); CUDA
events or synchronized batches (GPU).

A machine here is shared and noisy. The best time is the one least disturbed by other processes,
and interleaving the peers (pyai, numpy, tensorflow, torch, pyai, numpy, ...) spreads a slow
spell over all of them instead of one, so a ratio measured in one run means something. On its
turn a peer first pauses, so that the previous library's worker threads stop spinning before it
needs the cores, then makes untimed calls for WARM_S (one at least) that wake its own threads,
then the timed one: each peer is timed as it runs in a loop of calls, not as it wakes from idle.
One untimed call is not enough where a worker that sleeps between calls (TBB's, pyai's) wakes
late after the pause, so that the caller's thread does all the work: on a VM its core took ~10 ms
of calls to come back (AMD EPYC Zen 4, 2 threads, median of 8 runs of calls after 0.25 s idle,
us: pyai 512^3 3057 2694 2702 2674 2010 1905 1458 1407; OpenBLAS, whose threads spin after a
call, 1623 1379 1394 1365 ..., from the second call on). The pause outlasts
the longest spin measured: OpenBLAS's threads (numpy's products) spin ~0.14 s after a call (a
512^3 product on an AMD EPYC Zen 1, 2 threads: 137 ms of CPU in the second after it, none after
0.2 s; PyTorch's 12 ms, TensorFlow's none), and a TBB worker of pyai's that wakes meanwhile waits
for that core: a 64 x 1024 x 784 product one call after numpy's ran on one core, 3.8 ms, not 1.9.
"""

import math
import statistics
import time

PAUSE_S = 0.25
WARM_S = 0.02


def call_seconds(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def best_times(runners, repeats, warmups=1, pause_s=PAUSE_S, warm_s=WARM_S):
    """{name: best seconds of `repeats` calls} for zero-argument `runners`, after `warmups`
    untimed calls of each (Numba compiles, TensorFlow traces, the inputs come into memory);
    the timed calls go round the runners in turn, each after a pause and warm_s seconds of
    untimed calls (one at least)."""
    for run in runners.values():
        for _ in range(warmups):
            run()
    best = {name: math.inf for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            if pause_s:
                time.sleep(pause_s)
                start = time.perf_counter()
                run()
                while time.perf_counter() - start < warm_s:
                    run()
            best[name] = min(best[name], call_seconds(run))
    return best


def best_time(function, repeats, warmups=1, min_seconds=0.0):
    """Best seconds of `repeats` calls of one function after `warmups` untimed ones, and of as
    many more as make up `min_seconds` from the first."""
    start = time.perf_counter()
    seconds = best_times({"": function}, repeats, warmups, pause_s=0.0)[""]
    while time.perf_counter() - start < min_seconds:
        seconds = min(seconds, call_seconds(function))
    return seconds


def measure(case, repeats):
    """{runner: rate in case.unit} for every runner of a `pyai.bench.Case`: work / best time."""
    return {name: case.work / time_s / 1e9 for name, time_s in best_times(case.runners, repeats).items()}


def cuda_event_ms(function, warmup=3, repeats=10):
    """Median milliseconds of `repeats` runs, each between two CUDA events on the default
    stream, after `warmup` runs. Needs torch with CUDA."""
    import torch

    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def batched_seconds(run, synchronize, batch_s=0.05, batches=7):
    """Seconds per call on a GPU: the median over `batches` batches of back-to-back calls, each
    batch about `batch_s` long so that launch jitter averages out, between synchronizations."""
    run()
    synchronize()
    start = time.perf_counter()
    run()
    synchronize()
    calls = max(1, int(batch_s / max(time.perf_counter() - start, 1e-6)))
    times = []
    for _ in range(batches):
        synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            run()
        synchronize()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)
