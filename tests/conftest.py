"""Fixtures: the embedded local stack for the session, and the test data in ``tests/data``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

#: the test fixtures shipped with the project (``PROVENANCE.md`` there says where each comes from)
TEST_DATA = Path(__file__).resolve().parent / "data"


@dataclass
class LocalStack:
    """The running local stack: its workspace and each service's status."""

    workspace: Path
    services: dict[str, dict[str, Any]] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return self.services[name]["url"]


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The local stack started in a temporary workspace (``NITRONB_WORKSPACE`` points at it)."""
    from nitronb import local

    workspace = tmp_path_factory.mktemp("workspace")
    patch = pytest.MonkeyPatch()
    patch.setenv("NITRONB_WORKSPACE", str(workspace))
    try:
        yield LocalStack(workspace, local.up(workspace))
    finally:
        local.down(workspace)
        patch.undo()


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The folder of test fixtures (``tests/data``): real Nitro documents and the AWS root."""
    return TEST_DATA
