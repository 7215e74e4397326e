"""Need to know: which of the manager's objects a user may see.

An administrator sees everything. Any other user sees what it owns and what belongs to the
workflows it is party to. A user is party to a workflow (a draft and its final versions) when it
owns the draft or a version, owns an object of the draft's graph or of a version's graph (a
dataset, an application configuration or its app), or is an approver of a version. It then sees
the draft, its versions and their approval requests and runtime configurations, the datasets
and application configurations of their graphs, the apps and builds of those configurations and
the whitelisting tasks of those apps and builds. Audit rows are seen when their object is seen,
or when the user acted.

An object a user may not see is answered as if it did not exist (404), so that its existence
is not revealed either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from nitronb.ccm.models import User
    from nitronb.ccm.store import Store


@dataclass
class Scope:
    """The ids a user may see, by kind (``"dataset"``, ``"final_workflow"``, ``"runtime_config"``
    …); ``everything`` for an administrator."""

    user: str
    everything: bool = False
    ids: dict[str, set[str]] = field(default_factory=dict)

    def sees(self, kind: str, record_id: Any) -> bool:
        return self.everything or record_id in self.ids.get(kind, ())

    def only(self, kind: str, records: Iterable[Any]) -> list[Any]:
        """The records of ``kind`` (objects with an ``id``) this scope sees, in their order."""
        return [r for r in records if self.sees(kind, r.id)]

    def all_ids(self) -> set[str]:
        return set().union(*self.ids.values()) if self.ids else set()


def _objects_owners(objects: dict[str, dict[str, Any]], datasets: dict[str, Any],
                    configs: dict[str, Any], apps: dict[str, Any]) -> set[str]:
    owners = set()
    for obj in objects.values():
        if obj.get("type") == "dataset" and obj.get("dataset_id") in datasets:
            owners.add(datasets[obj["dataset_id"]].owner)
        elif obj.get("type") == "app" and obj.get("app_config_id") in configs:
            config = configs[obj["app_config_id"]]
            owners.add(config.owner)
            if config.app_id in apps:
                owners.add(apps[config.app_id].owner)
    return owners


def scope_for(store: "Store", user: "User") -> Scope:
    """What ``user`` may see in ``store`` now."""
    if user.is_admin:
        return Scope(user.name, everything=True)
    name = user.name
    datasets = {d.id: d for d in store.find("dataset")}
    configs = {c.id: c for c in store.find("app_config")}
    apps = {a.id: a for a in store.find("app")}
    builds = {b.id: b for b in store.find("build")}
    tasks = store.find("task")
    requests = {r.id: r for r in store.find("approval_request")}
    finals_of: dict[str, list[Any]] = {}
    for final in store.find("final_workflow"):
        finals_of.setdefault(final.draft_id, []).append(final)
    ids: dict[str, set[str]] = {kind: set() for kind in (
        "user", "dataset", "app", "build", "task", "app_config", "workflow", "final_workflow",
        "approval_request", "runtime_config")}
    ids["user"].add(user.id)
    for kind, records in (("dataset", datasets.values()), ("app_config", configs.values()),
                          ("app", apps.values()), ("build", builds.values()), ("task", tasks)):
        ids[kind].update(r.id for r in records if r.owner == name)
    for draft in store.find("workflow"):
        finals = finals_of.get(draft.id, [])
        graphs = [draft.objects, *(f.objects for f in finals)]
        parties = {draft.owner}
        for graph in graphs:
            parties |= _objects_owners(graph, datasets, configs, apps)
        for final in finals:
            parties.add(final.owner)
            request = requests.get(final.approval_request_id)
            if request is not None:
                parties.update(request.approvers)
        if name not in parties:
            continue
        ids["workflow"].add(draft.id)
        for final in finals:
            ids["final_workflow"].add(final.id)
            ids["approval_request"].add(final.approval_request_id)
            ids["runtime_config"].update(final.app_config_ids.values())
        for graph in graphs:
            for obj in graph.values():
                if obj.get("type") == "dataset":
                    ids["dataset"].add(obj.get("dataset_id"))
                elif obj.get("type") == "app":
                    ids["app_config"].add(obj.get("app_config_id"))
    for config_id in list(ids["app_config"]):
        config = configs.get(config_id)
        if config is not None:
            ids["app"].add(config.app_id)
            ids["build"].add(config.build_id)
    for app_id in ids["app"]:
        if app_id in apps:
            ids["task"].add(apps[app_id].domain_task_id)
    for build_id in ids["build"]:
        if build_id in builds:
            ids["task"].add(builds[build_id].task_id)
    return Scope(name, ids=ids)


__all__ = ["Scope", "scope_for"]
