"""The numba-cpu backend's kernels: Numba on the CPU, one op per file (`pyai.kernels.numba_cpu`)."""
