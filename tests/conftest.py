"""Session-wide environment for every test and every process the tests start.

The generated corpus is built once per test session into a temporary cache (never the user's own cache),
and each trainer process uses one thread: the suite runs several processes at once on two cores, where
oversubscribed OpenMP threads make CPU training many times slower.
"""
import os
import tempfile

import pytest

_CACHE = tempfile.TemporaryDirectory(prefix="gpt-sweep-test-cache-")
os.environ["GPT_SWEEP_CACHE"] = _CACHE.name
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def corpus_cache() -> str:
    return _CACHE.name
