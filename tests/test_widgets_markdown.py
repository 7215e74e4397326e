"""The long description's Markdown, rendered as GitHub renders it and sanitized, in the dataset
form's preview."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from nitronb.notebook.markdown import render_markdown, sanitize_html

SCRIPT = "<script>window.__xss = 1; alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
GFM = """# Conditions

| code | description |
|-----:|:------------|
| 1 | ~~old~~ new |

- [x] encrypted
- [ ] approved

See https://synthetichealth.github.io/synthea/ and [the docs](https://example.org/a?b=1).
[click me](javascript:alert(1)) and <a href="JaVaScRiPt:alert(2)">me too</a>
"""


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text = ""
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text += data

    def named(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.tags if tag == name]


def assert_inert(html: str) -> Tags:
    parsed = Tags(html)
    names = {tag for tag, _ in parsed.tags}
    assert not names & {"script", "style", "iframe", "object", "embed", "form", "svg"}, names
    handlers = [(tag, name) for tag, attrs in parsed.tags for name in attrs
                if name.lower().startswith("on")]
    assert handlers == []
    urls = [value or "" for _, attrs in parsed.tags for name, value in attrs.items()
            if name in ("href", "src", "action", "formaction")]
    assert not any(url.strip().lower().startswith(("javascript:", "data:", "vbscript:"))
                   for url in urls), urls
    return parsed


@pytest.mark.parametrize("text", [SCRIPT, IMG, f"{SCRIPT}\n\n{IMG}\n", f"text {IMG} and {SCRIPT}",
                                  "<svg onload=alert(1)><circle r=1></svg>",
                                  "<iframe src=javascript:alert(1)></iframe>",
                                  '<a href="java&#x73;cript:alert(1)">x</a>',
                                  "<details open ontoggle=alert(1)>x</details>"])
def test_raw_html_that_could_run_is_removed(text):
    html = render_markdown(text)
    parsed = assert_inert(html)
    assert "<script" not in html.lower() and "onerror" not in html.lower()
    assert "alert(1)" not in parsed.text  # a script's body is dropped, not shown as text


def test_the_image_survives_without_its_handler():
    assert Tags(render_markdown(IMG)).named("img") == [{"src": "x"}]


def test_github_flavoured_markdown_renders():
    html = render_markdown(GFM)
    parsed = assert_inert(html)
    assert parsed.named("h1") == [{}]
    assert [a.get("style") for a in parsed.named("th")] == ["text-align:right",
                                                             "text-align:left"]
    assert len(parsed.named("td")) == 2 and "<s>old</s> new" in html
    boxes = parsed.named("input")
    assert [b.get("type") for b in boxes] == ["checkbox", "checkbox"]
    assert ["checked" in b for b in boxes] == [True, False]
    assert all("disabled" in b for b in boxes)
    links = parsed.named("a")
    hrefs = [a.get("href") for a in links]
    assert hrefs[:2] == ["https://synthetichealth.github.io/synthea/",
                         "https://example.org/a?b=1"]
    assert all(a.get("target") == "_blank" and a.get("rel") == "noopener noreferrer"
               for a in links)
    # javascript: links are dropped: the Markdown one stays text, the HTML one loses its href
    assert "[click me](javascript:alert(1))" in parsed.text
    assert hrefs[2:] == [None]


def test_blank_text_renders_nothing_and_plain_html_is_kept():
    assert render_markdown("  \n") == ""
    assert sanitize_html('<b>bold</b> <a href="mailto:a@b.c">mail</a>') == \
        '<b>bold</b> <a href="mailto:a@b.c" target="_blank" rel="noopener noreferrer">mail</a>'


def test_the_dataset_form_previews_the_long_description_sanitized():
    pytest.importorskip("ipywidgets")
    from nitronb.keys import generate_key
    from nitronb.notebook.widgets import DatasetForm

    form = DatasetForm(None, url="http://127.0.0.1:9/b/o.enc?X-Amz-Signature=00",
                       key=generate_key(), long_description=f"# Start\n\n{SCRIPT}\n\n{IMG}\n")
    assert form.preview.value.startswith("<h1>Start</h1>")
    assert_inert(form.preview.value)
    form.long_description.value = GFM
    assert "<s>old</s>" in form.preview.value and 'type="checkbox"' in form.preview.value
    assert_inert(form.preview.value)
    form.long_description.value = ""
    assert form.preview.value == ""
