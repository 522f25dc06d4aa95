"""The numba-cuda backend's kernels: numba.cuda on an NVIDIA GPU, one op per file
(`pyai.kernels.numba_cuda`). Each file imports its float64 reference from the numba-cpu file of
the same op, so both backends are tested against one reference."""

GRID_Y_MAX = 65535   # CUDA's limit on gridDim.y: matmul row tiles, attention heads
THREADS = 256        # a block of the element-wise kernels' grid-stride loops
MAX_BLOCKS = 4096    # ~30 blocks per SM on an H100: enough to saturate memory bandwidth


def grid_size(n, max_blocks=None):
    """Blocks of THREADS for a grid-stride loop over n elements: one element a thread, at most
    max_blocks (MAX_BLOCKS, read at the call, when not given)."""
    return min(-(-n // THREADS), MAX_BLOCKS if max_blocks is None else max_blocks)


def check_grid_y(blocks, message):
    """ValueError(message) when a launch would need more than GRID_Y_MAX blocks along y, which
    CUDA refuses with an error that names no argument."""
    if blocks > GRID_Y_MAX:
        raise ValueError(message)
