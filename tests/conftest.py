"""Fixtures: the embedded local stack for the session, and the test data in ``tests/data``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

#: the test fixtures shipped with the project (``PROVENANCE.md`` there says where each comes from)
TEST_DATA = Path(__file__).resolve().parent / "data"


def _fuzz_profiles() -> None:
    """Hypothesis settings for the fuzz tests (``tests/**/test_fuzz_*.py``): ``ci`` (default) is
    reproducible and a few hundred cases per target; ``HYPOTHESIS_PROFILE=long`` runs many more,
    randomly."""
    import os

    from hypothesis import HealthCheck, settings

    lenient = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
               HealthCheck.function_scoped_fixture]
    settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True,
                              database=None, suppress_health_check=lenient, print_blob=True)
    settings.register_profile("long", max_examples=5000, deadline=None, database=None,
                              suppress_health_check=lenient, print_blob=True)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


_fuzz_profiles()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--database", choices=("sqlite", "postgresql"), default="sqlite",
                     help="the manager's database in tests/ccm (default sqlite); postgresql uses "
                          "$NITRONB_TEST_DATABASE_URL or a private cluster (tests/pg_cluster.py)")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The admin URL of a PostgreSQL server for the tests (``tests/pg_cluster.py``); skips with
    the reason when there is none (fails instead when ``$NITRONB_TEST_REQUIRE_POSTGRESQL`` is
    set, as in CI)."""
    import os

    import pg_cluster

    try:
        url, cluster = pg_cluster.admin_url()
    except pg_cluster.Unavailable as exc:
        if os.environ.get("NITRONB_TEST_REQUIRE_POSTGRESQL"):
            pytest.fail(f"PostgreSQL is required here: {exc}")
        pytest.skip(str(exc))
    try:
        yield url
    finally:
        if cluster is not None:
            cluster.stop()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    import pg_cluster

    url = pg_cluster.create_database(postgres_server)
    try:
        yield url
    finally:
        pg_cluster.drop_database(postgres_server, url)


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
    from nitronb.local import stack as local

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


@pytest.fixture
def s3_only_workspace(monkeypatch, tmp_path):
    """A workspace whose stack runs the S3 endpoint only; stopped at the end whatever happens."""
    from nitronb.local import stack as local

    monkeypatch.setattr(local, "SERVICES", {"s3": local.SERVICES["s3"]})
    ws = tmp_path / "ws"
    monkeypatch.setenv("NITRONB_WORKSPACE", str(ws))
    local.up(ws)
    yield ws
    local.down(ws)
