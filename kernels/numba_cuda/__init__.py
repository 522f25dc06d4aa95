"""The numba-cuda backend's kernels: numba.cuda on an NVIDIA GPU, one op per file
(`pyai.kernels.numba_cuda`). Each file imports its float64 reference from the numba-cpu file of
the same op, so both backends are tested against one reference."""

GRID_Y_MAX = 65535   # CUDA's limit on gridDim.y: matmul row tiles, attention heads


def check_grid_y(blocks, message):
    """ValueError(message) when a launch would need more than GRID_Y_MAX blocks along y, which
    CUDA refuses with an error that names no argument."""
    if blocks > GRID_Y_MAX:
        raise ValueError(message)
