"""Kernels compiled on their first call: BySize runs a parallel kernel's serial compile on small
arrays, with the same floats bit for bit, and compiles only the variant a program takes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pyai.kernels.numba_cpu import adam, binary_crossentropy, leaky_relu
from pyai.kernels.numba_cpu.first_call import PARALLEL_ELEMENTS

# 1, a prime, both sides of the threshold, and past it by several blocks of the ordered sum
SIZES = [1, 7919, PARALLEL_ELEMENTS - 1, PARALLEL_ELEMENTS, 3 * PARALLEL_ELEMENTS + 5]


@pytest.mark.parametrize("n", SIZES)
def test_the_serial_and_parallel_compiles_give_the_same_bits(rng, n):
    x = rng.standard_normal(n).astype(np.float32)
    t = rng.uniform(0, 1, n).astype(np.float32)
    scalars = (np.float32(0.01), np.float32(0.1), np.float32(0.001), np.float32(1e-7))
    for kernel, make in ((leaky_relu.leaky_relu_backward_kernel, lambda: (t, x, np.float32(0.2), np.empty_like(x))),
                         (binary_crossentropy.bce_logits_backward_kernel, lambda: (x, t, np.empty_like(x))),
                         (adam.adam_update_kernel, lambda: (x.copy(), t, np.zeros_like(x), np.zeros_like(x), *scalars))):
        serial, parallel = make(), make()
        kernel.serial(*serial)
        kernel.parallel(*parallel)
        for one, other in zip(serial, parallel):
            if isinstance(one, np.ndarray):
                assert np.array_equal(one, other), kernel.__doc__
    total = binary_crossentropy.bce_logits_sum.serial(x, t)
    assert np.isfinite(total) and total == binary_crossentropy.bce_logits_sum.parallel(x, t)


def test_a_small_array_compiles_the_serial_kernel_only(tmp_path):
    code = ("import json, numpy as np, pyai; from pyai.kernels.numba_cpu import leaky_relu as k; "
            "x = np.arange(-3, 4, dtype=np.float32); dx = pyai.ops.leaky_relu_grad(np.ones_like(x), x, alpha=0.5); "
            "kernel = k.leaky_relu_backward_kernel; "
            "print(json.dumps([dx.tolist(), len(kernel.serial.signatures), len(kernel.parallel.signatures)]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    dx, serial, parallel = json.loads(result.stdout)
    assert dx == [0.5, 0.5, 0.5, 0.5, 1, 1, 1] and (serial, parallel) == (1, 0)


def test_a_loss_sum_loads_from_the_cache_in_a_second_process(tmp_path):
    """A loss's sum is a kernel of its own (ordered_sum.sum_kernel): a kernel taking the term as an
    argument was compiled again in every process (its type is new in each, and in Numba's key)."""
    code = ("import json, numpy as np, pyai; from pyai.kernels.numba_cpu import binary_crossentropy as k; "
            "z = np.linspace(-3, 3, 9000, dtype=np.float32); t = (z > 0).astype(np.float32); "
            "loss = float(pyai.ops.binary_crossentropy(z, t, from_logits=True)); "
            "print(json.dumps([loss, sum(k.bce_logits_sum.parallel.stats.cache_hits.values())]))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}) for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), runs[-1].stderr
    (first, first_hits), (second, second_hits) = (json.loads(run.stdout) for run in runs)
    assert first == second and np.isfinite(first)
    assert not first_hits and second_hits, (first_hits, second_hits)
