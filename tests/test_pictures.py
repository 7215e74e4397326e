"""The notebooks' pictures: workflow graph, bar chart, describe() table."""

from __future__ import annotations

import csv
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter

import pytest

from nitronb import sample_path
from nitronb.notebook.pictures import bar_chart_svg, describe_table_html, workflow_svg
from nitronb.results import describe_summary

SVG = "{http://www.w3.org/2000/svg}"

GRAPH = {
    "id": "wf-1", "name": "conditions-describe", "version": 2, "owner": "app-owner",
    "objects": {
        "app": {"type": "app", "app_config_id": "c1", "name": "describe-conditions",
                "owner": "app-owner", "ports": {"input": "in", "output": "out"}},
        "input": {"type": "dataset", "dataset_id": "d1", "name": "conditions",
                  "owner": "data-owner"},
        "output": {"type": "dataset", "dataset_id": "d2", "name": "describe-result",
                   "owner": "output-owner"},
    },
    "edges": [{"source": "input", "target": "app", "port": "input"},
              {"source": "app", "target": "output", "port": "output"}],
}


def request(status="PENDING", approvals=(), denied_by=None, reason=None):
    approvers = ["app-owner", "data-owner", "output-owner"]
    return {"id": "r1", "status": status, "approvers": approvers,
            "approvals": {a: "2026-01-01T00:00:00Z" for a in approvals},
            "denied_by": denied_by, "reason": reason,
            "waiting_for": [a for a in approvers if a not in approvals]
            if status == "PENDING" else []}


def texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    return ["".join(t.itertext()) for t in root.iter(SVG + "text")]


def test_workflow_shows_datasets_app_ports_owners_and_arrows():
    svg = workflow_svg(GRAPH, request(approvals=["app-owner"]))
    root = ET.fromstring(svg)
    assert root.tag == SVG + "svg" and int(root.get("width")) <= 760
    assert root[0].tag == SVG + "title" and "conditions-describe" in root[0].text
    shown = texts(svg)
    for label in ("conditions", "describe-conditions", "describe-result", "input", "output",
                  "owner: data-owner", "owner: app-owner", "owner: output-owner",
                  "input dataset", "output dataset"):
        assert label in shown, label
    arrows = [p for p in root.iter(SVG + "path") if p.get("marker-end")]
    assert len(arrows) == 2
    # input on the left of the app, output on its right
    x = {t.text: float(t.get("x")) for t in root.iter(SVG + "text")}
    assert x["conditions"] < x["describe-conditions"] < x["describe-result"]


def test_each_dataset_shows_its_node_name_beside_its_name():
    rename = {"app": "stlw0qv3t", "input": "cxhcfxdvl", "output": "bzbrs5dr0"}
    graph = {**GRAPH, "objects": {rename[k]: o for k, o in GRAPH["objects"].items()},
             "edges": [{**e, "source": rename[e["source"]], "target": rename[e["target"]]}
                       for e in GRAPH["edges"]]}
    root = ET.fromstring(workflow_svg(graph, request()))
    boxes = {g.find(SVG + "title").text: g.findall(SVG + "text") for g in root.iter(SVG + "g")}
    for title, caption, node, name in (
            ("input dataset conditions, node cxhcfxdvl", "input dataset", "cxhcfxdvl",
             "conditions"),
            ("output dataset describe-result, node bzbrs5dr0", "output dataset", "bzbrs5dr0",
             "describe-result")):
        shown = boxes[title]
        assert [t.text for t in shown] == [caption, f"node {node}", name]
        # the node on the caption row, right-aligned, above the name
        assert shown[1].get("text-anchor") == "end"
        assert float(shown[1].get("y")) < float(shown[2].get("y"))
    desc = root.find(SVG + "desc").text
    assert "input dataset conditions (node cxhcfxdvl, owner data-owner)" in desc


def test_approval_states_per_approver_and_overall_badge():
    pending = texts(workflow_svg(GRAPH, request(approvals=["app-owner"])))
    assert "… PENDING" in pending
    assert pending[pending.index("app-owner") - 1] == "✓"
    assert pending[pending.index("data-owner") - 1] == "…"
    assert "pending" in pending and "approved" in pending

    denied = texts(workflow_svg(GRAPH, request("DENIED", ["app-owner"], "data-owner",
                                               "wrong quarter")))
    assert "✗ DENIED" in denied
    assert denied[denied.index("data-owner") - 1] == "✗"
    assert "declined: wrong quarter" in denied

    approved = texts(workflow_svg(GRAPH, request("APPROVED", ["app-owner", "data-owner",
                                                              "output-owner"])))
    assert "✓ APPROVED" in approved and approved.count("✓") == 3


def test_a_final_workflow_carries_its_own_approval_and_a_draft_has_none():
    final = {**GRAPH, "status": "DENIED",
             "approval": request("DENIED", [], "output-owner", "no")}
    assert "✗ DENIED" in texts(workflow_svg(final))
    draft = texts(workflow_svg(GRAPH))
    assert "✎ DRAFT" in draft and "Draft: approval not requested yet" in draft


def test_revoked_and_superseded_versions_say_so_and_who_withdrew_why():
    everyone = ["app-owner", "data-owner", "output-owner"]
    revoked = {**GRAPH, "status": "REVOKED", "revoked_by": "data-owner",
               "revoke_reason": "consent withdrawn", "approval": request("APPROVED", everyone)}
    svg = workflow_svg(revoked)
    shown = texts(svg)
    assert "⊘ REVOKED" in shown and "✓ APPROVED" not in shown
    assert "approval withdrawn by data-owner: consent withdrawn" in shown
    assert ET.fromstring(svg)[0].text.endswith(": revoked")
    superseded = {**GRAPH, "status": "SUPERSEDED", "superseded_by": 3}
    shown = texts(workflow_svg(GRAPH, request("APPROVED", everyone), final=superseded))
    assert "↷ SUPERSEDED" in shown
    assert "superseded by version 3: it no longer runs" in shown
    approved = texts(workflow_svg({**GRAPH, "status": "APPROVED",
                                   "approval": request("APPROVED", everyone)}))
    assert "✓ APPROVED" in approved
    assert not [t for t in approved if "withdrawn" in t or "superseded" in t]


def test_text_is_escaped_and_the_output_is_deterministic():
    graph = {**GRAPH, "name": 'a<b> & "c"',
             "objects": {**GRAPH["objects"],
                         "input": {**GRAPH["objects"]["input"], "name": "x<&>y\x01"}}}
    svg = workflow_svg(graph, request())
    assert "x&lt;&amp;&gt;y" in svg and "<b>" not in svg
    shown = texts(svg)
    assert "x<&>y\ufffd" in shown
    assert ET.fromstring(svg)[0].text.startswith('Workflow a<b> & "c"')
    assert workflow_svg(graph, request()) == svg
    other = workflow_svg(GRAPH, request())
    ids = {ET.fromstring(s).find(SVG + "title").get("id") for s in (svg, other)}
    assert len(ids) == 2


def test_unannotated_and_larger_graphs_are_drawn_from_keys_and_edges():
    graph = {"objects": {"app": {"type": "app", "app_config_id": "c"},
                         "in1": {"type": "dataset", "dataset_id": "a"},
                         "in2": {"type": "dataset", "dataset_id": "b"},
                         "out": {"type": "dataset", "dataset_id": "c"}},
             "edges": [{"source": "in1", "target": "app", "port": "input"},
                       {"source": "in2", "target": "app", "port": "extra"},
                       {"source": "app", "target": "out", "port": "output"}]}
    svg = workflow_svg(graph, None)
    shown = texts(svg)
    for label in ("in1", "in2", "out", "app", "input", "extra", "output"):
        assert label in shown
    assert len([p for p in ET.fromstring(svg).iter(SVG + "path") if p.get("marker-end")]) == 3
    assert "owner: " not in " ".join(shown)


def bars(svg):
    root = ET.fromstring(svg)
    return [(g.find(SVG + "title").text, float(g.find(SVG + "rect").get("width")),
             [t.text for t in g.iter(SVG + "text")]) for g in root.iter(SVG + "g")]


def test_bar_chart_orders_truncates_and_labels_values():
    long = "A diagnosis with a remarkably long name that cannot fit on the left"
    svg = bar_chart_svg({"b": 5, "a": 5, long: 9, "c": 1, "d": 0}, "Top <values>", top=3)
    root = ET.fromstring(svg)
    assert root.find(SVG + "title").text == "Top <values>"
    rows = bars(svg)
    assert [title for title, _, _ in rows] == [f"{long}: 9", "a: 5", "b: 5"]
    assert rows[0][1] == 380 and rows[1][1] == pytest.approx(380 * 5 / 9, abs=0.1)
    label, value = rows[0][2]
    assert label.endswith("…") and len(label) <= 36 and value == "9"
    assert "the 3 most frequent of 5 values" in texts(svg)
    assert bar_chart_svg([("a", 5), ("b", 5), (long, 9), ("c", 1), ("d", 0)],
                         "Top <values>", top=3) == svg


def test_bar_chart_edge_cases():
    assert "no values to show" in texts(bar_chart_svg({}, "Nothing"))
    assert [r[1] for r in bars(bar_chart_svg({"a": 0}, "Zero"))] == [0]
    with pytest.raises(ValueError):
        bar_chart_svg({"a": -1}, "Negative")
    with pytest.raises(TypeError):
        bar_chart_svg({"a": 1.5}, "Fraction")
    with pytest.raises(ValueError):
        bar_chart_svg({"a": 1}, "None", top=0)


def test_bar_chart_of_the_real_conditions():
    with open(sample_path(), newline="", encoding="utf-8") as handle:
        counts = Counter(row["DESCRIPTION"] for row in csv.DictReader(handle))
    rows = bars(bar_chart_svg(counts, "DESCRIPTION", top=10))
    assert len(rows) == 10
    assert rows[0][0] == "Viral sinusitis (disorder): 1248"
    assert sum(counts.values()) == 8376 and len(counts) == 129


DESCRIBE = """/data/input/conditions/conditions.csv
count                           8376
unique                           129
top       Viral sinusitis (disorder)
freq                            1248
Name: DESCRIPTION, dtype: object
"""


def test_describe_table():
    table = ET.fromstring(describe_table_html(describe_summary(DESCRIBE)))
    head = [th.text for th in table.iter("th")]
    assert head == ["dataset", "count", "unique", "top", "freq"]
    cells = [td.text for td in table.find("tbody").iter("td")]
    assert cells == ["/data/input/conditions/conditions.csv", "8376", "129",
                     "Viral sinusitis (disorder)", "1248"]
    escaped = describe_table_html({"<x>": {"count": 1, "top": "a&b"}})
    assert "&lt;x&gt;" in escaped and "a&amp;b" in escaped
    assert [td.text for td in ET.fromstring(escaped).iter("td")] == ["<x>", "1", None, "a&b",
                                                                     None]
    single = ET.fromstring(describe_table_html({"count": 3, "unique": 2, "top": "t",
                                                "freq": 2}))
    assert [td.text for td in single.iter("td")][1:] == ["3", "2", "t", "2"]
    assert "no describe() output" in describe_table_html({})


def test_importing_pictures_and_widgets_stays_light():
    code = ("import sys, nitronb.notebook.pictures, nitronb.notebook.widgets; "
            "heavy = {'ipywidgets', 'IPython', 'requests', 'pandas', 'cryptography'} & "
            "set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
