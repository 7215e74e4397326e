"""Pictures for the notebooks: the workflow graph with its approval state, a bar chart of the most
frequent values, and the ``describe()`` figures as a table.

Every picture is hand-written SVG (or HTML) text with no dependency. The same input always gives
byte-identical text, so stored notebook outputs stay stable. Colours come from the Okabe–Ito
palette (distinguishable with the common colour-vision deficiencies), and every state is also
written as a symbol and a word, never shown by colour alone.
"""

from __future__ import annotations

import hashlib
import html
import json
import operator
import re
from typing import Any, Iterable, Mapping

WIDTH = 720
FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"

# Okabe–Ito
BLUE, GREEN, ORANGE, VERMILLION, PURPLE = ("#0072B2", "#009E73", "#E69F00", "#D55E00",
                                          "#CC79A7")
GREY, INK, MUTED = "#BBBBBB", "#1A1A1A", "#555555"

#: overall status → (badge fill, symbol); badge text is always dark on these fills
STATUS_STYLE = {"APPROVED": (GREEN, "✓"), "PENDING": (ORANGE, "…"),
                "DENIED": (VERMILLION, "✗"), "DRAFT": (GREY, "✎"),
                "REVOKED": (VERMILLION, "⊘"), "SUPERSEDED": (GREY, "↷")}
#: states of an approved version that no longer runs (the final workflow's ``status``)
WITHDRAWN = ("REVOKED", "SUPERSEDED")

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


# --- text helpers ---------------------------------------------------------------------------


def _esc(value: Any) -> str:
    """Text safe inside an XML element or a double-quoted attribute."""
    text = _NOT_XML.sub("\ufffd", str(value))
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace(
        '"', "&quot;")


def _fit(text: Any, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:max(limit - 1, 1)].rstrip() + "…"


def _uid(*parts: Any) -> str:
    """A short id derived from the content: stable, and distinct between different pictures."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return "nb" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:10]


def _text(x: float, y: float, text: Any, *, size: int = 13, weight: str | None = None,
          fill: str = INK, anchor: str | None = None) -> str:
    attrs = f'x="{x:g}" y="{y:g}" font-size="{size}" fill="{fill}"'
    if weight:
        attrs += f' font-weight="{weight}"'
    if anchor:
        attrs += f' text-anchor="{anchor}"'
    return f"<text {attrs}>{_esc(text)}</text>"


def _svg(width: int, height: int, uid: str, title: str, desc: str, body: list[str]) -> str:
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-labelledby="{uid}-title {uid}-desc" '
            f'font-family="{_esc(FONT)}">')
    return "\n".join([head, f'<title id="{uid}-title">{_esc(title)}</title>',
                      f'<desc id="{uid}-desc">{_esc(desc)}</desc>',
                      f'<rect width="{width}" height="{height}" fill="#FFFFFF"/>',
                      *body, "</svg>"]) + "\n"


# --- the workflow ------------------------------------------------------------------------------

_COL_W, _BOX_H, _ROW = 190, 44, 76
_LEFT_X, _APP_X, _APP_W, _RIGHT_X = 16, 257, 206, WIDTH - 16 - _COL_W
_TOP = 60


def _object_label(key: str, obj: Mapping[str, Any]) -> str:
    return str(obj.get("name") or key)


def _app_ports(key: str, obj: Mapping[str, Any], edges: list[Mapping[str, Any]]
               ) -> tuple[list[str], list[str]]:
    """The app's in and out ports: its declared ports if known, else those its edges use."""
    ins: list[str] = []
    outs: list[str] = []
    declared = obj.get("ports")
    if isinstance(declared, Mapping):
        for name, direction in declared.items():
            (outs if str(direction).lower() == "out" else ins).append(str(name))
    for edge in edges:
        port = str(edge.get("port", ""))
        if edge.get("target") == key and port not in ins:
            ins.append(port)
        elif edge.get("source") == key and port not in outs:
            outs.append(port)
    return ins, outs


def _approval_rows(approval: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(symbol, colour, approver, what they did) per approver."""
    status = str(approval.get("status") or "PENDING").upper()
    approvals = approval.get("approvals") or {}
    denied_by = approval.get("denied_by")
    rows = []
    for name in approval.get("approvers") or []:
        if name in approvals:
            rows.append(("✓", GREEN, str(name), "approved"))
        elif name == denied_by:
            reason = approval.get("reason")
            rows.append(("✗", VERMILLION, str(name),
                         f"declined: {reason}" if reason else "declined"))
        elif status == "PENDING":
            rows.append(("…", ORANGE, str(name), "pending"))
        else:
            rows.append(("–", MUTED, str(name), "no decision"))
    return rows


def workflow_svg(graph: Mapping[str, Any], approval: Mapping[str, Any] | None = None, *,
                 final: Mapping[str, Any] | None = None) -> str:
    """The workflow as SVG: input datasets (with their node names), the app with its ports,
    output datasets, each object's owner, and who has approved.

    ``graph`` is a draft or final workflow as the manager serves it (``objects`` and ``edges``);
    objects may carry ``name``, ``owner`` and (apps) ``ports`` — see :func:`annotate_workflow`.
    ``approval`` is an approval request; a final workflow's own ``approval`` is used when it is
    omitted, and with neither the workflow is shown as a draft. ``final`` is the version as
    the manager serves it (``graph`` itself when it is one): when REVOKED or SUPERSEDED, that
    is the status shown, with who withdrew the approval and why, or the superseding version.
    """
    objects: Mapping[str, Mapping[str, Any]] = graph.get("objects") or {}
    edges = [e for e in (graph.get("edges") or []) if isinstance(e, Mapping)]
    if approval is None and isinstance(graph.get("approval"), Mapping):
        approval = graph["approval"]
    if final is None and isinstance(graph.get("approval"), Mapping):
        final = graph
    status = str(approval.get("status") or "PENDING").upper() if approval else "DRAFT"
    withdrawn = None
    if final is not None and str(final.get("status") or "").upper() in WITHDRAWN:
        status = str(final["status"]).upper()
        withdrawn = (f"approval withdrawn by {final.get('revoked_by')}: "
                     f"{final.get('revoke_reason')}" if status == "REVOKED" else
                     f"superseded by version {final.get('superseded_by')}: it no longer runs")
    fill, symbol = STATUS_STYLE.get(status, (GREY, "?"))

    apps = [k for k, o in objects.items() if o.get("type") == "app"]
    targets = {e.get("target") for e in edges}
    datasets = [k for k, o in objects.items() if o.get("type") != "app"]
    outputs = [k for k in datasets if k in targets]
    inputs = [k for k in datasets if k not in targets]

    ports = {k: _app_ports(k, objects[k], edges) for k in apps}
    app_heights = {k: 52 + 22 * max(len(p[0]), len(p[1]), 1) for k, p in ports.items()}
    app_stack = sum(h + 32 for h in app_heights.values())
    area = max(len(inputs) * _ROW, len(outputs) * _ROW, app_stack, _ROW)

    uid = _uid(dict(graph), dict(approval) if approval else None,
               *((withdrawn,) if withdrawn else ()))
    name = graph.get("name") or graph.get("id") or "workflow"
    version = graph.get("version")
    heading = f"Workflow {_fit(name, 48)}" + (f" (version {version})" if version else "")
    body = [
        "<defs>",
        f'<marker id="{uid}-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        f'fill="{MUTED}"/></marker>',
        "</defs>",
        _text(16, 30, heading, size=16, weight="bold"),
    ]
    badge = f"{symbol} {status}"
    badge_w = 16 + 9 * len(badge)
    body.append(f'<g><title>{_esc("overall status: " + status)}</title>'
                f'<rect x="{WIDTH - 16 - badge_w}" y="12" width="{badge_w}" height="26" rx="13" '
                f'fill="{fill}"/>'
                + _text(WIDTH - 16 - badge_w / 2, 30, badge, size=13, weight="bold", fill=INK,
                        anchor="middle") + "</g>")

    anchors: dict[str, tuple[float, float]] = {}   # dataset key → (left x, centre y)
    port_at: dict[tuple[str, str, str], tuple[float, float]] = {}  # (app, in|out, port) → point
    lines: list[str] = []

    def dataset_box(key: str, x: float, y: float, caption: str, stroke: str, shade: str) -> None:
        obj = objects[key]
        label = _object_label(key, obj)
        owner = obj.get("owner")
        # the node name is the dataset's folder in the enclave: <port>/<node>/dataset/
        body.append(f'<g><title>{_esc(f"{caption} {label}, node {key}")}</title>'
                    f'<rect x="{x}" y="{y:g}" width="{_COL_W}" height="{_BOX_H}" rx="6" '
                    f'fill="{shade}" stroke="{stroke}" stroke-width="2"/>'
                    + _text(x + 10, y + 16, caption, size=11, fill=MUTED)
                    + _text(x + _COL_W - 8, y + 16, f"node {_fit(key, 10)}", size=10,
                            fill=MUTED, anchor="end")
                    + _text(x + 10, y + 34, _fit(label, 24), size=13, weight="bold") + "</g>")
        if owner:
            body.append(_text(x + 10, y + _BOX_H + 15, f"owner: {_fit(owner, 26)}", size=11,
                              fill=MUTED))
        anchors[key] = (x, y + _BOX_H / 2)
        lines.append(f"{caption} {label} (node {key}" + (f", owner {owner})" if owner else ")"))

    for i, key in enumerate(inputs):
        y = _TOP + (area - len(inputs) * _ROW) / 2 + i * _ROW + 6
        dataset_box(key, _LEFT_X, y, "input dataset", BLUE, "#DCEBF7")
    for i, key in enumerate(outputs):
        y = _TOP + (area - len(outputs) * _ROW) / 2 + i * _ROW + 6
        dataset_box(key, _RIGHT_X, y, "output dataset", PURPLE, "#F7E6EF")

    y = _TOP + (area - app_stack) / 2 + 6
    for key in apps:
        obj, height = objects[key], app_heights[key]
        label, owner = _object_label(key, obj), obj.get("owner")
        ins, outs = ports[key]
        parts = [f'<g><title>{_esc(f"app {label}")}</title>'
                 f'<rect x="{_APP_X}" y="{y:g}" width="{_APP_W}" height="{height}" rx="8" '
                 f'fill="#F2F2F2" stroke="{INK}" stroke-width="2"/>',
                 _text(_APP_X + _APP_W / 2, y + 16, "app", size=11, fill=MUTED, anchor="middle"),
                 _text(_APP_X + _APP_W / 2, y + 34, _fit(label, 25), size=13, weight="bold",
                       anchor="middle")]
        for side, names in (("in", ins), ("out", outs)):
            for j, port in enumerate(names):
                py = y + 44 + (height - 48) * (j + 0.5) / len(names)
                px = _APP_X if side == "in" else _APP_X + _APP_W
                port_at[(key, side, port)] = (px, py)
                parts.append(f'<rect x="{px - 5:g}" y="{py - 5:g}" width="10" height="10" '
                             f'fill="#FFFFFF" stroke="{INK}" stroke-width="1.5"/>')
                parts.append(_text(px + 10 if side == "in" else px - 10, py + 4, _fit(port, 10),
                                   size=11, fill=MUTED, anchor="start" if side == "in" else "end"))
        body.append("".join(parts) + "</g>")
        if owner:
            body.append(_text(_APP_X + _APP_W / 2, y + height + 15, f"owner: {_fit(owner, 24)}",
                              size=11, fill=MUTED, anchor="middle"))
        lines.append(f"app {label}" + (f" (owner {owner})" if owner else "")
                     + f", ports in: {', '.join(ins) or 'none'}; out: {', '.join(outs) or 'none'}")
        y += height + 32

    for edge in edges:
        source, target, port = edge.get("source"), edge.get("target"), str(edge.get("port", ""))
        if source in anchors and (target, "in", port) in port_at:
            x1, y1 = anchors[source][0] + _COL_W, anchors[source][1]
            x2, y2 = port_at[(target, "in", port)]
            x2 -= 6
        elif target in anchors and (source, "out", port) in port_at:
            x1, y1 = port_at[(source, "out", port)]
            x1 += 6
            x2, y2 = anchors[target]
            x2 -= 2
        else:
            continue
        bend = (x2 - x1) / 2
        body.append(f'<path d="M{x1:g},{y1:g} C{x1 + bend:g},{y1:g} {x2 - bend:g},{y2:g} '
                    f'{x2:g},{y2:g}" fill="none" stroke="{MUTED}" stroke-width="2" '
                    f'marker-end="url(#{uid}-arrow)"/>')
        lines.append(f"{_object_label(source, objects.get(source, {}))} → port {port} → "
                     f"{_object_label(target, objects.get(target, {}))}")

    y = _TOP + area + 24
    body.append(f'<line x1="16" y1="{y - 14}" x2="{WIDTH - 16}" y2="{y - 14}" stroke="#DDDDDD"/>')
    if approval:
        rows = _approval_rows(approval)
        body.append(_text(16, y + 6, f"Approval: {status.lower()}", size=13, weight="bold"))
        for i, (mark, colour, who, what) in enumerate(rows):
            ry = y + 30 + i * 22
            body.append(f'<g><title>{_esc(f"{who}: {what}")}</title>'
                        + _text(24, ry, mark, size=14, weight="bold", fill=colour)
                        + _text(44, ry, _fit(who, 24), size=13, weight="bold")
                        + _text(230, ry, _fit(what, 64), size=13) + "</g>")
            lines.append(f"{who}: {what}")
        height = y + 30 + len(rows) * 22
        if withdrawn:
            body.append(f'<g><title>{_esc(withdrawn)}</title>'
                        + _text(24, height, STATUS_STYLE[status][1], size=14, weight="bold",
                                fill=VERMILLION if status == "REVOKED" else MUTED)
                        + _text(44, height, _fit(withdrawn, 86), size=13, weight="bold")
                        + "</g>")
            lines.append(withdrawn)
            height += 22
    else:
        body.append(_text(16, y + 6, "Draft: approval not requested yet", size=13, weight="bold"))
        height = y + 22
    title = f"{heading}: {status.lower()}"
    return _svg(WIDTH, int(height), uid, title, "; ".join(lines), body)


def annotate_workflow(client: Any, graph: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``graph`` whose objects carry ``name``, ``owner`` and (apps) ``ports``, asked
    of the manager through ``client`` (a :class:`nitronb.ccm.client.CCMClient`)."""
    out = dict(graph)
    objects = {}
    for key, obj in (graph.get("objects") or {}).items():
        obj = dict(obj)
        if obj.get("type") == "app" and obj.get("app_config_id"):
            config = client.get_app_config(obj["app_config_id"])
            obj.setdefault("name", config.get("name"))
            obj.setdefault("owner", config.get("owner"))
            obj.setdefault("ports", config.get("ports") or {})
        elif obj.get("type") == "dataset" and obj.get("dataset_id"):
            dataset = client.get_dataset(obj["dataset_id"])
            obj.setdefault("name", dataset.get("name"))
            obj.setdefault("owner", dataset.get("owner"))
        objects[key] = obj
    out["objects"] = objects
    return out


# --- the most frequent values --------------------------------------------------------------


def _pairs(counts: Mapping[str, int] | Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    items = counts.items() if hasattr(counts, "items") else counts
    totals: dict[str, int] = {}
    for label, value in items:
        try:
            number = operator.index(value)
        except TypeError:
            raise TypeError(f"the count of {label!r} is {value!r}, not a whole number.") from None
        if number < 0:
            raise ValueError(f"the count of {label!r} is negative ({number}).")
        totals[str(label)] = totals.get(str(label), 0) + number
    return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))


def bar_chart_svg(counts: Mapping[str, int] | Iterable[tuple[str, int]], title: str, *,
                  top: int = 10) -> str:
    """A horizontal bar chart of the ``top`` most frequent values (ties in label order)."""
    if top < 1:
        raise ValueError(f"top must be at least 1, not {top}.")
    pairs = _pairs(counts)
    shown = pairs[:top]
    largest = max((v for _, v in shown), default=0)
    label_end, bar_x, bar_max, row = 256, 264, 380, 24
    uid = _uid(title, shown, len(pairs))
    body = [_text(16, 26, _fit(title, 80), size=15, weight="bold")]
    lines = []
    for i, (label, value) in enumerate(shown):
        y = 44 + i * row
        width = 0 if largest == 0 else round(bar_max * value / largest, 1)
        body.append(f'<g><title>{_esc(f"{label}: {value}")}</title>'
                    + _text(label_end, y + 13, _fit(label, 36), size=12, anchor="end")
                    + f'<rect x="{bar_x}" y="{y + 2}" width="{width:g}" height="16" '
                    f'fill="{BLUE}"/>'
                    + _text(bar_x + width + 6, y + 14, value, size=12, fill=INK) + "</g>")
        lines.append(f"{label}: {value}")
    y = 44 + len(shown) * row
    if not shown:
        body.append(_text(16, y + 12, "no values to show", size=12, fill=MUTED))
        y += row
    elif len(pairs) > len(shown):
        body.append(_text(16, y + 16, f"the {len(shown)} most frequent of {len(pairs)} values",
                          size=11, fill=MUTED))
        y += row
    return _svg(WIDTH, y + 10, uid, title, "; ".join(lines) or "no values", body)


# --- describe() -------------------------------------------------------------------------------

_FIELDS = ("count", "unique", "top", "freq")


def describe_table_html(summary: Mapping[str, Any]) -> str:
    """The ``describe()`` figures per dataset (as :func:`nitronb.results.describe_summary`
    returns them) as an HTML table; a single dataset's figures are accepted too."""
    if summary and not any(isinstance(v, Mapping) for v in summary.values()):
        summary = {"": summary}
    rows = []
    for name, fields in summary.items():
        fields = fields if isinstance(fields, Mapping) else {}
        cells = [f'<td style="text-align:left">{html.escape(str(name))}</td>']
        for key in _FIELDS:
            value = fields.get(key, "")
            align = "left" if key == "top" else "right"
            cells.append(f'<td style="text-align:{align}">{html.escape(str(value))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    if not rows:
        rows.append(f'<tr><td colspan="{len(_FIELDS) + 1}">no describe() output</td></tr>')
    head = "".join(f'<th style="text-align:{"left" if k in ("dataset", "top") else "right"}">'
                   f"{k}</th>" for k in ("dataset", *_FIELDS))
    return ('<table class="nitronb-describe">\n<thead><tr>' + head + "</tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody>\n</table>\n")


# --- display ----------------------------------------------------------------------------------


def show_svg(svg: str) -> None:
    """Display SVG text in the notebook (printed as text outside IPython)."""
    try:
        from IPython.display import SVG, display
    except ImportError:
        print(svg)
        return
    display(SVG(data=svg))


def show_html(text: str) -> None:
    """Display HTML text in the notebook (printed as text outside IPython)."""
    try:
        from IPython.display import HTML, display
    except ImportError:
        print(text)
        return
    display(HTML(text))


__all__ = ["workflow_svg", "annotate_workflow", "bar_chart_svg", "describe_table_html",
           "show_svg", "show_html", "STATUS_STYLE"]
