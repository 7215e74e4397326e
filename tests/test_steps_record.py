"""What a step shows: names, reasons and labels from other parties stay text in the Markdown
table (the executed notebooks are shared and exported as HTML)."""

from __future__ import annotations

from nitronb.notebook.steps import Record


def test_html_and_table_breaking_text_stays_text():
    shown = Record("approvals <b>", [
        ("output-owner", 'declined: <img src=x onerror="document.title=1">'),
        ("workflow", "<script>alert(1)</script>"),
        ("labels", "a | b\n| injected | row |\n[x](javascript:alert(1))"),
    ])._repr_markdown_()
    assert "<img" not in shown and "<script" not in shown and "<b>" not in shown
    assert "&lt;img src=x onerror=" in shown and "&lt;script&gt;" in shown
    rows = shown.splitlines()
    assert len(rows) == 7  # title, blank, header, rule and one line per row: no injected row
    assert "](javascript:" not in shown


def test_plain_text_is_unchanged():
    shown = Record("keys", [("data owner: input_key.hex", "63F0…D24A (new, mode 0600)")])
    assert "| data owner: input_key.hex | 63F0…D24A (new, mode 0600) |" in shown._repr_markdown_()
