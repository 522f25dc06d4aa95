#!/usr/bin/env bash
# Everything pyai checks on a GPU machine, in one script: build, test the GPU backends, sanitize,
# benchmark, train.
#
#   benchmarks/gpu.sh [build] [check] [test] [sanitize] [bench] [train] [quick]   (none named: all six)
#
# build:    pip install --no-build-isolation --no-deps -e . for sm_90 only (ARCHS=80;90 for both):
#           the GPU machine has no network, so the dependencies (numpy, numba, numba-cuda,
#           pytest; scikit-build-core and nanobind to build) must be installed already; tqdm,
#           pillow and scikit-learn are needed by the CLI only, and `import pyai` works without
#           them. Then `pyai warmup` compiles the numba-cpu kernels into Numba's cache in the
#           background (the float64 references of the tests live in those files), while the
#           first tests run.
# check:    every backend (numba-cpu, numba-cuda, cuda) usable here, else stop: without it the
#           GPU tests would all skip and the run would look green. Runs before test, sanitize,
#           bench and train whether named or not.
# test:     first the GPU backends' own test files (cuda backend, numba-cuda, TensorFlow's golden
#           files, bfloat16) with -x, so that a sticky CUDA error cannot hide behind later
#           failures; then every test of the suite that runs on a GPU backend (their ids name
#           cuda; the TensorFlow-only files skip where TensorFlow is missing), in parallel
#           processes (pytest-xdist, when installed)
# sanitize: compute-sanitizer memcheck and racecheck over both GPU backends' golden tests and the
#           cuda kernels on raw pointers (small inputs: the sanitizers slow kernels 10-100x)
# bench:    benchmarks/gpu_cuda.py and benchmarks/gpu_numba_cuda.py (quick: small sizes), which
#           write benchmarks/results/
# train:    benchmarks/gpu_training.py: the GPT, the GAN and the DCGAN for STEPS (300) steps on each GPU
#           backend beside PyTorch eager on the GPU (MNIST for the GAN from MNIST=folder)
# Each stage runs under a time limit (seconds: LIMIT_<stage>, e.g. LIMIT_test=240) and within
# the whole run's (TOTAL_LIMIT, default 3600: a stage gets what is left, and none starts with
# under 15 s left), its output in LOGS/<stage>.log (LOGS: $TMPDIR/pyai-gpu-logs). With OUT set
# (the GPU machine's folder of files that come back), the logs and benchmarks/results/ are packed
# into OUT/gpu-logs.tgz at the end. Stages can run one at a time (benchmarks/gpu.sh build test,
# then sanitize bench). Exits non-zero if any stage failed, after running the others.
# On a lent GPU machine, from the repository's root:
#   TOTAL_LIMIT=480 MNIST=<folder of MNIST's IDX files> bash benchmarks/gpu.sh > $OUT/gpu.log 2>&1
set -u
cd "$(dirname "$0")/.."
stages="${*:-build check test sanitize bench train}"
logs="${LOGS:-${TMPDIR:-/tmp}/pyai-gpu-logs}"
mkdir -p "$logs"
failed=""
deadline=$((SECONDS + ${TOTAL_LIMIT:-3600}))

stage() {   # stage NAME COMMAND...: run it under its time limit, log it, remember a failure
    local name=$1
    shift
    local limit_name="LIMIT_$name"
    local limit=${!limit_name:-600}
    if ((deadline - SECONDS < 15)); then
        echo "=== $name: not run, the run's time (TOTAL_LIMIT) is spent"
        failed="$failed $name(not-run)"
        return
    fi
    ((limit > deadline - SECONDS)) && limit=$((deadline - SECONDS))
    echo "=== $name (limit ${limit} s): $*"
    local start=$SECONDS
    local runner=(timeout -k 10 "$limit")
    declare -F "$1" > /dev/null && runner=()   # a shell function runs as it is
    set -o pipefail
    "${runner[@]}" "$@" 2>&1 | tee "$logs/$name.log" || failed="$failed $name"
    set +o pipefail
    echo "=== $name took $((SECONDS - start)) s"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
  nvcc --version | tail -1
  python -c "import sys, numpy, numba; print(sys.version.split()[0], 'numpy', numpy.__version__, 'numba', numba.__version__)"
  python -m pip list 2>/dev/null | grep -iE "^(numba-cuda|torch|cupy|pytest|pytest-xdist|pytest-timeout|nanobind|scikit-build-core) "
  nproc; } 2>&1 | tee "$logs/machine.log"

pack_logs() {   # into OUT/gpu-logs.tgz, where OUT is set
    if [[ -n "${OUT:-}" ]]; then
        find benchmarks/results -maxdepth 1 -type f -newer "$logs/machine.log" -exec cp {} "$logs/" \;
        tar czf "$OUT/gpu-logs.tgz" -C "$(dirname "$logs")" "$(basename "$logs")"
    fi
}

case " $stages " in *" build "*)
    stage build pip install --no-build-isolation --no-deps -e . \
        -C cmake.define.CMAKE_CUDA_ARCHITECTURES="${ARCHS:-90}" -C build.verbose=true
    python -m pyai warmup > "$logs/warmup.log" 2>&1 &
    warmup=$! ;;
esac
check_backends() {   # every backend usable, or the reasons and a failure
    python - <<'PY'
import pyai
rows = pyai.backends()
unusable = [f"{row['name']}: {row['reason']}" for row in rows if not row["usable"]]
if unusable:
    raise SystemExit("backends not usable on this machine:\n  " + "\n  ".join(unusable))
print("every backend usable:", ", ".join(row["name"] for row in rows))
PY
}
case " $stages " in *" check "*|*" test "*|*" sanitize "*|*" bench "*|*" train "*)
    stage check check_backends
    if [[ "$failed" == *check* ]]; then
        pack_logs
        echo "FAILED stages:$failed (the GPU stages did not run)"
        exit 1
    fi ;;
esac

wait_for_warmup() {
    if [[ -n "${warmup:-}" ]]; then
        wait "$warmup" || echo "pyai warmup failed: see $logs/warmup.log"
        warmup=""
    fi
}

PYTEST=(python -m pytest -q -p no:cacheprovider -r fE)
python -c "import pytest_timeout" 2>/dev/null && PYTEST+=(--timeout 300)
KERNEL_FILES=(tests/test_cuda_backend.py tests/test_numba_cuda.py tests/test_numba_cuda_conv.py tests/test_golden.py
              tests/test_bfloat16.py)
case " $stages " in *" test "*)
    stage test_first "${PYTEST[@]}" -x "${KERNEL_FILES[@]}" -k "not numba-cpu" --junitxml="$logs/test_first.xml"
    wait_for_warmup
    parallel=()
    python -c "import xdist" 2>/dev/null && parallel=(-n "${WORKERS:-8}")
    stage test "${PYTEST[@]}" "${parallel[@]}" --continue-on-collection-errors tests \
        -k "(cuda or gpu) and not emulated" --junitxml="$logs/test.xml" ;;
esac
wait_for_warmup
case " $stages " in *" sanitize "*)
    for tool in memcheck racecheck; do
        stage "$tool" compute-sanitizer --tool "$tool" --error-exitcode 1 --print-limit 20 \
            "${PYTEST[@]}" tests/test_golden.py tests/test_cuda_backend.py \
            -k "(cuda and test_backend_matches_tensorflow) or test_kernels_on_raw_pointers"
    done ;;
esac
quick=()
[[ " $stages " == *" quick "* ]] && quick=(--quick)
case " $stages " in *" bench "*)
    stage bench_cuda python benchmarks/gpu_cuda.py "${quick[@]}"
    stage bench_numba_cuda python benchmarks/gpu_numba_cuda.py "${quick[@]}" ;;
esac
case " $stages " in *" train "*)
    stage train python benchmarks/gpu_training.py --steps "${STEPS:-300}" ${MNIST:+--mnist "$MNIST"} \
        --out "$logs/training.md" ;;
esac

pack_logs
if [[ -n "$failed" ]]; then
    echo "FAILED stages:$failed"
    exit 1
fi
echo "all stages passed: $stages"
