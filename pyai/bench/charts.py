"""`pyai bench --plot DIR`: the run's results as PNG charts (matplotlib, Agg), beside the table.

    cases (pyai bench):
      ratios.png            pyai's rate over the best peer's, one bar per case (1 = as fast)
      gflops.png            every runner's GFLOP/s on the compute-bound cases, against the FMA
                            peak measured in the same run
    attention (pyai bench --attention):
      attention-time.png    each runner's time against T, one panel per pass and mask
      attention-memory.png  the peak memory one call adds, against T
      attention-gflops.png  GFLOP/s against T, against the measured FMA peak
"""

import pathlib

import numpy as np
from matplotlib.ticker import FormatStrFormatter, NullFormatter

from pyai.images import new_figure, save_figure

PEERS = ("numpy", "tensorflow", "torch")
WIDE = (960, 480)


def plot(directory, kind, records):
    """Draw the charts of a run's `records` ("cases" or "attention") in `directory` (made if
    missing); returns the paths written."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    limits = next((record["limits"] for record in records if "limits" in record), None)
    rows = [record for record in records if "limits" not in record]
    if not rows:
        raise ValueError("--plot: the run has no results to draw")
    charts = CASE_CHARTS if kind == "cases" else ATTENTION_CHARTS
    written = []
    for name, draw in charts.items():
        figure = draw(rows, limits)
        if figure is not None:
            save_figure(figure, directory / name)
            written.append(directory / name)
    return written


def rates(record):
    return {name: record["work"] / seconds / 1e9 for name, seconds in record["seconds"].items()}


def ratio_bars(rows, limits):
    """pyai's rate over the best peer's rate, per case."""
    names, ratios, peers = [], [], []
    for row in rows:
        rate = rates(row)
        best = max((name for name in rate if name in PEERS), key=rate.get)
        names.append(row["case"])
        ratios.append(rate["pyai"] / rate[best])
        peers.append(best)
    figure = new_figure((WIDE[0], max(300, 160 + 34 * len(rows))))
    axes = figure.add_subplot()
    positions = np.arange(len(rows))[::-1]
    bars = axes.barh(positions, ratios, color=["tab:green" if r >= 1 else "tab:red" for r in ratios])
    axes.bar_label(bars, [f"{r:.2f}x {peer}" for r, peer in zip(ratios, peers)], padding=3, fontsize=8)
    axes.axvline(1.0, color="black", linewidth=1)
    axes.set_yticks(positions, names, fontsize=8)
    axes.set_xlabel("pyai rate / best peer's rate (higher is better)")
    axes.set_title("pyai over the fastest peer, per case (one run; a shared machine is noisy)")
    axes.set_xlim(0, max(ratios) * 1.25)
    return figure


def gflops_bars(rows, limits):
    """Every runner's GFLOP/s on the compute-bound cases, and the measured FMA peak."""
    rows = [row for row in rows if row["unit"] == "GFLOP/s"]
    if not rows:
        return None
    runners = list(dict.fromkeys(name for row in rows for name in row["seconds"]))
    figure = new_figure(WIDE)
    axes = figure.add_subplot()
    width = 0.8 / len(runners)
    for index, runner in enumerate(runners):
        values = [rates(row).get(runner, np.nan) for row in rows]
        axes.bar(np.arange(len(rows)) + (index - (len(runners) - 1) / 2) * width, values, width, label=runner)
    if limits is not None:
        axes.axhline(limits["fma_peak"], color="black", linestyle="--",
                     label=f"measured FMA peak, {limits['threads']} threads ({limits['fma_peak']:.0f})")
    axes.set_xticks(np.arange(len(rows)), [row["case"] for row in rows], rotation=20, ha="right", fontsize=8)
    axes.set_ylabel("GFLOP/s")
    axes.set_title("achieved GFLOP/s against the measured peak")
    axes.legend(fontsize=8)
    return figure


def attention_panels(rows, limits, value, ylabel, title, log=True):
    """One panel per (pass, mask): value(row, runner) against T for every runner."""
    passes = list(dict.fromkeys((row["pass"], row["causal"]) for row in rows))
    runners = list(dict.fromkeys(name for row in rows for name in row["seconds"]))
    figure = new_figure((WIDE[0], 300 * ((len(passes) + 1) // 2)))
    for index, (pass_name, causal) in enumerate(passes, 1):
        axes = figure.add_subplot((len(passes) + 1) // 2, min(2, len(passes)), index)
        selected = sorted((row for row in rows if (row["pass"], row["causal"]) == (pass_name, causal)),
                          key=lambda row: row["T"])
        sizes = [row["T"] for row in selected]
        drawn = []
        for runner in runners:
            values = [np.nan if v is None else v for v in (value(row, runner) for row in selected)]
            if not np.all(np.isnan(values)):
                axes.plot(sizes, values, marker="o", label=runner)
                drawn += values
        if value is attention_gflops and limits is not None:
            axes.axhline(limits["fma_peak"], color="black", linestyle="--", label="measured FMA peak")
        axes.set_xscale("log", base=2)
        if log and np.nanmax(drawn) > 10 * np.nanmin(drawn) > 0:   # a log scale where it spans decades
            axes.set_yscale("log")
            axes.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            axes.yaxis.set_minor_formatter(NullFormatter())
        axes.set_xticks(sizes, [str(n) for n in sizes])
        axes.set_title(f"{pass_name}, {'causal' if causal else 'no mask'}", fontsize=10)
        axes.set_xlabel("T, keys and queries")
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(title)
    return figure


def attention_ms(row, runner):
    return row["seconds"].get(runner, np.nan) * 1e3


def attention_mib(row, runner):
    peak = row["peak_bytes"].get(runner)
    return None if peak is None else peak / 2**20


def attention_gflops(row, runner):
    return rates(row).get(runner)


CASE_CHARTS = {"ratios.png": ratio_bars, "gflops.png": gflops_bars}
ATTENTION_CHARTS = {
    "attention-time.png": lambda rows, limits: attention_panels(
        rows, limits, attention_ms, "ms per call", "attention: time against T"),
    "attention-memory.png": lambda rows, limits: attention_panels(
        rows, limits, attention_mib, "MiB", "attention: peak memory one call adds, against T", log=False),
    "attention-gflops.png": lambda rows, limits: attention_panels(
        rows, limits, attention_gflops, "GFLOP/s", "attention: GFLOP/s against the measured FMA peak",
        log=False),
}
