"""`pyai bench`'s report: a header naming the machine and its measured limits, then one Markdown
table with a row per case: every peer's rate as a fraction of the machine's limit, and pyai's
speed over the best peer's. `--out DIR` writes the same text to DIR/cpu-<date>.md.
"""

import dataclasses
import datetime
import json
import os
import pathlib
import re

import numba
import numpy as np

import pyai
from pyai.bench.cases import cases
from pyai.bench.peaks import CpuLimits
from pyai.bench.peers import installed, missing
from pyai.bench.timing import best_times
from pyai.info import cpu_cores, cpu_model, isa

PEERS = ("numpy", "tensorflow", "torch")


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


def case_record(case, seconds, limits):
    """One case's results for `pyai bench --json` and `--plot`: every runner's time and rate."""
    rates = {name: case.work / time_s / 1e9 for name, time_s in seconds.items()}
    return {"case": case.name, "unit": case.unit, "work": case.work, "seconds": dict(seconds),
            "rates": rates, "limit": limits.limit(case.unit), "target": case.target}


def table_lines(quick, repeats, peers, limits, records=None):
    peer_columns = [name for name in PEERS if name == "numpy" or peers.get(name)]
    method = (f"best of {repeats} calls after a warm-up, peers interleaved; a rate in brackets is its "
              f"fraction of the measured limit (FMA peak on all threads for GFLOP/s, copy bandwidth "
              f"for GB/s); pyai / best peer is pyai's rate over the fastest peer's (higher is better). "
              f"A shared machine is noisy: compare only within one run.")
    yield from header("pyai bench", peers, limits, method)
    yield from markdown_header(["case", "unit", "pyai", *peer_columns, "floor", "pyai / best peer",
                                "notes"])
    for case in cases(quick=quick, peers=peers):
        seconds = best_times(case.runners, repeats)
        if records is not None:
            records.append(case_record(case, seconds, limits))
        yield case_row(case, seconds, limits, peer_columns)
    yield ""
    yield (f"Limits measured again after the cases: {CpuLimits.measure(quick=quick).describe()}. "
           f"Far from the first measurement, they say the machine was busy and the fractions are rough.")


def run(quick=False, repeats=None, out=None, records=None):
    """Time every case and print the table; with `out`, also write it to out/cpu-<date>.md; with
    `records` (a list), append each case's `case_record` and then {"limits": ...}.
    Returns the path written, or None."""
    repeats = repeats or (3 if quick else 10)
    peers = installed()
    limits = CpuLimits.measure(quick=quick)
    path = emit(table_lines(quick, repeats, peers, limits, records), out, "cpu-quick" if quick else "cpu")
    if records is not None:
        records.append({"limits": dataclasses.asdict(limits)})
    return path


def write_json(path, kind, records):
    """`pyai bench --json`: the records of a run ("cases" or "attention") and the measured
    limits, beside the machine as `pyai info` describes it, written atomically."""
    from pyai import info
    limits = next((record["limits"] for record in records if "limits" in record), None)
    document = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "machine": info.collect(), "limits": limits,
                "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                kind: [record for record in records if "limits" not in record]}
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as file:
        json.dump(document, file, indent=2)
    os.replace(temporary, path)
