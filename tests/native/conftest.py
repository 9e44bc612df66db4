"""Every native test starts and ends with heaptrace and the standard module
stopped."""
import tracemalloc

import pytest

import heaptrace


@pytest.fixture(autouse=True)
def stopped():
    heaptrace.stop()
    tracemalloc.stop()
    yield
    heaptrace.stop()
    tracemalloc.stop()
