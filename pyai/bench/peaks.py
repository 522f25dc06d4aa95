"""The hardware limits a benchmark figure is read against: measured on the CPU, from the
datasheet or the device's attributes on a GPU.

CPU FMA peak (`fma_peak`): every thread runs ITERATIONS steps of ACCUMULATORS independent
fused multiply-adds on `<WIDTH x float>` vectors (pyai's explicit SIMD, kernels/numba_cpu/simd.py:
512-bit with AVX-512, 256-bit with AVX2 -- LLVM's auto-vectorizer would pick 256-bit on Intel).
An FMA's result is ready after about 4 cycles and a core starts up to two a cycle, so at least 8
chains must be in flight to fill both ports; 12 keep them full and, with the two operands, fit
AVX2's 16 registers without spilling. Work per call: threads * ITERATIONS * ACCUMULATORS * WIDTH
FMAs, 2 FLOPs each. No kernel can multiply faster on these cores.

CPU copy bandwidth (`copy_bandwidth`): a parallel copy of COPY_FLOATS floats (far larger than
any cache) on every thread, counted as 8 bytes a float (one read, one write).
"""

import dataclasses

import numba
import numpy as np

from pyai.bench.timing import best_time
from pyai.kernels.numba_cpu.simd import WIDTH, add, fma, splat, store, zeros

ACCUMULATORS = 12
ITERATIONS = 2**23
COPY_FLOATS = 2**25          # 128 MiB a array
REPEATS = 10
MIN_SECONDS = 1.0    # each limit is the best of at least this long: in a fresh process the
                     # parallel threads may not all run at first (on a 2-core VM, 2 processes in
                     # 16 read one core's FMA rate on "2 threads" for their first ~0.5 s)


@numba.njit(parallel=True, cache=True)
def fma_chains(out, iterations, multiplier, addend):
    """out[thread] = the lane-wise sum of 12 accumulators, each started at 0 and put through
    `iterations` steps of acc = acc * multiplier + addend; out is (threads, WIDTH) float32.
    multiplier and addend are arguments, not constants, so that LLVM cannot fold the FMA."""
    for thread in numba.prange(out.shape[0]):
        a, b = splat(multiplier), splat(addend)
        z = zeros()
        acc = (z, z, z, z, z, z, z, z, z, z, z, z)
        for _ in range(iterations):
            acc = (fma(acc[0], a, b), fma(acc[1], a, b), fma(acc[2], a, b), fma(acc[3], a, b),
                   fma(acc[4], a, b), fma(acc[5], a, b), fma(acc[6], a, b), fma(acc[7], a, b),
                   fma(acc[8], a, b), fma(acc[9], a, b), fma(acc[10], a, b), fma(acc[11], a, b))
        total = add(add(add(acc[0], acc[1]), add(acc[2], acc[3])),
                    add(add(acc[4], acc[5]), add(acc[6], acc[7])))
        total = add(total, add(add(acc[8], acc[9]), add(acc[10], acc[11])))
        store(out, thread * WIDTH, total)


def fma_flops(threads, iterations):
    """FLOPs of one fma_chains call: 2 per lane of every FMA it issues."""
    return 2.0 * threads * iterations * ACCUMULATORS * WIDTH


def fma_peak(threads, iterations=ITERATIONS, repeats=REPEATS, min_seconds=MIN_SECONDS):
    """GFLOP/s of fma_chains on `threads` threads (one chain set per thread), best of `repeats`
    calls and of `min_seconds`."""
    out = np.empty((threads, WIDTH), np.float32)
    one = np.float32(1)
    seconds = best_time(lambda: fma_chains(out, iterations, one, one), repeats, min_seconds=min_seconds)
    return fma_flops(threads, iterations) / seconds / 1e9


@numba.njit(parallel=True, cache=True)
def parallel_copy(destination, source):
    for i in numba.prange(source.size):
        destination[i] = source[i]


def copy_bandwidth(floats=COPY_FLOATS, repeats=REPEATS, min_seconds=MIN_SECONDS):
    """GB/s of parallel_copy between two arrays of `floats` floats, 8 bytes a float."""
    source = np.ones(floats, np.float32)
    destination = np.zeros_like(source)
    seconds = best_time(lambda: parallel_copy(destination, source), repeats, min_seconds=min_seconds)
    return 8.0 * floats / seconds / 1e9


@dataclasses.dataclass
class CpuLimits:
    """The limits of this machine, in one place: the FMA peak on one core and on all of Numba's
    threads in GFLOP/s, the copy bandwidth in GB/s. `CpuLimits.measure()` measures them now."""
    threads: int
    fma_peak_one_core: float
    fma_peak: float
    copy_bandwidth: float

    @classmethod
    def measure(cls, quick=False):
        """quick: shorter FMA runs and a shorter least time; the copy stays far larger than any
        cache either way."""
        iterations = ITERATIONS // 8 if quick else ITERATIONS
        seconds = MIN_SECONDS / 4 if quick else MIN_SECONDS
        threads = numba.get_num_threads()
        return cls(threads, fma_peak(1, iterations, min_seconds=seconds),
                   fma_peak(threads, iterations, min_seconds=seconds), copy_bandwidth(min_seconds=seconds))

    def limit(self, unit):
        return {"GFLOP/s": self.fma_peak, "GB/s": self.copy_bandwidth}[unit]

    def fraction(self, rate, unit):
        return rate / self.limit(unit)

    def describe(self):
        return (f"FMA peak {self.fma_peak_one_core:.0f} GFLOP/s on one core, {self.fma_peak:.0f} on "
                f"{self.threads} threads ({ACCUMULATORS} independent {WIDTH}-float FMAs a step on every "
                f"thread); copy bandwidth {self.copy_bandwidth:.1f} GB/s (parallel copy)")


# ---- GPU peaks ----

# Dense peaks from NVIDIA's datasheets: (fp32 FLOP/s, bf16 tensor FLOP/s, memory bytes/s)
GPU_DATASHEET_PEAKS = {
    "H100 SXM": (67e12, 989e12, 3.35e12), "H100 PCIe": (51e12, 756e12, 2.0e12),
    "H100 NVL": (60e12, 835e12, 3.9e12), "H200": (67e12, 989e12, 4.8e12),
    "A100-SXM4-80GB": (19.5e12, 312e12, 2.04e12), "A100-SXM4-40GB": (19.5e12, 312e12, 1.56e12)}
FP32_LANES = {(7, 0): 64, (8, 0): 64}   # FP32 lanes per SM where it is not 128


def gpu_datasheet_peaks(name):
    """(fp32 FLOP/s, bf16 FLOP/s, bytes/s) of a device by its name; Nones when unknown."""
    if "H100" in name and "PCIe" not in name and "NVL" not in name:
        return GPU_DATASHEET_PEAKS["H100 SXM"]
    return next((value for key, value in GPU_DATASHEET_PEAKS.items() if key in name), (None, None, None))


def gpu_attribute_peaks(cuda):
    """(FP32 FLOP/s, bytes/s) of numba.cuda's current device, from its attributes: FP32 lanes x
    SMs x clock x 2; bus width x memory clock x 2."""
    gpu = cuda.get_current_device()
    lanes = FP32_LANES.get(gpu.compute_capability, 128)
    flops = gpu.MULTIPROCESSOR_COUNT * lanes * 2 * gpu.CLOCK_RATE * 1e3
    bandwidth = gpu.GLOBAL_MEMORY_BUS_WIDTH / 8 * gpu.MEMORY_CLOCK_RATE * 1e3 * 2
    return flops, bandwidth
