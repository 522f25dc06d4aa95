"""The numba-cpu backend's kernels: Numba on the CPU, one op per file (`pyai.kernels.numba_cpu`).

Importing the package first makes sure no kernel is loaded from a Numba cache filled for other
sources or another vector width (cache.py)."""

from pyai import threads  # first: the threading layer, before any kernel runs
from pyai.kernels.numba_cpu import cache, simd

threads.choose()

cache.refresh(simd.WIDTH)
