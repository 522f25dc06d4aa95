"""The GPU path of data-parallel training: gradients summed over processes by NCCL (CuPy's
`cupy.cuda.nccl`), each process on its own GPU. Unverified until it runs on GPUs: the tests only
import it and check how it is chosen.

    reducer(comm)   an NcclSum when the current backend runs on a GPU and CuPy is installed,
                    else None (pyai.distributed then sums on the host with MPI)

Start-up: rank 0 makes NCCL's unique id, MPI broadcasts it (`comm.bcast`), and every rank joins
the NCCL communicator with it, on the GPU numbered rank % the GPUs visible. Each sum copies the
flat host gradient buffer to one device buffer, runs one in-place ncclAllReduce (ring or tree,
NCCL's choice: each GPU sends and receives about 2 (N - 1) / N of the buffer over NVLink or the
network), and copies the result back: pyai's models keep their parameters in host memory, and the
two copies move 2 x 4 bytes per parameter over PCIe beside NCCL's traffic.
"""

from pyai import dispatch


def reducer(comm):
    """An NcclSum over `comm`'s processes, or None where NCCL cannot or need not run."""
    if not dispatch.takes_device_arrays():
        return None
    try:
        import cupy
        from cupy.cuda import nccl
    except ImportError:
        return None
    return NcclSum(comm, cupy, nccl)


class NcclSum:
    """Sums a flat float32 host buffer over the processes, in place, through one NCCL allreduce."""

    def __init__(self, comm, cupy, nccl):
        self.cupy, self.nccl = cupy, nccl
        rank, size = comm.Get_rank(), comm.Get_size()
        cupy.cuda.Device(rank % cupy.cuda.runtime.getDeviceCount()).use()
        unique_id = comm.bcast(nccl.get_unique_id() if rank == 0 else None, root=0)
        self.communicator = nccl.NcclCommunicator(size, unique_id, rank)
        self.device = None

    def sum(self, flat):
        if self.device is None or self.device.size != flat.size:
            self.device = self.cupy.empty(flat.size, self.cupy.float32)
        self.device.set(flat)
        stream = self.cupy.cuda.get_current_stream()
        self.communicator.allReduce(self.device.data.ptr, self.device.data.ptr, flat.size,
                                    self.nccl.NCCL_FLOAT32, self.nccl.NCCL_SUM, stream.ptr)
        self.device.get(out=flat, stream=stream)
        stream.synchronize()
