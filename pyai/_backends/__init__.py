"""One module per backend, named after it (`numba_cpu.py` is "numba-cpu"); each defines ROW,
probe() and TAKES_DEVICE_ARRAYS for `pyai.dispatch`, which finds the modules by their file names."""
