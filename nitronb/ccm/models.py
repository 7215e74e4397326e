"""The manager's state: one dataclass per kind of object, as stored and as served (minus secrets)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, ClassVar


def utc_now() -> str:
    """Now, as ISO 8601 UTC with seconds (the time format of every record's ``*_at`` field)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

#: the four parties of the walk-through, created on a workspace's first start
PARTIES = ("data-owner", "output-owner", "app-owner", "admin")
ROLE_ADMIN = "admin"
ROLE_USER = "user"

TASK_DOMAIN = "DOMAIN_WHITELIST"
TASK_BUILD = "BUILD_WHITELIST"
PENDING, APPROVED, DENIED = "PENDING", "APPROVED", "DENIED"
#: an approval withdrawn by an approver (a workflow version) or the administrator (a task)
REVOKED = "REVOKED"
#: an approved workflow version after a newer version of the same draft was approved
SUPERSEDED = "SUPERSEDED"

#: what a dataset response shows in place of its credentials
REDACTED = "<redacted>"


@dataclass
class Record:
    """Common fields: a random id, the owning user's name and the creation time (ISO 8601 UTC)."""

    kind: ClassVar[str] = "record"
    id: str
    owner: str
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON form served by the API."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Record":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class User(Record):
    kind: ClassVar[str] = "user"
    name: str = ""
    roles: list[str] = field(default_factory=list)

    @property
    def is_admin(self) -> bool:
        return ROLE_ADMIN in self.roles


@dataclass
class Dataset(Record):
    """A dataset (DESIGN §2.4); its credentials live encrypted beside it, never in this record."""

    kind: ClassVar[str] = "dataset"
    name: str = ""
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    location: str = ""
    long_description: str = ""
    credentials: Any = REDACTED


@dataclass
class App(Record):
    kind: ClassVar[str] = "app"
    name: str = ""
    image: str = ""
    domain: str = ""
    description: str = ""
    domain_task_id: str = ""


@dataclass
class Build(Record):
    kind: ClassVar[str] = "build"
    app_id: str = ""
    image: str = ""
    measurements: dict[str, str] = field(default_factory=dict)
    task_id: str = ""


@dataclass
class Task(Record):
    """A whitelisting task an administrator approves or denies, and may later revoke
    (``status`` REVOKED, with ``revoked_by``, ``revoked_at`` and ``revoke_reason``)."""

    kind: ClassVar[str] = "task"
    task_type: str = ""
    app_id: str = ""
    build_id: str | None = None
    status: str = PENDING
    decided_by: str | None = None
    decided_at: str | None = None
    reason: str | None = None
    revoked_by: str | None = None
    revoked_at: str | None = None
    revoke_reason: str | None = None


@dataclass
class AppConfig(Record):
    """An application configuration; ``ports`` maps each port name to ``"in"`` or ``"out"``."""

    kind: ClassVar[str] = "app_config"
    name: str = ""
    description: str = ""
    image: str = ""
    app_id: str = ""
    build_id: str = ""
    ports: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    config_items: dict[str, str] = field(default_factory=dict)


@dataclass
class Workflow(Record):
    """A draft graph; ``version`` grows each time a changed draft is submitted again."""

    kind: ClassVar[str] = "workflow"
    name: str = ""
    description: str = ""
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: list[dict[str, Any]] = field(default_factory=list)
    version: int = 1
    updated_at: str = ""
    submitted_version: int | None = None


@dataclass
class FinalWorkflow(Record):
    """An immutable version of a draft, with its approval state and, once approved, its configs.

    ``status`` is PENDING, APPROVED, DENIED, REVOKED (an approver withdrew its approval:
    ``revoked_by``, ``revoked_at``, ``revoke_reason``) or SUPERSEDED (a newer version of the
    draft was approved: ``superseded_by`` is its version number)."""

    kind: ClassVar[str] = "final_workflow"
    draft_id: str = ""
    version: int = 1
    name: str = ""
    description: str = ""
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: list[dict[str, Any]] = field(default_factory=list)
    status: str = PENDING
    approval_request_id: str = ""
    app_config_ids: dict[str, str] = field(default_factory=dict)
    revoked_by: str | None = None
    revoked_at: str | None = None
    revoke_reason: str | None = None
    superseded_by: int | None = None


@dataclass
class ApprovalRequest(Record):
    """Every approver must approve; one decline (with its reason) denies."""

    kind: ClassVar[str] = "approval_request"
    workflow_id: str = ""
    draft_id: str = ""
    status: str = PENDING
    approvers: list[str] = field(default_factory=list)
    approvals: dict[str, str] = field(default_factory=dict)
    denied_by: str | None = None
    reason: str | None = None
    decided_at: str | None = None


KINDS: dict[str, type[Record]] = {
    cls.kind: cls for cls in (User, Dataset, App, Build, Task, AppConfig, Workflow,
                              FinalWorkflow, ApprovalRequest)
}
