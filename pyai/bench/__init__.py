"""`pyai bench`: pyai's kernels beside numpy (OpenBLAS), TensorFlow and PyTorch, measured in one
run, read against this machine's measured limits. The one harness every benchmark uses:

    timing.py           best of N after a warm-up, peers interleaved (CPU); CUDA events and
                        synchronized batches (GPU)
    peaks.py            the limits: a measured FMA peak (explicit-SIMD Numba kernel) and copy
                        bandwidth on the CPU; datasheet and attribute peaks on a GPU
    peers.py            the optional peers, left out with one line when not installed
    cases.py            the cases: matmul, fused linear, leaky_relu fwd+grad, a GAN step, attention,
                        and attention inside PyTorch and Keras through pyai's adapters
    report.py           the machine header and the table; `run` is `pyai bench`, `write_json`
                        its --json
    charts.py           `--plot DIR`: the results as PNG charts (matplotlib)
    attention_sweep.py  `pyai bench --attention`, with peak memory

Each case does the same work with every peer on the same inputs and reports GFLOP/s (compute-
bound ops) or GB/s (memory-bound ops), each also as a fraction of the measured limit, and pyai's
ratio to the best peer. A machine here is shared and noisy, so only ratios measured in one run
mean anything, never an absolute time.
"""

from pyai.bench.attention_sweep import (attention_rows, attention_table, first_call_peak_bytes,
                                        fresh_process_peak_bytes, resident_peak_bytes)
from pyai.bench.cases import (Case, attention_case, attention_cases, cases, dense_flops,
                              framework_attention_cases, gan_step_case, gan_step_products,
                              leaky_relu_case, linear_case, matmul_case)
from pyai.bench.cases import conv_case, conv_cases, dcgan_step_case, layer_flops
from pyai.bench.peaks import (CpuLimits, copy_bandwidth, fma_chains, fma_flops, fma_peak,
                              gpu_attribute_peaks, gpu_datasheet_peaks, parallel_copy)
from pyai.bench.peers import installed as installed_peers
from pyai.bench.peers import missing, skipped_params
from pyai.bench.charts import plot
from pyai.bench.report import (cpu_cores, cpu_model, isa, markdown_header, markdown_row, results_path,
                               run, write_json)
from pyai.bench.timing import PAUSE_S, batched_seconds, best_time, best_times, cuda_event_ms, measure

