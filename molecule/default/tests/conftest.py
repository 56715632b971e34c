"""Shared helpers for the whole-stack testinfra tests."""

import os
import pathlib

import pytest

PROJECT_DIR = pathlib.Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", pathlib.Path(__file__).parents[3]))


@pytest.fixture(scope="session")
def project_dir() -> pathlib.Path:
    return PROJECT_DIR
