"""Names, labels, reasons and descriptions the manager stores are shown to other parties: no
terminal escape, newline or invisible format character gets in (one rule, 422)."""

from __future__ import annotations

import pytest

from ccm_flow import build_world, credentials
from nitronb.ccm.runtime import workflow_graph
from nitronb.datasets import name_from_file
from nitronb.errors import ValidationError
from nitronb.keys import generate_key

#: a terminal escape, a newline, a right-to-left override, a zero-width space, a byte-order mark
BAD = ["esc\x1b[2Jclear", "evil\nname", "wf\nX\x1b[31mred", "rlo\u202eevil", "zw\u200bsp",
       "bom\ufeff", "del\x7f", "c1\x85"]


def _dataset(name: str, **extra) -> dict:
    return {"name": name, "location": "http://127.0.0.1:9/nitronb/x/data.csv.enc",
            "credentials": credentials(generate_key(), "X-Amz-Signature=x"), **extra}


def test_names_labels_and_descriptions_refuse_controls_and_format_characters(manager):
    world = build_world(manager)
    do, ao, admin = (world.clients[p] for p in ("data-owner", "app-owner", "admin"))
    graph = workflow_graph("wf-ok", world.ids["config"], inputs={"input": world.ids["input"]},
                           outputs={"output": world.ids["output"]})
    for bad in BAD:
        attempts = {
            "user name": lambda: admin.create_user(bad),
            "dataset name": lambda: do.create_dataset(_dataset(bad)),
            "label value": lambda: do.create_dataset(_dataset("ok-1", labels={"k": bad})),
            "label name": lambda: do.create_dataset(_dataset("ok-2", labels={bad: "v"})),
            "app name": lambda: ao.create_app({"name": bad, "image": "x/y",
                                               "domain": "y.nitronb.local"}),
            "app config name": lambda: ao.create_app_config({
                "name": bad, "image": world.ids["image"], "ports": ["input", "output"]}),
            "workflow name": lambda: ao.create_workflow({**graph, "name": bad}),
            "workflow rename": lambda: ao.update_workflow(world.ids["draft"], {"name": bad}),
            "dataset description": lambda: do.create_dataset(
                _dataset("ok-3", description=bad.replace("\n", "\x1b"))),
            "workflow description": lambda: ao.update_workflow(
                world.ids["draft"], {"description": bad.replace("\n", "\x1b")}),
        }
        for what, attempt in attempts.items():
            with pytest.raises(ValidationError, match=r"holds (a control|an invisible format) "
                                                      r"character \(U\+[0-9A-F]{4} at"):
                attempt()
                pytest.fail(f"{what} {bad!r} was accepted")
    shown = [w["name"] for w in ao.list_workflows()] + [d["name"] for d in do.list_datasets()]
    assert shown == [n for n in shown if n.isprintable()]
    assert len(admin.list_users()) == 4


def test_descriptions_and_reasons_keep_newlines_and_tabs(manager):
    world = build_world(manager)
    do, ao = world.clients["data-owner"], world.clients["app-owner"]
    text = "line one\r\n\tline two\nline three: ünïcødé ✓"
    dataset = do.create_dataset(_dataset("multi-line", description=text,
                                         long_description="# T\r\n\n" + text))
    assert dataset["description"] == text
    assert ao.update_workflow(world.ids["draft"], {"description": text})["description"] == text
    request = ao.request_approval(world.ids["draft"])
    denied = world.clients["output-owner"].deny_request(request["id"], "no:\n\tnot now")
    assert denied["reason"] == "no:\n\tnot now"


@pytest.mark.parametrize("file", ["conditions.csv", "my data (2024).csv", "Données été.csv",
                                  "x\x1b[31m\u202ey\u200b.csv", "a\nb.csv"])
def test_dataset_names_drawn_from_file_names_pass_the_rule(file):
    from nitronb.ccm._checks import plain

    name = name_from_file(file)
    assert plain(name, "name") == name
