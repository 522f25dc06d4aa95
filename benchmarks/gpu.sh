#!/usr/bin/env bash
# Everything pyai checks on a GPU machine, in one script: build, test on the cuda backend,
# sanitize, benchmark.
#
#   benchmarks/gpu.sh [build] [check] [test] [sanitize] [bench] [quick]    (none named: all five)
#
# build:    pip install --no-build-isolation --no-deps -e . for sm_90 only (ARCHS=80;90 for both):
#           the GPU machine has no network, so the dependencies (numpy, numba, tbb, pytest;
#           scikit-build-core and nanobind to build) must be installed already; tqdm, pillow and
#           scikit-learn are needed by the CLI only, and `import pyai` works without them
# check:    every backend (numba-cpu, numba-cuda, cuda) usable here, else stop: without it the
#           GPU tests would all skip and the run would look green. Runs before test, sanitize
#           and bench whether named or not.
# test:     the whole suite, every usable backend (cuda among them); test files that import
#           TensorFlow fail to collect where it is missing and are reported, not fatal
# sanitize: compute-sanitizer memcheck and racecheck over the cuda backend's golden and
#           backend tests (small inputs: the sanitizers slow kernels 10-100x)
# bench:    benchmarks/gpu_cuda.py (quick: small sizes), writing benchmarks/results/
# Stages can run one at a time (benchmarks/gpu.sh build test, then sanitize bench).
# Exits non-zero if any stage failed, after running the others.
set -u
cd "$(dirname "$0")/.."
stages="${*:-build check test sanitize bench}"
failed=""

stage() {   # stage NAME COMMAND...: run it, time it, remember a failure
    local name=$1
    shift
    echo "=== $name: $*"
    local start=$SECONDS
    "$@" || failed="$failed $name"
    echo "=== $name took $((SECONDS - start)) s"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
nvcc --version | tail -1

CUDA_SELECTION=(tests/test_cuda_backend.py "tests/test_golden.py::test_backend_matches_tensorflow")
case " $stages " in *" build "*)
    stage build pip install --no-build-isolation --no-deps -e . \
        -C cmake.define.CMAKE_CUDA_ARCHITECTURES="${ARCHS:-90}" -C build.verbose=true ;;
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
case " $stages " in *" check "*|*" test "*|*" sanitize "*|*" bench "*)
    stage check check_backends
    if [[ "$failed" == *check* ]]; then
        echo "FAILED stages:$failed (the GPU stages did not run)"
        exit 1
    fi ;;
esac
case " $stages " in *" test "*)
    stage test python -m pytest -q -p no:cacheprovider --continue-on-collection-errors tests ;;
esac
case " $stages " in *" sanitize "*)
    for tool in memcheck racecheck; do
        stage "$tool" compute-sanitizer --tool "$tool" --error-exitcode 1 --print-limit 20 \
            python -m pytest -q -p no:cacheprovider -x "${CUDA_SELECTION[@]}" -k "not numba"
    done ;;
esac
case " $stages " in *" bench "*)
    if [[ " $stages " == *" quick "* ]]; then
        stage bench python benchmarks/gpu_cuda.py --quick
    else
        stage bench python benchmarks/gpu_cuda.py
    fi ;;
esac

if [[ -n "$failed" ]]; then
    echo "FAILED stages:$failed"
    exit 1
fi
echo "all stages passed: $stages"
