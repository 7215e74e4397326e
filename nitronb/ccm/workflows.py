"""Workflows: draft graphs, immutable final versions, approval requests, runtime configurations.

A graph is ``{"name", "description", "objects": {node: object}, "edges": [edge]}`` where an
object is ``{"type": "app", "app_config_id": ID|NAME}`` or ``{"type": "dataset", "dataset_id":
ID|NAME}`` and an edge is ``{"source": node, "target": node, "port": NAME}``: dataset → app on an
``in`` port, app → dataset on an ``out`` port. The keys of ``objects`` are node names, checked by
:func:`nitronb.ccm.runtime.check_node_name` (the client draws them: see
:func:`nitronb.ccm.runtime.workflow_graph`). The approvers of a version are the owners of its
objects. On approval each app node gets a runtime configuration in the real CCM's shape
(:mod:`nitronb.ccm.runtime`) whose APPCONFIG_ID is returned in ``app_config_ids[node]``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nitronb.ccm import _checks as check
from nitronb.ccm import runtime
from nitronb.ccm.models import (APPROVED, DENIED, PENDING, REDACTED, REVOKED, ApprovalRequest,
                                FinalWorkflow, Workflow, utc_now)
from nitronb.ccm.runtime import app_config_id
from nitronb.errors import (ConflictError, NotFoundError, PermissionDeniedError,
                            ValidationError)

if TYPE_CHECKING:
    from nitronb.ccm.models import User


@dataclass(frozen=True)
class StoredRuntimeConfig:
    """A runtime configuration as the manager keeps it: its workflow version, the application
    configuration it was made from, the hashed ``config`` and ``extra`` without credentials."""

    config_id: str
    final: FinalWorkflow
    app_config_id: str
    config: dict[str, Any]
    extra: dict[str, Any]


class WorkflowVerbs:
    """The workflow half of the service (mixed into :class:`nitronb.ccm.service.Service`)."""

    # --- graphs -------------------------------------------------------------------------------

    def _graph(self, payload: dict[str, Any], user: "User | None" = None
               ) -> tuple[dict[str, Any], list[dict[str, Any]], set[str]]:
        """Validate a graph; return objects (refs resolved to ids), edges and the owners.

        With ``user``, an object it may not see is taken by its id only (the id its owner
        handed on), never found by name."""
        objects = payload.get("objects")
        edges = payload.get("edges")
        if not isinstance(objects, dict) or not objects:
            raise ValidationError("'objects' must be a non-empty object {key: {type, …}}.")
        if not isinstance(edges, list):
            raise ValidationError("'edges' must be a list of {source, target, port}.")
        resolved: dict[str, dict[str, Any]] = {}
        owners: set[str] = set()
        configs = {}
        for key, obj in objects.items():
            runtime.check_node_name(key, what="node name (object key)")
            if not isinstance(obj, dict):
                raise ValidationError(f"object {key!r} must be an object with a 'type'.")
            kind = obj.get("type")
            if kind == "app":
                config = self._graph_object("app_config", obj.get("app_config_id"), user,
                                            what="application configuration")
                configs[key] = config
                resolved[key] = {"type": "app", "app_config_id": config.id}
                owners.add(config.owner)
                owners.add(self._resolve("app", config.app_id).owner)
            elif kind == "dataset":
                dataset = self._graph_object("dataset", obj.get("dataset_id"), user)
                resolved[key] = {"type": "dataset", "dataset_id": dataset.id}
                owners.add(dataset.owner)
            else:
                raise ValidationError(f"object {key!r} has type {kind!r}; use 'app' or 'dataset'.")
        if not configs:
            raise ValidationError("a workflow needs at least one app object.")
        clean_edges, connected, seen = [], set(), set()
        for i, edge in enumerate(edges):
            if not isinstance(edge, dict):
                raise ValidationError(f"edge {i} must be an object {{source, target, port}}.")
            source, target, port = edge.get("source"), edge.get("target"), edge.get("port")
            for end, name in (("source", source), ("target", target)):
                if name not in resolved:
                    raise ValidationError(f"edge {i}: {end} {name!r} is not an object of the graph.")
            kinds = (resolved[source]["type"], resolved[target]["type"])
            if kinds == ("dataset", "app"):
                app_key, direction, verb = target, "in", "into"
            elif kinds == ("app", "dataset"):
                app_key, direction, verb = source, "out", "out of"
            else:
                raise ValidationError(f"edge {i} joins {kinds[0]} {source!r} to {kinds[1]} "
                                      f"{target!r}; an edge joins a dataset and an app.")
            ports = configs[app_key].ports
            if port not in ports:
                raise ValidationError(f"edge {i}: app {app_key!r} has no port {port!r} "
                                      f"(its ports: {', '.join(ports)}).")
            if ports[port] != direction:
                raise ValidationError(f"edge {i}: port {port!r} of app {app_key!r} is an "
                                      f"'{ports[port]}' port; data cannot flow {verb} it.")
            if (source, target, port) in seen:
                raise ValidationError(f"edge {i} repeats an earlier edge.")
            seen.add((source, target, port))
            connected.update((source, target))
            clean_edges.append({"source": source, "target": target, "port": port})
        loose = [k for k, o in resolved.items() if o["type"] == "dataset" and k not in connected]
        if loose:
            raise ValidationError(f"dataset object(s) {', '.join(loose)} are not connected to "
                                  "any app port.")
        return resolved, clean_edges, owners

    def _graph_object(self, kind: str, ref: Any, user: "User | None", *,
                      what: str | None = None) -> Any:
        try:
            return self._resolve(kind, ref, what=what, user=user)
        except NotFoundError:
            record = self.store.get(kind, ref) if isinstance(ref, str) else None
            if record is None:
                raise
            return record

    def create_workflow(self, user: "User", payload: dict[str, Any]) -> dict[str, Any]:
        """A draft graph owned by ``user``, validated."""
        payload = check.body(payload)
        name = check.text(payload, "name", limit=128)

        with self.store.transaction():
            objects, edges, _ = self._graph(payload, user)
            now = utc_now()
            draft = Workflow(id=str(uuid.uuid4()), owner=user.name, created_at=now, name=name,
                             description=check.text(payload, "description", required=False,
                                                    limit=1024, multiline=True),
                             objects=objects, edges=edges, updated_at=now)
            self.store.put(draft)
            self._audit(user.name, "workflow.create", draft, {"name": name})
        return self._show_draft(draft)

    def update_workflow(self, user: "User", draft_ref: str, payload: dict[str, Any]
                        ) -> dict[str, Any]:
        """Owner only: replace the draft's graph; a submitted version is left as it was and the
        draft becomes the next version."""
        payload = check.body(payload)

        with self.store.transaction():
            draft = self._resolve("workflow", draft_ref, what="workflow draft", user=user)
            self._require_owner(user, draft, "change it")
            merged = {"objects": draft.objects, "edges": draft.edges, **payload}
            draft.objects, draft.edges, _ = self._graph(merged, user)
            if "name" in payload:
                draft.name = check.text(payload, "name", limit=128)
            if "description" in payload:
                draft.description = check.text(payload, "description", required=False,
                                               limit=1024, multiline=True)
            if draft.submitted_version == draft.version:
                draft.version += 1
            draft.updated_at = utc_now()
            self.store.put(draft)
            self._audit(user.name, "workflow.update", draft, {"version": draft.version})
        return self._show_draft(draft)

    def _show_draft(self, draft: Workflow) -> dict[str, Any]:
        out = draft.to_dict()
        out["final_versions"] = sorted((
            {"id": f.id, "version": f.version, "status": f.status}
            for f in self.store.find("final_workflow") if f.draft_id == draft.id),
            key=lambda f: f["version"])
        return out

    def list_workflows(self, user: "User") -> list[dict[str, Any]]:
        return [self._show_draft(d)
                for d in self._scope(user).only("workflow", self.store.find("workflow"))]

    def get_workflow(self, user: "User", draft_ref: str) -> dict[str, Any]:
        return self._show_draft(self._resolve("workflow", draft_ref, what="workflow draft",
                                              user=user))

    # --- approval ------------------------------------------------------------------------------

    def request_approval(self, user: "User", draft_ref: str) -> dict[str, Any]:
        """Owner of the draft only: freeze its current version and ask every owner to approve."""

        with self.store.transaction():
            draft = self._resolve("workflow", draft_ref, what="workflow draft", user=user)
            self._require_owner(user, draft, "request its approval")
            if draft.submitted_version == draft.version:
                raise ConflictError(f"version {draft.version} of workflow {draft.name!r} was "
                                    "already submitted; change the draft to submit a new version.")
            objects, edges, owners = self._graph({"objects": draft.objects, "edges": draft.edges})
            now = utc_now()
            final = FinalWorkflow(id=str(uuid.uuid4()), owner=user.name, created_at=now,
                                  draft_id=draft.id, version=draft.version, name=draft.name,
                                  description=draft.description, objects=objects, edges=edges)
            request = ApprovalRequest(id=str(uuid.uuid4()), owner=user.name, created_at=now,
                                      workflow_id=final.id, draft_id=draft.id,
                                      approvers=sorted(owners))
            final.approval_request_id = request.id
            draft.submitted_version = draft.version
            self.store.put(final)
            self.store.put(request)
            self.store.put(draft)
            self._audit(user.name, "workflow.submit", final,
                        {"draft_id": draft.id, "version": final.version})
            self._audit(user.name, "approval_request.create", request,
                        {"workflow_id": final.id, "approvers": request.approvers})
        return self._show_request(request)

    def _show_request(self, request: ApprovalRequest) -> dict[str, Any]:
        """The request, its ``waiting_for`` approvers, and its version's ``workflow_status``
        (APPROVED, SUPERSEDED, REVOKED…) with ``superseded_by`` (a version number or None):
        an approval that completes after a newer version was approved is SUPERSEDED at once."""
        out = request.to_dict()
        out["waiting_for"] = [a for a in request.approvers if a not in request.approvals] \
            if request.status == PENDING else []
        final = self.store.get("final_workflow", request.workflow_id)
        out["workflow_status"] = final.status if final else None
        out["superseded_by"] = final.superseded_by if final else None
        return out

    def list_approval_requests(self, user: "User", status: str | None = None
                               ) -> list[dict[str, Any]]:
        requests = self._scope(user).only("approval_request", self.store.find("approval_request"))
        if status:
            requests = [r for r in requests if r.status == status.upper()]
        return [self._show_request(r) for r in requests]

    def get_approval_request(self, user: "User", request_id: str) -> dict[str, Any]:
        return self._show_request(self._resolve("approval_request", request_id,
                                                what="approval request", user=user))

    def _pending_request(self, user: "User", request_id: str) -> ApprovalRequest:
        request = self._resolve("approval_request", request_id, what="approval request",
                                user=user)
        if user.name not in request.approvers:
            raise PermissionDeniedError(
                f"{user.name} owns nothing in workflow {request.workflow_id}; only its object "
                f"owners ({', '.join(request.approvers)}) approve or deny it.")
        if request.status != PENDING:
            raise ConflictError(f"approval request {request.id} is already {request.status}.")
        return request

    def approve_request(self, user: "User", request_id: str) -> dict[str, Any]:
        """An approver's approval; the last one makes the version APPROVED and its configs."""

        with self.store.transaction():
            request = self._pending_request(user, request_id)
            if user.name in request.approvals:
                raise ConflictError(f"{user.name} already approved request {request.id}.")
            request.approvals[user.name] = utc_now()
            self._audit(user.name, "approval_request.approve", request,
                        {"workflow_id": request.workflow_id})
            if set(request.approvals) >= set(request.approvers):
                request.status, request.decided_at = APPROVED, utc_now()
                final = self.store.get("final_workflow", request.workflow_id)
                final.status = APPROVED
                final.app_config_ids = self._make_runtime_configs(final)
                self.store.put(final)
                self._audit(user.name, "workflow.approved", final,
                            {"app_config_ids": final.app_config_ids})
                self._supersede(final, user.name)
            self.store.put(request)
        return self._show_request(request)

    def deny_request(self, user: "User", request_id: str, reason: str) -> dict[str, Any]:
        """An approver's decline, with its reason: the version is DENIED."""

        reason = check.reason(reason)
        with self.store.transaction():
            request = self._pending_request(user, request_id)
            request.status, request.denied_by = DENIED, user.name
            request.reason, request.decided_at = reason, utc_now()
            final = self.store.get("final_workflow", request.workflow_id)
            final.status = DENIED
            self.store.put(final)
            self.store.put(request)
            self._audit(user.name, "approval_request.deny", request,
                        {"workflow_id": final.id, "reason": request.reason})
        return self._show_request(request)

    # --- final versions and runtime configurations ---------------------------------------------

    def list_final_workflows(self, user: "User") -> list[dict[str, Any]]:
        return [self._show_final(f) for f in
                self._scope(user).only("final_workflow", self.store.find("final_workflow"))]

    def get_final_workflow(self, user: "User", final_id: str) -> dict[str, Any]:
        return self._show_final(self._resolve("final_workflow", final_id, what="final workflow",
                                              user=user))

    def _show_final(self, final: FinalWorkflow) -> dict[str, Any]:
        """The version with its ``approval`` and, for an APPROVED version that provisioning
        would refuse now (a build or domain whitelisting revoked), ``refused``:
        ``{"what": "build revoked" | "domain revoked" | "refused", "message"}``, else None."""
        out = final.to_dict()
        request = self.store.get("approval_request", final.approval_request_id)
        out["approval"] = self._show_request(request) if request else None
        out["refused"] = self._refused(final) if final.status == APPROVED else None
        return out

    def _refused(self, final: FinalWorkflow) -> dict[str, str] | None:
        """Why provisioning would refuse the APPROVED version ``final`` now, or None."""
        from nitronb.errors import ProvisioningRefusedError

        for obj in final.objects.values():
            config = self.store.get("app_config", obj.get("app_config_id") or "")
            build = self.store.get("build", config.build_id) if config else None
            if build is None:
                continue
            try:
                self.check_consent(final.id, config, build)
            except ProvisioningRefusedError as exc:
                app = self.store.get("app", config.app_id)
                domain = self.store.get("task", app.domain_task_id) if app else None
                what = ("domain revoked" if domain is not None and domain.status == REVOKED
                        else "build revoked" if "revoked" in exc.message else "refused")
                return {"what": what, "message": exc.message}
        return None

    def _zone_ca(self) -> list[str]:
        """PEM certificates of the roots this manager trusts for attestation (its zone)."""
        zone_ca = getattr(self.verifier, "zone_ca", None)
        return list(zone_ca()) if callable(zone_ca) else []

    def _make_runtime_configs(self, final: FinalWorkflow) -> dict[str, str]:

        ids = {}
        zone_ca = self._zone_ca()
        for key, obj in final.objects.items():
            if obj["type"] != "app":
                continue
            ac = self.store.get("app_config", obj["app_config_id"])
            port_map: dict[str, dict[str, str]] = {}
            locations: dict[str, dict[str, str]] = {}
            for edge in final.edges:
                if key not in (edge["source"], edge["target"]):
                    continue
                node = edge["target"] if edge["source"] == key else edge["source"]
                dataset = self.store.get("dataset", final.objects[node]["dataset_id"])
                port_map.setdefault(edge["port"], {})[node] = dataset.id
                locations.setdefault(edge["port"], {})[node] = dataset.location
            config = runtime.hashed_config(items=ac.config_items, labels=ac.labels,
                                           zone_ca=zone_ca, workflow_id=final.id, app_node=key,
                                           port_map=port_map)
            config_id = app_config_id(config)
            self.store.put_runtime_config(
                config_id, final.id, ac.id,
                json.dumps(config, separators=(",", ":"), ensure_ascii=False),
                json.dumps(runtime.connections(locations), ensure_ascii=False), utc_now())
            ids[key] = config_id
        return ids

    def _runtime_config(self, config_id: str, user: "User | None" = None
                        ) -> StoredRuntimeConfig:
        row = self.store.get_runtime_config(config_id) if isinstance(config_id, str) else None
        if row is not None and user is not None and not user.is_admin \
                and not self._scope(user).sees("runtime_config", config_id):
            row = None
        if row is None:
            shown = config_id if not isinstance(config_id, str) or len(config_id) <= 80 else \
                f"{config_id[:64]}…"
            raise NotFoundError(
                f"no approved configuration {shown!r}"
                f"{' visible to you' if user is not None else ''}.",
                hint="An APPCONFIG_ID exists once every owner approved its workflow and only the "
                     "workflow's parties see it: check the id, and the workflow's state with "
                     "`nitronb ccm workflow NAME`.")
        workflow_id, ac_id, config_text, extra_text = row
        config, extra = json.loads(config_text), json.loads(extra_text)
        if not runtime.is_ccm_shape(config):
            raise ConflictError(
                f"runtime configuration {config_id[:12]}… is not in the real CCM's shape "
                "{app_config, labels, zone_ca, workflow}: it was stored by an older nitronb.",
                hint="Request the workflow's approval again to get a new APPCONFIG_ID.")
        return StoredRuntimeConfig(config_id, self.store.get("final_workflow", workflow_id),
                                   ac_id, config, extra)

    def _connections(self, stored: StoredRuntimeConfig, credentials) -> dict[str, Any]:
        """``extra`` with each dataset connection's ``credentials`` set by ``credentials(id)``."""
        known = stored.extra.get("connections") or {}
        out: dict[str, dict[str, Any]] = {}
        for port, node, dataset_id in runtime.dataset_nodes(stored.config):
            location = ((known.get(port) or {}).get(node) or {}).get("dataset", {}).get(
                "location")
            out.setdefault(port, {})[node] = {"dataset": {"location": location,
                                                          "credentials": credentials(dataset_id)}}
        return {"connections": out}

    def get_runtime_config(self, user: "User", config_id: str) -> dict[str, Any]:
        """``{"config", "extra"}`` for a party to its workflow or an administrator (404 for
        anyone else); the credentials in ``extra`` are shown redacted."""
        stored = self._runtime_config(config_id, user)
        return {"config": stored.config,
                "extra": self._connections(stored, self._redacted_credentials)}

    def _redacted_credentials(self, dataset_id: str) -> Any:
        """The credentials as shown: nothing of the query string or the key but the key's
        fingerprint (:func:`nitronb.keys.fingerprint`)."""
        from nitronb.keys import fingerprint

        try:
            key = self.dataset_credentials(dataset_id)["encryption"]["key"]
            shown = fingerprint(key)
        except Exception:  # noqa: BLE001 - a view never fails on one unreadable secret
            return REDACTED
        return {"query_string": REDACTED,
                "encryption": {"key": REDACTED, "key_fingerprint": shown}}

    def list_runtime_configs(self, user: "User") -> list[dict[str, Any]]:
        out = []
        scope = self._scope(user)
        for config_id, workflow_id in self.store.runtime_config_ids():
            final = self.store.get("final_workflow", workflow_id)
            if scope.sees("runtime_config", config_id):
                out.append({"id": config_id, "workflow_id": workflow_id,
                            "workflow_name": final.name, "version": final.version,
                            "status": final.status})
        return out
