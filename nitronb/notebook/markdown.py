"""GitHub-flavoured Markdown rendered to HTML that is safe to put into a page.

A dataset's long description is written by its owner and read by everyone else: it is rendered
the way GitHub renders it (tables, strikethrough, task lists, autolinks, a little raw HTML) and
then sanitized, so that raw HTML such as ``<script>`` or ``onerror=`` handlers never runs in the
reader's page. markdown-it-py renders, nh3 (the ammonia sanitizer) cleans; both are imported when
first used.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

#: extra tags and attributes beyond nh3's defaults: task-list checkboxes (read-only) and the
#: alignment markdown-it writes on table cells
_EXTRA_TAGS = {"input"}
_CLASSES = {"ul": {"contains-task-list"}, "ol": {"contains-task-list"},
            "li": {"task-list-item"}, "input": {"task-list-item-checkbox"}}


@lru_cache(maxsize=1)
def _renderer() -> Any:
    from markdown_it import MarkdownIt
    from mdit_py_plugins.tasklists import tasklists_plugin

    # "gfm-like": CommonMark + tables, strikethrough, autolinks (linkify) and raw HTML, as on
    # GitHub; the raw HTML is left to the sanitizer
    return MarkdownIt("gfm-like").use(tasklists_plugin)


def sanitize_html(html: str) -> str:
    """``html`` with everything that could run or restyle the page removed.

    Scripts, styles, event-handler attributes (``on*``), ``javascript:`` and other non-web URL
    schemes, forms and frames are dropped; links open in a new tab without a referrer.
    """
    import nh3

    # "class" is left to allowed_classes (nh3 refuses it in both)
    attributes = {tag: set(names) for tag, names in nh3.ALLOWED_ATTRIBUTES.items()}
    attributes.setdefault("input", set()).add("checked")
    for tag in ("td", "th"):
        attributes.setdefault(tag, set()).add("style")
    return nh3.clean(
        html,
        tags=set(nh3.ALLOWED_TAGS) | _EXTRA_TAGS,
        clean_content_tags={"script", "style"},
        attributes=attributes,
        tag_attribute_values={"input": {"type": {"checkbox"}}},
        set_tag_attribute_values={"input": {"disabled": "disabled"}, "a": {"target": "_blank"}},
        allowed_classes=_CLASSES,
        filter_style_properties={"text-align"},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer",
    )


def render_markdown(text: str) -> str:
    """GitHub-flavoured Markdown ``text`` as sanitized HTML ('' for blank text).

    Raises :class:`~nitronb.errors.WidgetsUnavailableError` when the renderer or the sanitizer
    is not installed.
    """
    if not text.strip():
        return ""
    try:
        renderer = _renderer()
        import nh3  # noqa: F401 - the sanitizer below
    except ImportError as exc:
        from nitronb.errors import WidgetsUnavailableError

        raise WidgetsUnavailableError(
            f"the Markdown preview needs {exc.name}, which is not installed.",
            hint="Install nitronb's dependencies with `pip install -e .`.") from None
    return sanitize_html(renderer.render(text))


__all__ = ["render_markdown", "sanitize_html"]
