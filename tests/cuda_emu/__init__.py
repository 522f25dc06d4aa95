"""Host emulation of the CUDA runtime features cuda_src/ uses, so its kernels run in CI without a
GPU (see README.md here)."""
