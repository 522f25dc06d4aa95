"""`pyai --version` and `pyai info`: what a bug report needs, as text and as JSON."""

import importlib.metadata
import subprocess
import sys
import json

import numba
import numpy as np
import pytest

import pyai
from pyai import dispatch, info, warmup
from pyai.cli import main
from pyai.kernels.numba_cpu import simd


def test_version_comes_from_the_package_metadata_else_the_module(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.strip() == f"pyai {info.version()}"

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert info.version() == pyai.__version__


def test_info_json_describes_this_machine_and_install(capsys):
    assert main(["info", "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["numpy"] == np.__version__ and described["numba"] == numba.__version__
    assert {"pyai", "python", "llvmlite", "platform"} <= set(described)
    cpu = described["cpu"]
    assert cpu["model"] == info.cpu_model() and cpu["vector_width"] == simd.WIDTH
    assert f"{simd.WIDTH}-float" in cpu["isa_description"]
    assert described["threads"] == {"layer": pyai.threading_layer(), "count": numba.get_num_threads()}
    assert described["cache_folder"] == str(warmup.cache_folder())
    rows = {row["name"]: row for row in described["backends"]}
    assert list(rows) == list(dispatch.BACKENDS) and rows["numba-cpu"]["usable"]
    for name, row in rows.items():
        assert row["reason"] == dispatch.unavailable_reason(name)
    assert isinstance(described["gpu"], (str, list))
    try:
        from pyai import _cuda  # noqa: F401
        built = True
    except ImportError:
        built = False
    assert described["cuda_extension"]["built"] == built


def test_info_prints_the_same_as_lines(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    collected = info.collect()
    assert out.splitlines() == info.describe(collected)
    assert f"numpy {np.__version__}, Numba {numba.__version__}" in out
    assert f"kernel cache: {collected['cache_folder']}" in out
    for row in collected["backends"]:
        assert f"  {row['name']}: " + ("usable" if row["usable"] else "not usable: ") in out


def test_bench_json_into_a_missing_folder_is_a_one_line_error_before_any_timing(capsys, tmp_path):
    assert main(["bench", "--json", str(tmp_path / "missing" / "run.json")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("pyai: error: --json ") and captured.err.count("\n") == 1


def test_info_piped_into_a_reader_that_leaves_early_is_quiet():
    """`pyai info | head -1` (here `| true`, a reader gone before pyai's first line): the closed
    pipe is no error of pyai's."""
    result = subprocess.run(f"{sys.executable} -m pyai info | true; echo ${{PIPESTATUS[0]}}", shell=True,
                            executable="/bin/bash", capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "0" and "error" not in result.stderr, result.stdout + result.stderr
