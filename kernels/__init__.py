"""pyai's hand-written Numba kernels, one op per file (installed as `pyai.kernels`)."""
