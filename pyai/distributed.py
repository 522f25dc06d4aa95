"""Data-parallel training over processes and machines, through MPI (mpi4py; `pip install pyai[mpi]`).

    mpiexec -n 2 pyai train gpt --steps 200         # or gan, mlp: nothing else changes
    world = distributed.world()                     # world.rank, world.size: 0 and 1 without mpiexec

Every process holds the whole model. The training loops (`pyai.training`) draw each global batch
from the same random generator in every process and each process takes its own rows of it
(`shard`), so the global batch size and the data order do not depend on the number of processes.
Before each optimizer step (`pyai.optim`) the flat gradient buffer (`pyai.nn.flat`) is averaged
over the processes (`average`), so every process takes the same step and the weights stay
identical; `check_consistent` compares a CRC32 of them every CHECK_EVERY steps. N processes train
the same model as one, up to the order of the float32 sums.

    shard(count)        rows [rank * count // size, (rank + 1) * count // size) of a global batch
    average(gradients)  in place: sum over processes of share * gradient, share = the process's
                        rows / the batch's rows (1 / size for equal shards): the gradient of the
                        global batch's mean loss. One in-place MPI Allreduce per BUCKET_BYTES.
    mean(values)        the same weighted average of a few numbers: losses and accuracies for logs
    broadcast(array)    rank 0's values into every process's array, in place

One process (no mpiexec) is world size 1: every call returns at once and mpi4py is not imported.
With a GPU backend and CuPy installed, the averaging runs on NCCL (`pyai.nccl`) instead.

Faults end the run in bounded time: a `pyai` command that fails, or an uncaught exception in a
script, calls `abort` (MPI_Abort), which ends every process; mpiexec ends the others when a
process is killed; and a watchdog thread aborts
when a collective call waits longer than PYAI_MPI_TIMEOUT seconds (default TIMEOUT_S), as it does
behind a process that hangs. Checkpoints are written by rank 0 only, so a run that ends keeps the
last complete one.
"""

import os
import sys
import threading
import time
import zlib
from contextlib import contextmanager

import numpy as np

BUCKET_BYTES = 8 << 20   # per Allreduce call: the GPT's 3 MB gradients take one, a 100 MB model 13
CHECK_EVERY = 100        # optimizer steps between weight checksums
TIMEOUT_S = 300.0        # the longest a collective call may wait for the other processes
ABORT_GRACE_S = 0.5      # before MPI_Abort: mpiexec forwards the error already written, not just part of it
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")   # MPICH, Open MPI


class World:
    """This process's rank among `size` processes, and the collective calls between them."""

    def __init__(self, comm=None, timeout_s=TIMEOUT_S):
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()
        self.share = 1.0 / self.size
        self.steps = 0
        self.reducer = None
        self.watchdog = None if self.size == 1 else Watchdog(self, timeout_s)
        if self.size > 1:
            abort_on_uncaught_exceptions(self)

    def __repr__(self):
        return f"World(rank={self.rank}, size={self.size})"

    def is_root(self):
        return self.rank == 0

    def shard(self, count):
        """This process's rows of a global batch of `count` rows, as a slice; remembers its share
        for `average` and `mean`. A batch smaller than the world leaves some shards empty."""
        start, end = self.rank * count // self.size, (self.rank + 1) * count // self.size
        self.share = (end - start) / count
        return slice(start, end)

    def check_batch(self, name, batch_size):
        """batch_size, or a clear error when it cannot give every process a row."""
        if batch_size < self.size:
            raise ValueError(f"{name}: {batch_size} rows cannot be shared by {self.size} processes; "
                             f"expected at least one row per process")
        return batch_size

    def average(self, gradients):
        """Replace this process's flat float32 `gradients` by the share-weighted sum over processes."""
        if self.size == 1:
            return
        gradients *= np.float32(self.share)
        if self.reducer is None:
            from pyai import nccl   # the GPU path, chosen here because it needs the backend set
            self.reducer = nccl.reducer(self.comm) or MpiSum(self.comm)
        with self.waiting("allreduce of the gradients"):
            self.reducer.sum(gradients)

    def mean(self, values):
        """The share-weighted average over processes of each of `values` (floats), as floats."""
        if self.size == 1:
            return [float(value) for value in values]
        array = np.array(values, np.float64) * self.share
        with self.waiting("allreduce of the losses"):
            self.comm.Allreduce(mpi().IN_PLACE, array, op=mpi().SUM)
        return array.tolist()

    def broadcast(self, array):
        """Rank 0's `array` into every process's, in place."""
        if self.size > 1:
            with self.waiting("broadcast"):
                self.comm.Bcast(array, root=0)

    def check_consistent(self, parameters):
        """Every CHECK_EVERY calls: a RuntimeError when the processes' `parameters` differ."""
        self.steps += 1
        if self.size == 1 or self.steps % CHECK_EVERY:
            return
        checksum = zlib.crc32(parameters)
        with self.waiting("weight checksum"):
            checksums = self.comm.allgather(checksum)
        if len(set(checksums)) > 1:
            raise RuntimeError(f"the weights differ between processes after {self.steps} optimizer steps "
                               f"(CRC32 by rank: {[f'{c:08x}' for c in checksums]}); data-parallel "
                               f"training needs the same model and optimizer in every process")

    @contextmanager
    def waiting(self, what):
        self.watchdog.enter(what)
        try:
            yield
        finally:
            self.watchdog.leave()

    def abort(self, status):
        """End every process of the run (MPI_Abort) with exit `status`; nothing with one process."""
        if self.size > 1:
            sys.stdout.flush()
            sys.stderr.flush()
            time.sleep(ABORT_GRACE_S)   # MPI_Abort can end the launcher's forwarding mid-traceback
            self.comm.Abort(status)


class MpiSum:
    """Sums a flat buffer over the processes on the host, in place, a bucket per Allreduce."""

    def __init__(self, comm):
        self.comm = comm

    def sum(self, flat):
        step = BUCKET_BYTES // flat.itemsize
        for start in range(0, flat.size, step):
            self.comm.Allreduce(mpi().IN_PLACE, flat[start:start + step], op=mpi().SUM)


class Watchdog:
    """A thread that ends the run when a collective call has waited more than `timeout_s`."""

    def __init__(self, world, timeout_s):
        self.world, self.timeout_s = world, timeout_s
        self.what, self.since = None, None
        threading.Thread(target=self.watch, name="pyai-watchdog", daemon=True).start()

    def enter(self, what):
        self.what, self.since = what, time.monotonic()

    def leave(self):
        self.since = None

    def watch(self):
        while True:
            time.sleep(min(1.0, self.timeout_s / 10))
            since, what = self.since, self.what
            if since is not None and time.monotonic() - since > self.timeout_s:
                print(f"pyai: error: rank {self.world.rank} of {self.world.size} waited more than "
                      f"{self.timeout_s:g} s in the {what}: another process has failed or hangs; "
                      f"ending the run", file=sys.stderr)
                self.world.abort(1)


def abort_on_uncaught_exceptions(world):
    """An exception that ends this process's script ends every process (after its traceback)."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        world.abort(1)

    sys.excepthook = hook


def mpi():
    from mpi4py import MPI as module
    return module


def launched_size():
    """The process count mpiexec gave this process through its environment, or 1."""
    for variable in LAUNCHER_SIZE_VARIABLES:
        if os.environ.get(variable, "").isdigit():
            return int(os.environ[variable])
    return 1


def timeout_from_environment():
    text = os.environ.get("PYAI_MPI_TIMEOUT", "")
    if not text:
        return TIMEOUT_S
    try:
        timeout_s = float(text)
    except ValueError:
        timeout_s = float("nan")
    if not timeout_s > 0:
        raise ValueError(f"PYAI_MPI_TIMEOUT: expected a positive number of seconds, got {text!r}")
    return timeout_s


_world = None


def world():
    """The processes of this run: MPI's COMM_WORLD under mpiexec, else this process alone."""
    global _world
    if _world is None:
        size = launched_size()
        if size == 1:
            _world = World()
        else:
            try:
                comm = mpi().COMM_WORLD
            except ImportError as error:
                raise RuntimeError(f"mpiexec started {size} processes, but mpi4py is not installed: "
                                   f"pip install pyai[mpi]") from error
            _world = World(comm, timeout_from_environment())
    return _world


def flat_buffers(model):
    """The flat parameter buffers of `model`: its own, or each of its networks' (the GAN's)."""
    if hasattr(model, "flat"):
        return [model.flat]
    return [network.flat for _, network, _ in getattr(model, "networks", list)()]


def broadcast_parameters(model):
    """Rank 0's weights into every process's `model`, before the first step."""
    if world().size == 1:
        return
    for flat in flat_buffers(model):
        world().broadcast(flat.parameters)
