"""What the GPU machine's script (benchmarks/gpu.sh) relies on: `import pyai` without the
packages only the CLI needs (the machine installs with --no-deps and has no network), and a
`check` stage that fails, naming each reason, unless every backend is usable, so that a run
whose GPU tests would all skip cannot report success."""

import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import pyai

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLI_ONLY = ("tqdm", "PIL", "sklearn", "matplotlib")


def test_import_pyai_and_run_an_op_without_the_cli_only_packages():
    code = textwrap.dedent(f"""
        import sys
        for name in {CLI_ONLY!r}:
            sys.modules[name] = None   # an import of it raises ImportError
        import numpy as np
        import pyai
        print(pyai.ops.matmul(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32)).sum())
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == "12.0"


def test_gpu_script_check_stage_fails_unless_every_backend_is_usable():
    unusable = [row for row in pyai.backends() if not row["usable"]]
    environment = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "check"], capture_output=True,
                            text=True, cwd=ROOT, env=environment, timeout=300)
    output = result.stdout + result.stderr
    if unusable:
        assert result.returncode != 0, output
        assert "FAILED stages: check (the GPU stages did not run)" in output, output
        for row in unusable:
            assert f"{row['name']}: {row['reason']}" in output, output
    else:
        assert "every backend usable" in output, output


def gpu_benchmark():
    """benchmarks/gpu_cuda.py as a module (it needs torch; pyai._cuda only once main runs)."""
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("gpu_cuda", ROOT / "benchmarks" / "gpu_cuda.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def untimed_gpu_benchmark(kernels, monkeypatch):
    """(gpu_benchmark() with `kernels`, the emulated build, standing in for pyai._cuda and each
    time_ms call running its function once untimed, the list of what those calls returned)."""
    benchmark = gpu_benchmark()
    monkeypatch.setattr(benchmark, "_cuda", kernels)
    calls = []
    monkeypatch.setattr(benchmark, "time_ms", lambda function: calls.append(function()) or 1.0)
    return benchmark, calls


def test_gpu_benchmark_imports_and_takes_its_arguments():
    import torch
    module = gpu_benchmark()
    arguments = module.parse_arguments(["--quick", "--only", "attention", "--only", "memory"])
    assert arguments.quick and arguments.only == ["attention", "memory"]
    assert module.parse_arguments([]).only is None
    with pytest.raises(SystemExit):
        module.parse_arguments(["--only", "fft"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="needs a CUDA GPU"):
            module.main(["--quick"])
