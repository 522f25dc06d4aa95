"""The numba-cuda backend: hand-written numba.cuda kernels (its kernels are added op by op)."""

from pyai.dispatch import register_probe


@register_probe("numba-cuda")
def probe():
    try:
        from numba import cuda
    except ImportError as error:
        return f"numba.cuda cannot be imported ({error})"
    if not cuda.is_available():
        return "no CUDA GPU or driver found by numba.cuda"
    return None
