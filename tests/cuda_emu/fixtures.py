"""The emulated build as pytest fixtures, loaded for the whole suite by tests/conftest.py
(`pytest_plugins`): `kernels`, the kernels of cuda_src/ built for the host and loaded, once a
module; `order`, a test run twice, its threads in lane order and in reverse (README: a missing
barrier then shows as a wrong result in one of the two, every time)."""

import pytest

from cuda_emu import harness

ORDERS = ("lane-order", "reverse-order")


@pytest.fixture(scope="module")
def kernels():
    return harness.emulator()


@pytest.fixture(params=ORDERS)
def order(request, kernels):
    kernels.set_reverse(request.param == "reverse-order")
    yield request.param
    kernels.set_reverse(False)
