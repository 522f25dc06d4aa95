"""`pyai bench`'s report: a header naming the machine and its measured limits, then one Markdown
table with a row per case: every peer's rate as a fraction of the machine's limit, and pyai's
speed over the best peer's. `--out DIR` writes the same text to DIR/cpu-<date>.md.
"""

import datetime
import os
import pathlib
import platform
import re

import llvmlite.binding
import numba
import numpy as np

import pyai
from pyai.bench.cases import cases
from pyai.bench.peaks import CpuLimits
from pyai.bench.peers import installed, missing
from pyai.bench.timing import best_times
from pyai.kernels.numba_cpu.simd import WIDTH

PEERS = ("numpy", "tensorflow", "torch")
ISA_FLAGS = ("avx512f", "avx2", "fma")


def cpuinfo_fields(name):
    try:
        with open("/proc/cpuinfo") as lines:
            return [line.split(":", 1)[1].strip() for line in lines
                    if line.split(":", 1)[0].strip() == name]
    except OSError:
        return []


def cpu_model():
    """The CPU's marketing name: /proc/cpuinfo's "model name", else what platform knows."""
    return next(iter(cpuinfo_fields("model name")), None) or platform.processor() or "unknown CPU"


def cpu_cores():
    """(physical cores, hardware threads, threads this process may use)."""
    threads = os.cpu_count() or 1
    pairs = set(zip(cpuinfo_fields("physical id"), cpuinfo_fields("core id")))
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else threads
    return len(pairs) or threads, threads, usable


def isa():
    """The vector ISA as pyai's kernels use it: the width of simd.py's vectors and the flags."""
    features = numba.config.CPU_FEATURES or llvmlite.binding.get_host_cpu_features().flatten()
    flags = [flag for flag in ISA_FLAGS if f"+{flag}" in features.split(",")]
    return f"{WIDTH}-float ({32 * WIDTH}-bit) vectors; {', '.join(flags) or 'no avx2 or avx512f'}"


def header(title, peers, limits, method):
    """The report's opening lines, Markdown: the machine, the software, the limits, the method."""
    cores, threads, usable = cpu_cores()
    versions = [f"pyai {pyai.__version__} (backend {pyai.get_backend()})", f"numpy {np.__version__}"]
    versions += [f"{name} {module.__version__}" for name, module in peers.items() if module]
    load = f"; load average {os.getloadavg()[0]:.2f} at the start" if hasattr(os, "getloadavg") else ""
    lines = [f"# {title}: {cpu_model()}, {datetime.date.today().isoformat()}", "",
             f"- CPU: {cpu_model()}; ISA as pyai uses it: {isa()}",
             f"- cores: {cores} cores, {threads} hardware threads, {usable} usable here; "
             f"{numba.get_num_threads()} threads for Numba ({numba.threading_layer()} layer) and "
             f"torch{load}",
             f"- date: {datetime.date.today().isoformat()}",
             f"- software: {', '.join(versions)}",
             f"- limits, measured in this run: {limits.describe()}",
             f"- method: {method}"]
    lines += [f"- {line}" for line in missing(peers).values()]
    return lines + [""]


def markdown_row(cells):
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def markdown_header(columns):
    return [markdown_row(columns), markdown_row(["---"] * len(columns))]


def rate_cell(rate, fraction):
    return f"{rate:.1f} ({fraction:.0%})"


def case_row(case, seconds, limits, peer_columns):
    """One table row: every runner's rate (and fraction of the limit), pyai over the best peer."""
    rates = {name: case.work / time_s / 1e9 for name, time_s in seconds.items()}
    floors = [name for name in rates if "floor" in name]
    peers = {name: rate for name, rate in rates.items() if name in PEERS}
    best = max(peers, key=peers.get)
    cells = [case.name, case.unit]
    cells += [rate_cell(rates[name], limits.fraction(rates[name], case.unit)) if name in rates else "-"
              for name in ("pyai", *peer_columns)]
    cells.append(", ".join(rate_cell(rates[name], limits.fraction(rates[name], case.unit))
                           for name in floors) or "-")
    cells.append(f"{rates['pyai'] / peers[best]:.2f}x {best}")
    notes = [f"floor: {name.removesuffix(' (floor)')}, pyai time / floor time "
             f"{rates[name] / rates['pyai']:.2f}" for name in floors]
    cells.append("; ".join(notes + ([f"target: {case.target}"] if case.target else [])))
    return markdown_row(cells)


def results_path(directory, stem):
    """DIR/<stem>-<date>.md, the folder made if it is missing."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", stem).strip("-")
    return directory / f"{slug}-{datetime.date.today().isoformat()}.md"


def emit(lines, out, stem):
    """Print the lines as they come; then, with `out`, write them all to results_path(out, stem)."""
    written = []
    for line in lines:
        print(line, flush=True)
        written.append(line)
    if out is not None:
        path = results_path(out, stem)
        path.write_text("\n".join(written) + "\n")
        print(f"wrote {path}")
        return path
    return None


def table_lines(quick, repeats, peers, limits):
    peer_columns = [name for name in PEERS if name == "numpy" or peers.get(name)]
    method = (f"best of {repeats} calls after a warm-up, peers interleaved; a rate in brackets is its "
              f"fraction of the measured limit (FMA peak on all threads for GFLOP/s, copy bandwidth "
              f"for GB/s); pyai / best peer is pyai's rate over the fastest peer's (higher is better). "
              f"A shared machine is noisy: compare only within one run.")
    yield from header("pyai bench", peers, limits, method)
    yield from markdown_header(["case", "unit", "pyai", *peer_columns, "floor", "pyai / best peer",
                                "notes"])
    for case in cases(quick=quick, peers=peers):
        yield case_row(case, best_times(case.runners, repeats), limits, peer_columns)
    yield ""
    yield (f"Limits measured again after the cases: {CpuLimits.measure(quick=quick).describe()}. "
           f"Far from the first measurement, they say the machine was busy and the fractions are rough.")


def run(quick=False, repeats=None, out=None):
    """Time every case and print the table; with `out`, also write it to out/cpu-<date>.md.
    Returns the path written, or None."""
    repeats = repeats or (3 if quick else 10)
    peers = installed()
    limits = CpuLimits.measure(quick=quick)
    return emit(table_lines(quick, repeats, peers, limits), out, "cpu-quick" if quick else "cpu")
