"""dense_adam.py's op in two passes, for a first run: the weight and bias gradient by
plain_matmul.py, then adam.py's step, the two passes dense_adam.py takes itself for a deep batch.
The same floats bit for bit (dense_adam.py's are those of the gradient, then Adam's; a test
checks). dense_adam.py imports matmul.py, whose compile a first step would wait for (~10 CPU s
on an AMD EPYC Zen 4); this imports neither, so the numba-cpu backend runs it while a worker
process compiles both into Numba's cache (pyai.warmup), then switches to dense_adam.py.
Cost: 2 batch (in + 1) out FLOPs, then Adam's 28 bytes a parameter and G written and read back.
"""

from pyai.kernels.numba_cpu.adam import adam_update
from pyai.kernels.numba_cpu.plain_matmul import weight_and_bias_grad


# as dense_adam.dense_adam_update: x (batch, in), dy (batch, out); grad, param, m, v runs of
# (in + 1) out floats, [weight; bias] row-major; param, m, v stepped in place, grad written
def dense_adam_update(x, dy, grad, param, m, v, lr, beta_1, beta_2, epsilon, step):
    weight_and_bias_grad(x, dy, out=grad.reshape((x.shape[1] + 1, dy.shape[1])))
    adam_update(param, grad, m, v, lr, beta_1, beta_2, epsilon, step)
