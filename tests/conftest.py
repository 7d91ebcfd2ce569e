"""Shared fixtures. Tests use real Caffe (built by docker/build_caffe.sh into .venv)."""
import os
import sys

import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")  # keep Caffe's glog quiet in test output

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


@pytest.fixture(scope="session")
def caffe():
    """The real pycaffe module, CPU mode. Fails (never skips) when Caffe is missing."""
    import caffe as _caffe
    _caffe.set_mode_cpu()
    return _caffe


@pytest.fixture(scope="session")
def repo_root():
    return REPO


@pytest.fixture
def rng():
    return np.random.RandomState(0)
