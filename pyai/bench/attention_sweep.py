"""`pyai bench --attention`: attention at B=1, H=8, D=64 over T, every peer's time, rate (and its
fraction of the measured FMA peak) and the peak memory one call adds, as one Markdown table."""

import dataclasses
import itertools
import subprocess
import sys

import numpy as np

from pyai.bench.cases import attention_case
from pyai.bench.peaks import CpuLimits
from pyai.bench.peers import installed, load
from pyai.bench.report import emit, header, markdown_header, markdown_row, rate_cell
from pyai.bench.timing import best_times


def resident_peak_bytes(function):
    """The most resident memory a call adds to the process, whoever allocates it (numpy, Numba's
    scratch, TensorFlow's allocator): Linux's high-water mark VmHWM, reset before the call, less
    VmRSS before it. None where /proc does not offer this."""
    def status(field):
        with open("/proc/self/status") as lines:
            return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field))
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")      # resets VmHWM to the current VmRSS
        before = status("VmRSS:")
    except OSError:
        return None
    function()
    return status("VmHWM:") - before


def first_call_peak_bytes(peer, n, causal, backward):
    """`resident_peak_bytes` of one attention call at T = n in this process, after a call at
    T = 64 has compiled (pyai) or traced (TensorFlow) what it needs."""
    rng = np.random.default_rng(0)
    peers = {peer: load(peer)} if peer in ("tensorflow", "torch") else {}
    attention_case(64, causal, backward, rng, peers).runners[peer]()
    return resident_peak_bytes(attention_case(n, causal, backward, rng, peers).runners[peer])


def fresh_process_peak_bytes(peer, n, causal, backward):
    """first_call_peak_bytes in a new Python process (None where it cannot be measured)."""
    code = ("from pyai import bench; "
            f"print(bench.first_call_peak_bytes({peer!r}, {n}, {causal}, {backward}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    last_line = (result.stdout.strip().splitlines() or ["None"])[-1]
    return None if result.returncode or last_line == "None" else int(last_line)


def attention_rows(sizes, repeats, peers, limits, records=None):
    """Markdown rows: attention at B=1, H=8, D=64 for every T in sizes, forward and forward +
    backward, causal and not; each peer's best time, GFLOP/s (fraction of the FMA peak) and peak
    resident memory, and pyai's speed over the fastest peer's.

    Memory is `fresh_process_peak_bytes`: the peak a call adds, measured in a process of its own
    so that no allocator cache hides it. A T x T float32 score matrix per head, 8 heads, is
    128 MiB at T = 2048 and 512 MiB at 4096; the inputs and output are 1 MiB each at T = 512."""
    rng = np.random.default_rng(0)
    names = ["pyai", *(name for name in ("tensorflow", "torch") if peers.get(name)), "numpy"]
    yield from markdown_header(["pass", "T", "causal",
                                *(f"{name} {column}" for name in names
                                  for column in ("ms", "GFLOP/s", "MiB")), "pyai / best peer"])
    for backward in (False, True):
        for causal in (False, True):
            for n in sizes:
                case = attention_case(n, causal, backward, rng, peers)
                peaks = {name: fresh_process_peak_bytes(name, n, causal, backward) for name in names}
                times = best_times(case.runners, repeats if n < 2048 else max(2, repeats // 2))
                cells = []
                for name in names:
                    rate = case.work / times[name] / 1e9
                    cells += [f"{times[name] * 1e3:.1f}", rate_cell(rate, limits.fraction(rate, "GFLOP/s")),
                              "?" if peaks[name] is None else f"{peaks[name] / 2**20:.0f}"]
                best = min((name for name in names if name != "pyai"), key=times.get)
                if records is not None:
                    records.append({"pass": "fwd+bwd" if backward else "fwd", "T": n, "causal": causal,
                                    "work": case.work, "seconds": dict(times), "peak_bytes": peaks})
                yield markdown_row([("fwd+bwd" if backward else "fwd"), n, "yes" if causal else "no",
                                    *cells, f"{times[best] / times['pyai']:.2f}x {best}"])


def attention_table(sizes=(256, 512, 1024, 2048, 4096), repeats=5, out=None, quick=False, records=None):
    """Print the sweep with its header; with `out`, also write out/attention-cpu-<date>.md; with
    `records` (a list), append each row's measurements and then {"limits": ...}."""
    peers = installed()
    limits = CpuLimits.measure(quick=quick)
    method = (f"B=1, H=8, D=64, float32; best of {repeats} calls (T < 2048, else {max(2, repeats // 2)}) "
              "after a warm-up, peers interleaved; GFLOP/s count 4 B H T^2 D forward, half with the "
              "causal mask, 3.5 times that for forward + backward, and in brackets their fraction "
              "of the measured FMA peak; MiB: the peak resident memory one call adds, measured in "
              "a fresh process")
    lines = itertools.chain(header("pyai bench --attention", peers, limits, method),
                            attention_rows(sizes, repeats, peers, limits, records))
    path = emit(lines, out, "attention-cpu-quick" if quick else "attention-cpu")
    if records is not None:
        records.append({"limits": dataclasses.asdict(limits)})
    return path
