"""pytest-benchmark's machine description, with what `pyai info` collects added under "pyai", so
that `pytest benchmarks --benchmark-json FILE` from two machines can be compared."""


def pytest_benchmark_update_machine_info(config, machine_info):
    from pyai import info
    machine_info["pyai"] = info.collect()
