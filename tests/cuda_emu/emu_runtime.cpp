// The scheduler behind cuda_runtime.h: the threads of one block as fibers on this host thread.
//
// A fiber runs until it reaches a barrier or exits; then the first runnable fiber in lane order
// (or reverse order) runs, so the first threads run as far ahead of the others as the barriers
// let them. A barrier completes when every live thread of its group (the block
// for __syncthreads, the warp for a shuffle) has arrived, which makes the waiting fibers
// runnable again. Running one thread at a time up to each barrier makes a missing barrier show
// as a wrong result: a thread reads shared memory before (in one order) or after (in the other)
// the threads that should have written it first. When no fiber is runnable and some have not
// exited, the threads wait at different barriers: on a GPU that hangs, here it is counted and the
// block is abandoned.
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <deque>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace {

// Per fiber, with a guard page below it. Small, because AddressSanitizer clears the shadow of the
// whole stack at every switch; the kernels keep at most a few KiB of locals (the wmma model's
// fragments, which hold whole tiles, are the largest).
constexpr size_t STACK_BYTES = size_t(64) << 10;

// A fiber's saved registers and stack, and the switch between two of them. On x86-64 the switch
// saves the callee-saved registers (and the SSE and x87 control words) on the stack and swaps
// stack pointers: ~20 instructions, where swapcontext makes two system calls for the signal mask.
// Under AddressSanitizer, swapcontext, which ASan intercepts and is told about.
#if defined(__x86_64__) && !defined(EMU_ASAN)
struct Context {
    void* stack_pointer;
};

extern "C" void pyai_emu_switch(void** save, void* next);
asm(R"(
    .text
    .globl pyai_emu_switch
    .hidden pyai_emu_switch
    .type pyai_emu_switch, @function
pyai_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size pyai_emu_switch, .-pyai_emu_switch
)");

// A stack that the first switch to "returns" into entry(), as if called (entry never returns).
void start_context(Context& context, char* stack, size_t size, void (*entry)()) {
    auto top = reinterpret_cast<uintptr_t>(stack + size) & ~uintptr_t(15);
    // control words, 6 registers, entry, a null return address: entry starts with its stack
    // pointer 8 past a 16-byte boundary, as after a call
    auto* slots = reinterpret_cast<uint64_t*>(top) - 11;
    uint32_t mxcsr;
    uint16_t fpu_control;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpu_control));
    slots[0] = mxcsr | (uint64_t(fpu_control) << 32);
    for (int i = 1; i <= 6; i++) slots[i] = 0;  // r15 r14 r13 r12 rbx rbp
    slots[7] = reinterpret_cast<uint64_t>(entry);
    slots[8] = 0;  // where entry's return address would be
    context.stack_pointer = slots;
}

void switch_context(Context& from, Context& to) { pyai_emu_switch(&from.stack_pointer, to.stack_pointer); }
#else
struct Context {
    ucontext_t context;
};

void start_context(Context& context, char* stack, size_t size, void (*entry)()) {
    getcontext(&context.context);
    context.context.uc_stack.ss_sp = stack;
    context.context.uc_stack.ss_size = size;
    context.context.uc_link = nullptr;
    makecontext(&context.context, entry, 0);
}

void switch_context(Context& from, Context& to) { swapcontext(&from.context, &to.context); }
#endif

enum State { RUNNABLE, AT_BLOCK_BARRIER, AT_WARP_BARRIER, DONE };

// A cp.async copy a thread has issued and that has not landed yet (see cuda_pipeline.h).
struct AsyncCopy {
    void* to;
    const void* from;
    size_t bytes, zero_fill;
};

using AsyncGroup = std::vector<AsyncCopy>;

struct Fiber {
    Context context;
    State state;
    uint3 index;
    AsyncGroup uncommitted;          // issued since the thread's last __pipeline_commit
    std::deque<AsyncGroup> pending;  // committed groups, oldest first, not yet waited for
};

struct Group {  // the live threads of a block or a warp, and how many wait at its barrier
    unsigned alive = 0, arrived = 0, exited = 0;
};

struct Counters {
    long misaligned = 0, wmma = 0, async_copy = 0, shuffle_after_exit = 0, barrier_after_exit = 0, divergent_barrier = 0, deadlock = 0,
         invalid_launch = 0;
};

std::mutex launch_mutex;
std::vector<char*> stacks;  // reused across launches
std::vector<Fiber> fibers;
Group block_group;
std::vector<Group> warp_groups;
std::vector<double> warp_slots;
unsigned current = 0;
Context scheduler;
const std::function<void()>* kernel_body = nullptr;
bool reverse_order = false;
bool released = false;  // a barrier completed since the scheduler last looked
const char* barrier_file = "";  // where the first thread of this phase met the block barrier
int barrier_line = 0;
Counters counters;
cudaError_t last_error = cudaSuccess;
#ifdef EMU_ASAN
void* scheduler_fake_stack = nullptr;
const void* scheduler_stack_bottom = nullptr;
size_t scheduler_stack_size = 0;
#endif

char* stack_of(unsigned i) {
    while (stacks.size() <= i) {
        size_t page = size_t(sysconf(_SC_PAGESIZE));
        void* p = mmap(nullptr, STACK_BYTES + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
        if (p == MAP_FAILED) throw std::runtime_error("emulator: no memory for fiber stacks");
        mprotect(p, page, PROT_NONE);  // a stack overflow faults instead of corrupting a neighbour
        stacks.push_back(static_cast<char*>(p) + page);
    }
    return stacks[i];
}

// Switches between the scheduler and fibers, told to AddressSanitizer (which keeps its own record
// of the stack in use): a switch starts on one stack and finishes on the other.
void to_scheduler(bool exiting = false) {  // from a fiber
#ifdef EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(exiting ? nullptr : &fake, scheduler_stack_bottom, scheduler_stack_size);
    switch_context(fibers[current].context, scheduler);
    __sanitizer_finish_switch_fiber(fake, &scheduler_stack_bottom, &scheduler_stack_size);
#else
    (void)exiting;
    switch_context(fibers[current].context, scheduler);
#endif
}

void fiber_started() {
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &scheduler_stack_bottom, &scheduler_stack_size);
#endif
}

void to_fiber(unsigned i) {  // from the scheduler
    current = i;
    threadIdx = fibers[i].index;
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(&scheduler_fake_stack, stack_of(i), STACK_BYTES);
    switch_context(scheduler, fibers[i].context);
    __sanitizer_finish_switch_fiber(scheduler_fake_stack, nullptr, nullptr);
#else
    switch_context(scheduler, fibers[i].context);
#endif
}

unsigned warp_of(unsigned i) { return i / 32; }

// Wakes the group's waiters once every live member has arrived.
void release_if_complete(Group& group, State waiting, unsigned first, unsigned end) {
    if (group.arrived == 0 || group.arrived < group.alive) return;
    group.arrived = 0;
    for (unsigned i = first; i < end; i++) {
        if (fibers[i].state == waiting) fibers[i].state = RUNNABLE;
    }
    released = true;
}

void release_block_if_complete() { release_if_complete(block_group, AT_BLOCK_BARRIER, 0, unsigned(fibers.size())); }

void release_warp_if_complete(unsigned warp) {
    unsigned end = std::min<unsigned>(unsigned(fibers.size()), 32 * (warp + 1));
    release_if_complete(warp_groups[warp], AT_WARP_BARRIER, 32 * warp, end);
}

void wait_at(Group& group, State state) {
    group.arrived++;
    fibers[current].state = state;
    if (state == AT_BLOCK_BARRIER) release_block_if_complete();
    else release_warp_if_complete(warp_of(current));
    if (fibers[current].state != RUNNABLE) to_scheduler();
}

void land(const AsyncGroup& group) {
    for (const AsyncCopy& copy : group) {
        memcpy(copy.to, copy.from, copy.bytes - copy.zero_fill);
        memset(static_cast<char*>(copy.to) + copy.bytes - copy.zero_fill, 0, copy.zero_fill);
    }
}

// A thread's copies land when it waits for them, or else when it exits (as on a GPU, where
// they complete whether or not anyone waits).
void land_all(Fiber& fiber) {
    for (const AsyncGroup& group : fiber.pending) land(group);
    land(fiber.uncommitted);
    fiber.pending.clear();
    fiber.uncommitted.clear();
}

void fiber_main() {
    fiber_started();
    (*kernel_body)();
    land_all(fibers[current]);
    fibers[current].state = DONE;
    block_group.alive--, block_group.exited++;
    Group& warp = warp_groups[warp_of(current)];
    warp.alive--, warp.exited++;
    release_block_if_complete();
    release_warp_if_complete(warp_of(current));
    to_scheduler(true);  // never resumed
}

void run_block(const EmuConfig& config, unsigned threads) {
    fibers.assign(threads, Fiber{});
    block_group = Group{threads, 0, 0};
    warp_groups.assign((threads + 31) / 32, Group{});
    for (unsigned w = 0; w < warp_groups.size(); w++) warp_groups[w].alive = std::min(32u, threads - 32 * w);
    warp_slots.assign(32 * warp_groups.size(), 0.0);
    for (unsigned t = 0; t < threads; t++) {
        Fiber& fiber = fibers[t];
        unsigned x = config.block.x, y = config.block.y;
        fiber.index = {t % x, (t / x) % y, t / (x * y)};
        fiber.state = RUNNABLE;
        start_context(fiber.context, stack_of(t), STACK_BYTES, fiber_main);
    }
    // Always the first runnable thread in the order: a thread (and its warp, once a shuffle
    // releases it) runs as far ahead of the later ones as the barriers allow.
    unsigned done = 0, first = 0;  // no thread before `first` (in the order) is runnable
    while (done < threads) {
        unsigned k = first;
        while (k < threads && fibers[reverse_order ? threads - 1 - k : k].state != RUNNABLE) k++;
        if (k == threads) {
            counters.deadlock++;
            fprintf(stderr, "EMU: block (%u,%u,%u): threads wait at different barriers (a hang on a GPU)\n",
                    blockIdx.x, blockIdx.y, blockIdx.z);
            return;
        }
        unsigned t = reverse_order ? threads - 1 - k : k;
        to_fiber(t);
        if (fibers[t].state == DONE) done++;
        first = released ? 0 : k;  // a barrier that completed may have made earlier threads runnable
        released = false;
    }
}

bool valid(const EmuConfig& c) {
    unsigned long threads = (unsigned long)c.block.x * c.block.y * c.block.z;
    return c.grid.x >= 1 && c.grid.y >= 1 && c.grid.z >= 1 && c.grid.x <= 2147483647u && c.grid.y <= 65535 &&
           c.grid.z <= 65535 && c.block.x >= 1 && c.block.y >= 1 && c.block.z >= 1 && c.block.x <= 1024 &&
           c.block.y <= 1024 && c.block.z <= 64 && threads <= 1024 && c.shared_bytes == 0;
}

}  // namespace

void emu_run_grid(const EmuConfig& config, const std::function<void()>& kernel) {
    std::lock_guard<std::mutex> lock(launch_mutex);
    if (!valid(config)) {
        counters.invalid_launch++;
        last_error = cudaErrorInvalidConfiguration;
        fprintf(stderr, "EMU: invalid launch: grid (%u,%u,%u), block (%u,%u,%u), %zu bytes of dynamic shared memory\n",
                config.grid.x, config.grid.y, config.grid.z, config.block.x, config.block.y, config.block.z,
                config.shared_bytes);
        return;
    }
    kernel_body = &kernel;
    blockDim = config.block;
    gridDim = config.grid;
    unsigned threads = config.block.x * config.block.y * config.block.z;
    for (unsigned z = 0; z < config.grid.z; z++)
        for (unsigned y = 0; y < config.grid.y; y++)
            for (unsigned x = 0; x < config.grid.x; x++) {
                blockIdx = {x, y, z};
                run_block(config, threads);
            }
    kernel_body = nullptr;
}

void emu_syncthreads(const char* file, int line) {
    if (block_group.exited) counters.barrier_after_exit++;
    if (block_group.arrived == 0) {
        barrier_file = file, barrier_line = line;
    } else if (line != barrier_line || strcmp(file, barrier_file) != 0) {
        if (counters.divergent_barrier++ == 0)
            fprintf(stderr, "EMU: threads of one block at %s:%d and %s:%d\n", barrier_file, barrier_line, file, line);
    }
    wait_at(block_group, AT_BLOCK_BARRIER);
}

void emu_warp_barrier() { wait_at(warp_groups[warp_of(current)], AT_WARP_BARRIER); }

double* emu_warp_slots() {
    unsigned warp = warp_of(current);
    if (warp_groups[warp].exited) counters.shuffle_after_exit++;
    return &warp_slots[32 * warp];
}

int emu_lane() { return int(current % 32); }

void emu_note_wmma_fault(const char* what, const void* pointer, unsigned ldm) {
    if (counters.wmma++ < 5) fprintf(stderr, "EMU: wmma load/store: %s (pointer %p, ldm %u)\n", what, pointer, ldm);
}

// cp.async (cuda_pipeline.h): the destination's bytes are undefined from the issue until the
// copy lands, here NaN (all bits set) the whole time; the copy lands only when the issuing thread
// waits for its group (__pipeline_wait_prior) or exits, the latest a GPU allows. So a thread
// that reads a stage before its own wait, or before the barrier after the other threads' waits,
// reads NaN in every fiber order.
void emu_async_copy(void* to, const void* from, size_t bytes, size_t zero_fill) {
    bool size_ok = (bytes == 4 || bytes == 8 || bytes == 16) && zero_fill <= bytes;
    if (!size_ok || reinterpret_cast<uintptr_t>(to) % bytes || reinterpret_cast<uintptr_t>(from) % bytes) {
        if (counters.async_copy++ < 5)
            fprintf(stderr, "EMU: cp.async of %zu bytes from %p to %p: a size other than 4, 8, 16 or misaligned\n",
                    bytes, from, to);
        return;
    }
    memset(to, 0xFF, bytes);
    fibers[current].uncommitted.push_back({to, from, bytes, zero_fill});
}

void emu_async_commit() {
    Fiber& fiber = fibers[current];
    fiber.pending.push_back(std::move(fiber.uncommitted));
    fiber.uncommitted.clear();
}

void emu_async_wait_prior(size_t newest_left_pending) {
    Fiber& fiber = fibers[current];
    while (fiber.pending.size() > newest_left_pending) {
        land(fiber.pending.front());
        fiber.pending.pop_front();
    }
}

void emu_note_misaligned(const void* p) {
    if (counters.misaligned++ < 5) fprintf(stderr, "EMU: misaligned float4 access at %p\n", p);
}

const char* cudaGetErrorString(cudaError_t error) {
    return error == cudaErrorInvalidConfiguration ? "invalid configuration argument (emulated)" : "no error";
}

cudaError_t cudaGetLastError() {
    cudaError_t error = last_error;
    last_error = cudaSuccess;
    return error;
}

// What went wrong since the last call, as one sentence ("" if nothing), and the counters reset.
std::string emu_take_faults() {
    std::string faults;
    auto add = [&](long count, const char* what) {
        if (count) faults += (faults.empty() ? "" : "; ") + std::to_string(count) + " " + what;
    };
    add(counters.barrier_after_exit, "__syncthreads reached after a thread of the block exited");
    add(counters.shuffle_after_exit, "shuffles reached after a lane of the warp exited");
    add(counters.divergent_barrier, "__syncthreads reached at different places by threads of one block");
    add(counters.deadlock, "blocks whose threads waited at different barriers");
    add(counters.misaligned, "misaligned float4 accesses");
    add(counters.wmma, "wmma loads or stores with a misaligned pointer or leading dimension");
    add(counters.async_copy, "cp.async copies of a bad size or misaligned");
    add(counters.invalid_launch, "invalid launches");
    counters = Counters{};
    return faults;
}

void emu_set_reverse(bool reverse) { reverse_order = reverse; }
