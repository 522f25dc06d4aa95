"""What tests/test_distributed.py runs in each process under `mpiexec -n 2 python tests/mpi_worker.py`.

    mpi_worker.py gradients OUT.npz   each rank: a model of its own seed, rank 0's weights broadcast into
                                      it, the gradients of its rows of one global batch (5 rows: shards
                                      of 2 and 3), averaged; rank 0 writes them beside the gradients of
                                      the whole batch in one process, for the GPT and the MLP
    mpi_worker.py raise|kill|hang     rank 1 raises, is killed, or sleeps, while rank 0 waits in an allreduce
    mpi_worker.py diverge             the ranks' weights differ: the checksum after CHECK_EVERY steps says so
"""

import os
import signal
import sys
import time

import numpy as np

from pyai import distributed
from pyai.losses import BinaryCrossentropy
from pyai.models import GPT, MLP

GLOBAL_BATCH = 5
GPT_SIZES = {"vocab_size": 11, "block_size": 7, "layers": 1, "heads": 2, "channels": 16}


def gpt_gradients(model, rows):
    model.train_step(*rows)
    return model.flat.gradients.copy()


def mlp_gradients(model, rows):
    loss = BinaryCrossentropy(from_logits=True)
    x, targets = rows
    loss(model.forward(x), targets)
    model.backward(loss.backward(), input_gradient=False)
    return model.flat.gradients.copy()


def gradients(path):
    world = distributed.world()
    rng = np.random.default_rng(1)
    cases = {
        "gpt": (lambda seed: GPT(**GPT_SIZES, seed=seed), gpt_gradients,
                [rng.integers(0, 11, (GLOBAL_BATCH, 7)) for _ in range(2)]),
        "mlp": (lambda seed: MLP([13, 17, 3], activation="leaky_relu", seed=seed), mlp_gradients,
                [rng.standard_normal((GLOBAL_BATCH, 13)).astype(np.float32),
                 rng.integers(0, 2, (GLOBAL_BATCH, 3)).astype(np.float32)]),
    }
    results = {}
    for name, (build, local_gradients, batch) in cases.items():
        rows = world.shard(GLOBAL_BATCH)
        model = build(3 + world.rank)
        distributed.broadcast_parameters(model)   # every rank now holds seed 3's weights
        averaged = local_gradients(model, [array[rows] for array in batch])
        world.average(averaged)
        results[f"{name}/averaged"] = averaged
        results[f"{name}/whole_batch"] = local_gradients(build(3), batch)
        results[f"{name}/shard_rows"] = np.array(rows.stop - rows.start)
    if world.is_root():
        np.savez(path, **results)


def diverge():
    world = distributed.world()
    weights = np.full(10, world.rank, np.float32)
    for _ in range(distributed.CHECK_EVERY):
        world.check_consistent(weights)


def fault(mode):
    world = distributed.world()
    buffer = np.ones(1000, np.float32)
    world.average(buffer)
    if world.rank == 1:
        if mode == "raise":
            raise RuntimeError("rank 1 fails on purpose")
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "hang":
            time.sleep(600)
    world.average(buffer)   # rank 0 waits here for rank 1, which never comes


if __name__ == "__main__":
    if sys.argv[1] == "gradients":
        gradients(sys.argv[2])
    elif sys.argv[1] == "diverge":
        diverge()
    else:
        fault(sys.argv[1])
