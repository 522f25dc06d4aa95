"""The numba-cuda backend's kernels: numba.cuda on an NVIDIA GPU, one op per file
(`pyai.kernels.numba_cuda`). Each file imports its float64 reference from the numba-cpu file of
the same op, so both backends are tested against one reference."""
