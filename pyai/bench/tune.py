"""`pyai tune`: the matmul's cache blocking on this CPU, measured.

The blocking (kernels/numba_cpu/blocking.py) is derived from the L2 size (MC) or the same on
every CPU (NC, A_COLUMNS); any of them can be off for a core whose caches or prefetchers behave
otherwise. This measures the derived (MC, NC) beside its halves and doubles on square products,
then, with the fastest, a row-major A read in place in panels up to A_COLUMNS wide against A
always packed, on products whose panels are that narrow (one slice of K deep and several); one
thread, best of N, and with `--save` keeps the fastest for this CPU model, which every later
process then uses.
"""

import numba
import numpy as np

from pyai.bench.timing import best_times
from pyai.kernels.numba_cpu import blocking
from pyai.kernels.numba_cpu.matmul import fused_matmul
from pyai.kernels.numba_cpu.matmul_micro import MR, NR
from pyai.kernels.numba_cpu.simd import WIDTH

# (m, k, n): panels of 256 columns, K of one slice (KC), two and three
NARROW_PANELS = ((1024, 256, 256), (2048, 512, 256), (1024, 768, 256))


def candidates(mc, nc):
    """The derived (MC, NC), then each halved and doubled (MC kept a multiple of MR)."""
    half_mc = max(MR, mc // 2 // MR * MR)
    options = [(mc, nc), (half_mc, nc), (2 * mc, nc), (mc, max(128, nc // 2)), (mc, 2 * nc)]
    return list(dict.fromkeys(options))


def measure(options, shapes, repeats):
    """{blocking: GFLOP/s averaged over the (m, k, n) products}, one thread, the options
    interleaved; a blocking is (MC, NC) or (MC, NC, A_COLUMNS), as fused_matmul takes it."""
    rng = np.random.default_rng(0)
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        rates = {option: 0.0 for option in options}
        for m, k, n in shapes:
            a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
            runners = {option: (lambda option=option: fused_matmul(a, b, False, False, None, None, 0.0,
                                                                   blocking=option))
                       for option in options}
            for option, seconds in best_times(runners, repeats).items():
                rates[option] += 2 * m * k * n / seconds / 1e9 / len(shapes)
        return rates
    finally:
        numba.set_num_threads(previous)


def table(rates, columns):
    lines = [f"| {' | '.join(columns)} | GFLOP/s, one thread |", "|" + "---|" * (len(columns) + 1)]
    for option, rate in sorted(rates.items(), key=lambda item: -item[1]):
        lines.append(f"| {' | '.join(str(value) for value in option)} | {rate:.0f} |")
    return "\n".join(lines)


def run(save=False, sizes=(1024, 2048), narrow=NARROW_PANELS, repeats=5):
    """Measure, print and (with save) keep the fastest (MC, NC, A_COLUMNS); returns it and the
    rates of both rounds."""
    mc, nc, a_columns, source = blocking.choose()
    l2 = blocking.l2_bytes()
    print(f"CPU {blocking.cpu_model()}; {WIDTH}-float vectors; register tile {MR} x {NR}; "
          f"L2 {l2 >> 10 if l2 else '?'} KB")
    print(f"blocking in use: KC {blocking.KC}, MC {mc}, NC {nc}, A_COLUMNS {a_columns} ({source})")
    rates = measure(candidates(*blocking.derived(l2)) + [(mc, nc)], [(size, size, size) for size in sizes], repeats)
    best_mc, best_nc = max(rates, key=rates.get)
    print(table(rates, ["MC", "NC"]))
    in_place = measure([(best_mc, best_nc, blocking.A_COLUMNS_DEFAULT), (best_mc, best_nc, 0)], narrow, repeats)
    print(table({(option[2] or "0 (always packed)",): rate for option, rate in in_place.items()},
                ["A_COLUMNS"]))
    best = max(in_place, key=in_place.get)
    rates.update(in_place)
    if save:
        blocking.save(*best)
        print(f"saved MC {best[0]}, NC {best[1]}, A_COLUMNS {best[2]} to {blocking.saved_path()}")
    else:
        print(f"fastest here: MC {best[0]}, NC {best[1]}, A_COLUMNS {best[2]} (keep it with `pyai tune --save`)")
    return best, rates
