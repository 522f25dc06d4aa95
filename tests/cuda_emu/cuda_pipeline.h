// cp.async through the pipeline primitives of <cuda_pipeline.h>, for the host emulation.
//
// Each thread's copies are queued in commit groups and land (are performed) only when the thread
// waits for their group with __pipeline_wait_prior, or exits; until then their destination
// reads as NaN (emu_runtime.cpp). So a kernel that reads a shared-memory stage before waiting for
// it, or before the __syncthreads that follows the other threads' waits, reads NaN whatever the
// fiber order. The size must be 4, 8 or 16 bytes and both addresses aligned to it, as on a GPU.
// What the GPU does in between (copies landing early, in any order) is not modelled: a kernel
// that is right here is right there only if it never counts on a copy landing early.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

void emu_async_copy(void* to, const void* from, size_t bytes, size_t zero_fill);
void emu_async_commit();
void emu_async_wait_prior(size_t newest_left_pending);

inline void __pipeline_memcpy_async(void* dst_shared, const void* src_global, size_t size_and_align,
                                    size_t zfill = 0) {
    emu_async_copy(dst_shared, src_global, size_and_align, zfill);
}
inline void __pipeline_commit() { emu_async_commit(); }
inline void __pipeline_wait_prior(size_t prior) { emu_async_wait_prior(prior); }
