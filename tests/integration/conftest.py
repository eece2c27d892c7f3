"""Fixtures of the integration tests."""

from __future__ import annotations

import json

import pytest

from tests.integration.smoke import SMALL, src_run


@pytest.fixture(scope="session")
def first_run(tmp_path_factory, base_model):
    state = tmp_path_factory.mktemp("state")
    summary = state.parent / f"{state.name}-summary.json"
    proc, seconds = src_run(state, f"model.base={base_model}", *SMALL, "--summary-json", str(summary))
    return {"state": state, "seconds": seconds, "stdout": proc.stdout, "stderr": proc.stderr, "base": base_model,
            "summary": json.loads(summary.read_text())}
