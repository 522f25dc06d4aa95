"""`pyai info`: what a bug report needs to know about this machine and this install.

    collect()    {pyai, python, numpy, numba, llvmlite versions, platform, cpu (model, cores, the
                 vector ISA pyai's kernels use), threads (layer, count), cache folder, backends
                 (usable or why not), gpu (name and driver, via nvidia-smi), cuda_extension}
    describe(d)  the same as lines of text

`pyai bench --json` puts `collect()` beside its results, so that runs on two machines compare.
"""

import importlib.metadata
import os
import platform
import shutil
import subprocess

import llvmlite
import llvmlite.binding
import numba
import numpy as np

ISA_FLAGS = ("avx512f", "avx2", "fma")


def version():
    """pyai's version: the installed package's metadata, else pyai.__version__."""
    try:
        return importlib.metadata.version("pyai")
    except importlib.metadata.PackageNotFoundError:
        import pyai
        return pyai.__version__


def cpuinfo_fields(name):
    try:
        with open("/proc/cpuinfo") as lines:
            return [line.split(":", 1)[1].strip() for line in lines
                    if line.split(":", 1)[0].strip() == name]
    except OSError:
        return []


def cpu_model():
    """The CPU's marketing name: /proc/cpuinfo's "model name", else what platform knows."""
    return next(iter(cpuinfo_fields("model name")), None) or platform.processor() or "unknown CPU"


def cpu_cores():
    """(physical cores, hardware threads, threads this process may use)."""
    threads = os.cpu_count() or 1
    pairs = set(zip(cpuinfo_fields("physical id"), cpuinfo_fields("core id")))
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else threads
    return len(pairs) or threads, threads, usable


def isa_flags():
    features = numba.config.CPU_FEATURES or llvmlite.binding.get_host_cpu_features().flatten()
    return [flag for flag in ISA_FLAGS if f"+{flag}" in features.split(",")]


def isa():
    """The vector ISA as pyai's kernels use it: the width of simd.py's vectors and the flags."""
    from pyai.kernels.numba_cpu.simd import WIDTH
    return f"{WIDTH}-float ({32 * WIDTH}-bit) vectors; {', '.join(isa_flags()) or 'no avx2 or avx512f'}"


def cpu_family_model():
    family, model = (next(iter(cpuinfo_fields(name)), None) for name in ("cpu family", "model"))
    return None if family is None else f"family {family} model {model}"


def gpu():
    """[{name, driver, memory}] from nvidia-smi, or a string saying why there is none."""
    command = shutil.which("nvidia-smi")
    if command is None:
        return "no NVIDIA driver found (nvidia-smi is not on PATH)"
    try:
        result = subprocess.run([command, "--query-gpu=name,driver_version,memory.total",
                                 "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"nvidia-smi failed: {error}"
    if result.returncode != 0:
        return f"nvidia-smi failed: {' '.join(result.stderr.split()) or result.returncode}"
    fields = [[field.strip() for field in line.split(",")] for line in result.stdout.strip().splitlines()]
    return [dict(zip(("name", "driver", "memory"), row)) for row in fields if len(row) == 3]


def cuda_extension():
    """Whether pyai._cuda (the CUDA C++ kernels) was built at install, and if not why."""
    try:
        from pyai import _cuda   # noqa: F401
    except ImportError as error:
        return {"built": False, "reason": str(error)}
    return {"built": True, "reason": None}


def collect():
    """The machine and the install, as a JSON-ready dict."""
    from pyai import dispatch, threads, warmup
    from pyai.kernels.numba_cpu.simd import WIDTH
    cores, hardware_threads, usable = cpu_cores()
    folder = warmup.cache_folder()
    return {
        "pyai": version(), "python": platform.python_version(), "numpy": np.__version__,
        "numba": numba.__version__, "llvmlite": llvmlite.__version__, "platform": platform.platform(),
        "cpu": {"model": cpu_model(), "id": cpu_family_model(), "cores": cores,
                "hardware_threads": hardware_threads, "usable_threads": usable,
                "vector_width": WIDTH, "isa": isa_flags(), "isa_description": isa()},
        "threads": {"layer": threads.layer(), "count": numba.get_num_threads()},
        "cache_folder": None if folder is None else str(folder),
        "backends": [{"name": row["name"], "usable": row["usable"], "reason": row["reason"]}
                     for row in dispatch.backends()],
        "gpu": gpu(),
        "cuda_extension": cuda_extension(),
    }


def describe(info):
    """`collect()`'s dict as the lines `pyai info` prints."""
    cpu, threads = info["cpu"], info["threads"]
    lines = [f"pyai {info['pyai']}", f"Python {info['python']} on {info['platform']}",
             f"numpy {info['numpy']}, Numba {info['numba']}, llvmlite {info['llvmlite']}",
             f"CPU: {cpu['model']}" + (f" ({cpu['id']})" if cpu["id"] else "") +
             f"; {cpu['cores']} cores, {cpu['hardware_threads']} hardware threads, "
             f"{cpu['usable_threads']} usable here",
             f"ISA pyai's kernels use: {cpu['isa_description']}",
             f"threads: Numba's {threads['layer']} layer, {threads['count']} threads",
             f"kernel cache: {info['cache_folder'] or 'none writable: kernels compile in every process'}",
             "backends:"]
    lines += [f"  {row['name']}: " + ("usable" if row["usable"] else f"not usable: {row['reason']}")
              for row in info["backends"]]
    gpus = info["gpu"]
    lines.append("GPU: " + (gpus if isinstance(gpus, str) else
                            "; ".join(f"{g['name']} (driver {g['driver']}, {g['memory']})" for g in gpus)
                            or "none listed by nvidia-smi"))
    extension = info["cuda_extension"]
    lines.append("CUDA extension pyai._cuda: " + ("built" if extension["built"] else
                                                   f"not built ({extension['reason']})"))
    return lines
