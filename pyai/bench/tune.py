"""`pyai tune`: the matmul's cache blocking on this CPU, measured.

The blocking (kernels/numba_cpu/blocking.py) is derived from the L2 size (MC) or the same on
every CPU (NC); either can be off for a core whose caches or prefetchers behave otherwise. This
measures the derived (MC, NC) beside its halves and doubles on square products, one thread, best of N, and with `--save`
keeps the fastest for this CPU model, which every later process then uses.
"""

import numba
import numpy as np

from pyai.bench.timing import best_times
from pyai.kernels.numba_cpu import blocking
from pyai.kernels.numba_cpu.matmul import fused_matmul
from pyai.kernels.numba_cpu.matmul_micro import MR, NR
from pyai.kernels.numba_cpu.simd import WIDTH


def candidates(mc, nc):
    """The derived (MC, NC), then each halved and doubled (MC kept a multiple of MR)."""
    half_mc = max(MR, mc // 2 // MR * MR)
    options = [(mc, nc), (half_mc, nc), (2 * mc, nc), (mc, max(128, nc // 2)), (mc, 2 * nc)]
    return list(dict.fromkeys(options))


def measure(options, sizes, repeats):
    """{(mc, nc): GFLOP/s summed over `sizes`' products}, one thread, the options interleaved."""
    rng = np.random.default_rng(0)
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        rates = {option: 0.0 for option in options}
        for size in sizes:
            a, b = (rng.standard_normal((size, size)).astype(np.float32) for _ in range(2))
            runners = {option: (lambda option=option: fused_matmul(a, b, False, False, None, None, 0.0,
                                                                   blocking=option))
                       for option in options}
            for option, seconds in best_times(runners, repeats).items():
                rates[option] += 2 * size**3 / seconds / 1e9 / len(sizes)
        return rates
    finally:
        numba.set_num_threads(previous)


def run(save=False, sizes=(1024, 2048), repeats=5):
    mc, nc, source = blocking.choose()
    l2 = blocking.l2_bytes()
    print(f"CPU {blocking.cpu_model()}; {WIDTH}-float vectors; register tile {MR} x {NR}; "
          f"L2 {l2 >> 10 if l2 else '?'} KB")
    print(f"blocking in use: KC {blocking.KC}, MC {mc}, NC {nc} ({source})")
    rates = measure(candidates(*blocking.derived(l2)) + [(mc, nc)], sizes, repeats)
    best = max(rates, key=rates.get)
    print("| MC | NC | GFLOP/s, one thread |\n|---|---|---|")
    for (option_mc, option_nc), rate in sorted(rates.items(), key=lambda item: -item[1]):
        print(f"| {option_mc} | {option_nc} | {rate:.0f} |")
    if save:
        blocking.save(*best)
        print(f"saved MC {best[0]}, NC {best[1]} to {blocking.saved_path()}")
    else:
        print(f"fastest here: MC {best[0]}, NC {best[1]} (keep it with `pyai tune --save`)")
    return best, rates
