"""Unit tests import the collection as ansible_collections.rtmx.ha (via the .collections link)."""

import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))
FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture
def recorded():
    """Load a recorded REST/Redis response from tests/unit/fixtures."""

    def load(name):
        return json.loads((FIXTURES / name).read_text())

    return load
