"""What every widget of :mod:`nitronb.notebook.widgets` shares: ipywidgets imported on first use, the
status-line styles, the plain-text form of a displayed widget, and the sanitized Markdown
preview."""

from __future__ import annotations

import html
from typing import Any

from nitronb.errors import NitronbError, WidgetsUnavailableError

_ERROR = '<span style="color:#B00020"><b>✗</b> {}</span>'
_OK = '<span style="color:#00734F"><b>✓</b> {}</span>'
_DECLINED = '<span style="color:#B45309"><b>⊘</b> {}</span>'
_INFO = '<span style="color:#555555">{}</span>'


def _ipywidgets():
    try:
        import ipywidgets
    except ImportError:
        raise WidgetsUnavailableError(
            "the interactive forms need ipywidgets, which is not installed.",
            hint="Install it with `pip install ipywidgets`, or call the nitronb functions "
                 "directly.") from None
    return ipywidgets


def _error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, NitronbError) else f"{type(exc).__name__}: {exc}"


class _Shown:
    """Displays as its ``widget``; its plain-text form (what a notebook saved without the
    widget's state shows) is :meth:`summary`, not the widget tree."""

    widget: Any

    def summary(self) -> str:
        """One line saying what the widget shows now."""
        return type(self).__name__

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        if isinstance(bundle, tuple):  # (data, metadata)
            return ({**bundle[0], "text/plain": self.summary()}, *bundle[1:])
        return {**(bundle or {}), "text/plain": self.summary()}

    def __repr__(self) -> str:
        return f"<{self.summary()}>"


def _show_markdown(preview: Any, text: str) -> None:
    """Show ``text`` in the HTML widget ``preview`` as GitHub renders Markdown: sanitized, so
    that raw HTML in it (scripts, event handlers, ``javascript:`` links) never runs."""
    from nitronb.notebook.markdown import render_markdown

    try:
        preview.value = render_markdown(text)
    except NitronbError as exc:
        preview.value = _ERROR.format(html.escape(_error_text(exc)))
