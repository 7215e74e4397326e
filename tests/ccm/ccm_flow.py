"""The DESIGN §2 steps 4–7 through the client: datasets, app, build, tasks, config, workflow."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

from nitronb.keys import generate_key

PCRS = {i: hashlib.sha384(f"test image part {i}".encode()).digest() for i in range(3)}


def measurements() -> dict[str, str]:
    return {"hash_algorithm": "Sha384", **{f"pcr{i}": v.hex() for i, v in PCRS.items()}}


def credentials(key: str, query: str) -> dict[str, Any]:
    return {"query_string": base64.b64encode(query.encode()).decode(),
            "encryption": {"key": key}}


@dataclass
class World:
    clients: dict[str, Any]
    keys: dict[str, str] = field(default_factory=dict)
    ids: dict[str, Any] = field(default_factory=dict)


def build_world(manager, *, approve_tasks: bool = True, suffix: str = "") -> World:
    """Everything up to a draft workflow; names carry ``suffix`` so a workspace holds several."""
    world = World({p: manager.client(p) for p in ("data-owner", "output-owner", "app-owner",
                                                   "admin")})
    do, oo, ao, ad = (world.clients[p] for p in ("data-owner", "output-owner", "app-owner",
                                                 "admin"))
    world.keys["input"], world.keys["output"] = generate_key(), generate_key()
    ds_in = do.create_dataset({
        "name": f"conditions{suffix}", "description": "Synthea conditions, encrypted",
        "labels": {"source": "synthea"},
        "location": "http://127.0.0.1:9/nitronb/input/conditions.csv.enc",
        "long_description": "# Conditions\nOne row per diagnosis.",
        "credentials": credentials(world.keys["input"], "X-Amz-Signature=in&X-Amz-Expires=3600"),
    })
    ds_out = oo.create_dataset({
        "name": f"describe-result{suffix}",
        "location": "http://127.0.0.1:9/nitronb/output/result.json.enc",
        "credentials": credentials(world.keys["output"], "X-Amz-Signature=out"),
    })
    app = ao.create_app({"name": f"describe{suffix}", "image": "nitronb/describe",
                         "domain": "describe.nitronb.local"})
    image = f"nitronb/describe:1-enclave{suffix}"
    build = ao.create_build({"app_id": app["id"], "image": image,
                             "measurements": measurements()})
    tasks = [t for t in ad.list_tasks(status="PENDING")
             if t["app_id"] == app["id"]]
    if approve_tasks:
        for task in tasks:
            ad.approve_task(task["id"])
    config = ao.create_app_config({
        "name": f"describe-conditions{suffix}", "description": "describe() of DESCRIPTION",
        "image": image, "ports": ["input", "output"], "labels": {"team": "research"},
        "config_items": {"settings/column.txt": "DESCRIPTION"},
    })
    draft = ao.create_workflow({
        "name": f"conditions-describe{suffix}",
        "objects": {"app": {"type": "app", "app_config_id": config["id"]},
                    "input": {"type": "dataset", "dataset_id": ds_in["id"]},
                    "output": {"type": "dataset", "dataset_id": ds_out["id"]}},
        "edges": [{"source": "input", "target": "app", "port": "input"},
                  {"source": "app", "target": "output", "port": "output"}],
    })
    world.ids.update(input=ds_in["id"], output=ds_out["id"], app=app["id"], build=build["id"],
                     tasks=[t["id"] for t in tasks], config=config["id"], draft=draft["id"],
                     image=image)
    return world


def approve_all(world: World) -> dict[str, Any]:
    """Request approval as the app owner; every owner approves; return the final workflow."""
    ao = world.clients["app-owner"]
    request = ao.request_approval(world.ids["draft"])
    for party in request["approvers"]:
        world.clients[party].approve_request(request["id"])
    return ao.get_final_workflow(request["workflow_id"])


class ServiceManager:
    """The manager's rules without HTTP: ``client(party)`` calls the service as that party."""

    def __init__(self, workspace, verifier=None) -> None:
        from nitronb.ccm.service import Service

        self.workspace = workspace
        self.service = Service.open(workspace, verifier=verifier)

    def client(self, party: str):
        service, user = self.service, self.service._user_by_name(party)

        class Local:
            def __getattr__(self, name):
                verb = getattr(service, name)
                return lambda *a, **k: verb(user, *a, **k)

        return Local()
