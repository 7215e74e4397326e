"""``nitronb ccm --as PARTY …``: what a person does with the manager at a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

ORDER = 40

# kind on the command line -> (client list verb, client show verb, table columns)
_KINDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "users": ("list_users", "", ("name", "roles")),
    "datasets": ("list_datasets", "get_dataset", ("name", "owner", "location", "id")),
    "apps": ("list_apps", "get_app", ("name", "owner", "domain", "image", "id")),
    "builds": ("list_builds", "get_build", ("image", "owner", "measurements.pcr0", "id")),
    "tasks": ("list_tasks", "get_task", ("task_type", "status", "owner", "decided_by", "id")),
    "app-configs": ("list_app_configs", "get_app_config", ("name", "owner", "image", "id")),
    "workflows": ("list_workflows", "get_workflow", ("name", "owner", "version", "id")),
    "finals": ("list_final_workflows", "get_final_workflow",
               ("name", "version", "status", "owner", "id")),
    "approvals": ("list_approval_requests", "get_approval_request",
                  ("status", "approvers", "waiting_for", "workflow_id", "id")),
    "runtime-configs": ("list_runtime_configs", "get_runtime_config",
                        ("workflow_name", "version", "id")),
}
_SINGULAR = {"user": "users", "dataset": "datasets", "app": "apps", "build": "builds",
             "task": "tasks", "app-config": "app-configs", "workflow": "workflows",
             "final": "finals", "approval": "approvals", "runtime-config": "runtime-configs"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ccm", help="list, show, create, approve and deny in the manager",
                       description="Act as one party of the manager: list and show objects, "
                                   "register datasets, draft workflows, approve or deny tasks "
                                   "and workflows, verify the audit log.")
    p.add_argument("--as", dest="party", metavar="PARTY",
                   help="act as this local party (data-owner, output-owner, app-owner, admin)")
    p.add_argument("--token", help="act with this API token instead of a local party's "
                                   "(default: $NITRONB_CCM_TOKEN)")
    p.add_argument("--url", help="the manager's URL (default: the local stack's)")
    p.add_argument("--workspace", help="workspace folder (default: $NITRONB_WORKSPACE or "
                                       "~/.nitronb)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    def verb(name: str, help_text: str, handler) -> argparse.ArgumentParser:
        v = verbs.add_parser(name, help=help_text, description=help_text)
        v.add_argument("--json", action="store_true", help="print JSON")
        v.set_defaults(handler=handler)
        return v

    verb("whoami", "the user the token belongs to", _whoami)
    v = verb("list", "list objects of a kind", _list)
    v.add_argument("kind", choices=sorted(_KINDS))
    v.add_argument("--status", type=str.upper,
                   choices=("PENDING", "APPROVED", "DENIED", "REVOKED"),
                   help="tasks and approvals: only this status")
    v = verb("show", "show one object", _show)
    v.add_argument("kind", choices=sorted(k for k, s in _SINGULAR.items() if _KINDS[s][1]))
    v.add_argument("ref", help="its id (or name)")
    v = verb("approve-task", "approve a whitelisting task (administrator)", _approve_task)
    v.add_argument("task", help="task id")
    v = verb("deny-task", "deny a whitelisting task (administrator)", _deny_task)
    v.add_argument("task", help="task id")
    v.add_argument("--reason", help="why")
    v = verb("revoke-task", "revoke an approved whitelisting task, with a reason "
                            "(administrator): its enclaves are refused from then on", _revoke_task)
    v.add_argument("task", help="task id")
    v.add_argument("--reason", required=True, help="why (shown to every party)")
    v = verb("approve", "approve a workflow (an approval request id, or a workflow draft's "
                        "id or name with a pending request)", _approve)
    v.add_argument("ref")
    v = verb("deny", "decline a workflow, with a reason", _deny)
    v.add_argument("ref")
    v.add_argument("--reason", required=True, help="why (shown to every party)")
    v = verb("revoke", "withdraw your approval of an approved workflow version, with a reason: "
                       "its APPCONFIG_ID is refused from then on", _revoke)
    v.add_argument("ref", help="a final workflow id, or a workflow draft's id or name")
    v.add_argument("--version", type=int,
                   help="the version (default: the draft's approved version)")
    v.add_argument("--reason", required=True, help="why (shown to every party)")
    v = verb("workflow", "a workflow draft with the approval state of each submitted version",
             _workflow)
    v.add_argument("ref", help="draft id or name")
    v = verb("create-dataset", "register a dataset (or update yours of that name) from a "
                               "presigned URL and its key (data and output owners)",
             _create_dataset)
    v.add_argument("name", help="the dataset's name")
    v.add_argument("--presigned", required=True, metavar="FILE",
                   help="the presigned URL: the JSON `nitronb presign … --json` prints, or the "
                        "URL alone, in a file (so that it never shows in a process list)")
    v.add_argument("-K", "--key-file", required=True, metavar="FILE",
                   help="the dataset's key file (64 hex characters)")
    v.add_argument("--description", default="", help="a one-line description")
    v.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="a label (repeatable)")
    v.add_argument("--long-description", default="", metavar="TEXT",
                   help="Markdown text, a file, or an http(s) URL")
    v = verb("create-workflow", "draft a workflow input → app → output (or a new version of "
                                "yours of that name) and request every owner's approval",
             _create_workflow)
    v.add_argument("name", help="the workflow's name")
    v.add_argument("--app-config", required=True, metavar="REF",
                   help="the app configuration (id or name)")
    v.add_argument("--input", required=True, metavar="DATASET",
                   help="the dataset for the app's port 'input': its id (or, for one you "
                        "may see, its name)")
    v.add_argument("--output", required=True, metavar="DATASET",
                   help="the dataset for the app's port 'output': its id (or, for one "
                        "you may see, its name)")
    v.add_argument("--description", default="", help="a one-line description")
    v = verb("audit", "the audit log (latest rows)", _audit)
    v.add_argument("--limit", type=int, default=20, help="rows to show (default 20)")
    verb("verify-audit", "verify the audit log's hash chain", _verify_audit)
    v = verbs.add_parser("serve", help="run the manager itself (for this machine or a team)",
                         description="Run the manager (CCM-shaped HTTP API) on SQLite in the "
                                     "workspace or on a PostgreSQL database.")
    from nitronb.ccm.server import add_server_arguments

    add_server_arguments(v, workspace_dest="serve_workspace")  # before or after "serve"
    v.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from nitronb.ccm.server import serve

    args.workspace = args.serve_workspace or args.workspace
    return serve(args)


# --- plumbing -------------------------------------------------------------------------------


def _client(args: argparse.Namespace):
    import os

    from nitronb.ccm import CCMClient, manager_url
    from nitronb.errors import AuthenticationError

    token = args.token or os.environ.get("NITRONB_CCM_TOKEN")
    if args.party:
        return CCMClient.for_party(args.party, args.workspace, args.url)
    if token:
        return CCMClient(args.url or manager_url(args.workspace), token)
    raise AuthenticationError("say who acts: --as PARTY (a local party) or --token TOKEN.")


def _out(args: argparse.Namespace, data: Any, text: str) -> int:
    if args.json:
        json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print(text)
    return 0


def _cell(row: dict[str, Any], column: str) -> str:
    value: Any = row
    for part in column.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    if isinstance(value, str) and len(value) > 40 and column.endswith("pcr0"):
        return f"{value[:8]}…{value[-8:]}"
    return "-" if value in (None, "") else str(value)


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    if not rows:
        return "(none)"
    cells = [[_cell(r, c) for c in columns] for r in rows]
    heads = [c.split(".")[-1].upper() for c in columns]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def _pretty(obj: dict[str, Any]) -> str:
    lines = []
    for key, value in obj.items():
        if value is None:  # a reason never given, a task not decided yet: nothing to show
            continue
        if isinstance(value, (dict, list)):
            shown = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
            lines.append(f"{key}: {shown}")
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


# --- handlers -------------------------------------------------------------------------------


def _whoami(args: argparse.Namespace) -> int:
    user = _client(args).whoami()["user"]
    return _out(args, user, f"{user['name']} (roles: {', '.join(user['roles'])})")


def _list(args: argparse.Namespace) -> int:
    client = _client(args)
    verb, _, columns = _KINDS[args.kind]
    kwargs = {"status": args.status} if args.kind in ("tasks", "approvals") else {}
    rows = getattr(client, verb)(**kwargs)
    return _out(args, rows, _table(rows, columns))


def _show(args: argparse.Namespace) -> int:
    obj = getattr(_client(args), _KINDS[_SINGULAR[args.kind]][1])(args.ref)
    return _out(args, obj, _pretty(obj))


def _approve_task(args: argparse.Namespace) -> int:
    task = _client(args).approve_task(args.task)
    return _out(args, task, f"task {task['id']} ({task['task_type']}) APPROVED")


def _deny_task(args: argparse.Namespace) -> int:
    task = _client(args).deny_task(args.task, args.reason)
    return _out(args, task, f"task {task['id']} ({task['task_type']}) DENIED")


def _revoke_task(args: argparse.Namespace) -> int:
    task = _client(args).revoke_task(args.task, args.reason)
    return _out(args, task, f"task {task['id']} ({task['task_type']}) REVOKED by "
                            f"{task['revoked_by']}: {task['revoke_reason']}")


def _final_id(client, ref: str, version: int | None) -> str:
    """A final workflow id from itself, or from a draft's id or name and a version (default:
    the version that is APPROVED now)."""
    from nitronb.errors import ConflictError, NotFoundError

    if version is None:
        try:
            return client.get_final_workflow(ref)["id"]
        except (NotFoundError, ConflictError):  # a draft's name: every version carries it
            pass
    draft = _draft(client, ref, "a final workflow id (one version) or a workflow draft's id or "
                                "name")
    versions = draft["final_versions"]
    if version is not None:
        chosen = [f for f in versions if f["version"] == version]
        if not chosen:
            raise NotFoundError(f"workflow {draft['name']!r} has no submitted version {version}.",
                                hint=f"See its versions with `nitronb ccm workflow {ref}`.")
    else:
        chosen = [f for f in versions if f["status"] == "APPROVED"]
        if not chosen:
            raise NotFoundError(f"workflow {draft['name']!r} has no APPROVED version.",
                                hint=f"See its versions with `nitronb ccm workflow {ref}`.")
    return chosen[-1]["id"]


def _revoke(args: argparse.Namespace) -> int:
    client = _client(args)
    final = client.revoke_workflow(_final_id(client, args.ref, args.version), args.reason)
    return _out(args, final, f"workflow {final['name']} version {final['version']}: "
                             f"{final['status']} by {final['revoked_by']}: "
                             f"{final['revoke_reason']}")


def _draft(client, ref: str, expected: str) -> dict[str, Any]:
    """The workflow draft ``ref``; NotFoundError saying what kind of id was ``expected``."""
    from nitronb.errors import NotFoundError

    try:
        return client.get_workflow(ref)
    except NotFoundError:
        shown = ref if len(ref) <= 80 else f"{ref[:64]}…"
        raise NotFoundError(f"{shown!r} is not {expected} visible to you.",
                            hint="See the ids with `nitronb ccm --as PARTY list approvals` and "
                                 "`nitronb ccm --as PARTY workflow NAME`.") from None


def _request_id(client, ref: str) -> str:
    from nitronb.errors import NotFoundError

    try:
        return client.get_approval_request(ref)["id"]
    except NotFoundError:
        pass
    draft = _draft(client, ref, "an approval request id or a workflow draft's id or name")
    pending = [r for r in client.list_approval_requests(status="PENDING")
               if r["draft_id"] == draft["id"]]
    if not pending:
        raise NotFoundError(f"workflow {draft['name']!r} has no pending approval request.",
                            hint="Its owner requests one once the draft is ready.")
    return pending[-1]["id"]


def _decision_text(request: dict[str, Any]) -> str:
    text = f"approval request {request['id']}: {request['status']}"
    if request["status"] == "PENDING":
        text += f" (waiting for {', '.join(request['waiting_for'])})"
    if request.get("reason"):
        text += f" — declined by {request['denied_by']}: {request['reason']}"
    return text


def _approve(args: argparse.Namespace) -> int:
    client = _client(args)
    request = client.approve_request(_request_id(client, args.ref))
    text = _decision_text(request)
    if request["status"] == "APPROVED" and request.get("workflow_status") == "SUPERSEDED":
        text += (f", but superseded by version {request.get('superseded_by')}: it will not "
                 "run")
    elif request["status"] == "APPROVED":
        final = client.get_final_workflow(request["workflow_id"])
        text += "".join(f"\n  APPCONFIG_ID {k}: {v}" for k, v in final["app_config_ids"].items())
    return _out(args, request, text)


def _deny(args: argparse.Namespace) -> int:
    client = _client(args)
    request = client.deny_request(_request_id(client, args.ref), args.reason)
    return _out(args, request, _decision_text(request))


def _workflow(args: argparse.Namespace) -> int:
    client = _client(args)
    draft = client.get_workflow(args.ref)
    finals = [client.get_final_workflow(f["id"]) for f in draft["final_versions"]]
    lines = [f"workflow {draft['name']} ({draft['id']}), owner {draft['owner']}, "
             f"draft version {draft['version']}"]
    for key, obj in draft["objects"].items():
        ref = obj.get("app_config_id") or obj.get("dataset_id")
        named = (client.get_app_config(ref) if obj["type"] == "app" else client.get_dataset(ref))
        lines.append(f"  object {key}: {obj['type']} {named.get('name')} of "
                     f"{named.get('owner')} ({ref})")
    for edge in draft["edges"]:
        lines.append(f"  edge {edge['source']} -> {edge['target']} (port {edge['port']})")
    for final in finals:
        approval = final["approval"] or {}
        state = final["status"]
        if state == "REVOKED":
            state += (f" (approval withdrawn by {final.get('revoked_by')} at "
                      f"{final.get('revoked_at')}: {final.get('revoke_reason')})")
        elif state == "SUPERSEDED":
            state += f" (by version {final.get('superseded_by')}; no longer runs)"
        elif final.get("refused"):
            state += (f", {final['refused']['what']}: it will not run "
                      f"({final['refused']['message']})")
        lines.append(f"version {final['version']}: {state}")
        for approver in approval.get("approvers", []):
            state = ("withdrawn" if final["status"] == "REVOKED"
                     and approver == final.get("revoked_by") else
                     "approved" if approver in approval.get("approvals", {}) else
                     "declined" if approver == approval.get("denied_by") else "waiting")
            lines.append(f"  {approver}: {state}")
        if approval.get("reason"):
            lines.append(f"  reason: {approval['reason']}")
        for key, config_id in final["app_config_ids"].items():
            lines.append(f"  APPCONFIG_ID {key}: {config_id}")
    return _out(args, {**draft, "final_versions": finals}, "\n".join(lines))


def _create_dataset(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nitronb.datasets import Dataset, load_long_description, parse_labels
    from nitronb.errors import ConflictError, ValidationError
    from nitronb.keys import fingerprint, read_key_file

    text = Path(args.presigned).read_text(encoding="utf-8").strip()
    try:
        url = json.loads(text)["url"] if text.startswith("{") else text
    except (ValueError, KeyError, TypeError):
        raise ValidationError(f"{args.presigned} holds neither a presigned URL nor the JSON "
                              "`nitronb presign … --json` prints.") from None
    key = read_key_file(args.key_file)
    dataset = Dataset.from_url(
        args.name, url, key, description=args.description,
        labels=parse_labels(";".join(args.label)),
        long_description=load_long_description(args.long_description)
        if args.long_description else "")
    client = _client(args)
    try:
        created = client.create_dataset(dataset.payload())
        verb = "registered"
    except ConflictError:
        payload = dataset.payload()
        created = client.update_dataset(args.name, {
            k: payload[k] for k in ("description", "labels", "long_description", "location",
                                    "credentials")})
        verb = "updated"
    return _out(args, created, f"dataset {created['name']} {verb} ({created['id']}): "
                               f"{dataset.location}, key fingerprint {fingerprint(key)}")


def _create_workflow(args: argparse.Namespace) -> int:
    client = _client(args)
    from nitronb.ccm import workflow_graph

    # node names are drawn as the real CCM's user interface draws them (short generated ids);
    # the manager resolves the references: another party's dataset is not visible before the
    # workflow joins it
    graph = workflow_graph(args.name, args.app_config, inputs={"input": args.input},
                           outputs={"output": args.output}, description=args.description)
    draft = next((w for w in client.list_workflows() if w.get("name") == args.name), None)
    draft = client.update_workflow(draft["id"], graph) if draft else client.create_workflow(graph)
    request = client.request_approval(draft["id"])
    return _out(args, request, f"workflow {args.name} drafted; approval request "
                               f"{request['id']}: {request['status']} (waiting for "
                               f"{', '.join(request['waiting_for'])})")


def _audit(args: argparse.Namespace) -> int:
    rows = _client(args).audit_log(limit=args.limit)
    text = "\n".join(f"{r['id']:>5}  {r['at']}  {r['actor']:<13} {r['action']:<26} "
                     f"{r['object_type']} {r['object_id']}" for r in rows) or "(empty)"
    return _out(args, rows, text)


def _verify_audit(args: argparse.Namespace) -> int:
    result = _client(args).verify_audit()
    if result["ok"]:
        _out(args, result, f"audit log OK: {result['rows']} rows, chain intact")
        return 0
    _out(args, result, f"audit log BROKEN at row {result['bad_row']}: {result['reason']}")
    return 1
