"""The dataset form: the fields of a dataset definition, a Markdown preview of its long
description, and a button that registers (or updates) it at the manager."""

from __future__ import annotations

import html
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl

from nitronb.datasets import parse_labels
from nitronb.errors import NitronbError, ValidationError
from nitronb.notebook.widgets._base import (_ERROR, _INFO, _OK, _Shown, _error_text, _ipywidgets,
                                            _show_markdown)


class DatasetForm(_Shown):
    """The fields of a dataset definition (DESIGN §2.4) and a button that registers it.

    ``url`` is the presigned URL (its location is shown; of its query string, only the field
    names) and ``key`` the dataset's key (shown by its fingerprint). ``client`` is the owner's
    :class:`~nitronb.ccm.client.CCMClient`. ``registered`` names datasets of this owner that
    the form updates instead of creating when the Name is theirs (name → where it comes from,
    e.g. "registered by step 04"); the form says so beside the Name, as it says when a typed
    name is taken by any other dataset at the manager. After a successful creation or update
    ``result`` holds the manager's answer and ``on_created(result)`` is called; a text it
    returns is shown after the form's message.
    """

    def __init__(self, client: Any = None, *, url: str | None = None, key: str | None = None,
                 on_created: Callable[[dict[str, Any]], str | None] | None = None,
                 name: str = "", description: str = "", labels: Mapping[str, str] | None = None,
                 long_description: str = "", registered: Mapping[str, str] | None = None
                 ) -> None:
        w = _ipywidgets()
        self.client = client
        self.on_created = on_created
        self.result: dict[str, Any] | None = None
        self.registered = dict(registered or {})
        self._taken = self._names_taken()
        self._url, self._key = url, key
        wide = w.Layout(width="95%")
        self.name = w.Text(value=name, description="Name",
                           placeholder="letters, digits, '.', '_' and '-'", layout=wide)
        self.name_note = w.HTML(layout=w.Layout(margin="0 0 0 124px"))
        self.description = w.Text(value=description, description="Description", layout=wide)
        self.labels = w.Textarea(
            value="\n".join(f"{k}={v}" for k, v in (labels or {}).items()),
            description="Labels", placeholder="one key=value per line", layout=wide)
        self.location = w.Text(description="Location", disabled=True, layout=wide)
        self.credentials = w.HTML()
        self.long_description = w.Textarea(
            value=long_description, description="Long description",
            placeholder="GitHub-flavoured Markdown", layout=w.Layout(width="95%", height="140px"))
        self.source = w.Text(description="Load from", placeholder="a Markdown file or URL",
                             layout=w.Layout(width="70%"))
        self.load_button = w.Button(description="Load", icon="download")
        # the Load button's outcome, right under its row (Create's goes under Create)
        self.load_message = w.HTML(layout=w.Layout(margin="0 0 0 124px"))
        self.preview = w.HTML(layout=w.Layout(border="1px solid #DDDDDD", padding="4px",
                                              width="95%"))
        self.create_button = w.Button(description="Create dataset", button_style="primary",
                                       icon="check")
        self.message = w.HTML()
        for field in (self.name, self.description, self.labels, self.location,
                      self.long_description, self.source):
            field.style.description_width = "120px"

        self.long_description.observe(lambda change: _show_markdown(self.preview, change["new"]),
                                      names="value")
        self.name.observe(lambda _change: self._name_changed(), names="value")
        self.load_button.on_click(
            lambda _button: self._guard(self.load_long_description, self.load_message))
        self.create_button.on_click(lambda _button: self._guard(self.create, self.message))
        _show_markdown(self.preview, long_description)
        self.set_source(url, key)
        self._name_changed()
        self.widget = w.VBox([
            self.name, self.name_note, self.description, self.labels, self.location,
            w.HBox([w.HTML('<div style="width:120px;text-align:right;padding-right:8px">'
                           "Credentials</div>"), self.credentials]),
            self.long_description, w.HBox([self.source, self.load_button]), self.load_message,
            w.HTML(_INFO.format("Preview of the long description:")), self.preview,
            self.create_button, self.message])

    def summary(self) -> str:
        name = self.name.value.strip()
        if not name:
            return "dataset form: no name yet"
        doing = "updates" if name in self.registered else "creates"
        return f"dataset form: {doing} dataset {name}"

    def set_source(self, url: str | None, key: str | None) -> None:
        """Use another presigned URL and key (the location and the redacted credentials follow)."""
        from nitronb.keys import fingerprint
        from nitronb.s3.presign import split_url

        self._url, self._key = url, key
        self.location.value = split_url(url)[0] if url else ""
        if not url or not key:
            self.credentials.value = _INFO.format("set by the presigned URL and the key")
            return
        try:
            shown = f"fingerprint {fingerprint(key)}"
        except NitronbError:
            shown = "not a valid key"
        fields = [k for k, _ in parse_qsl(split_url(url)[1], keep_blank_values=True)]
        self.credentials.value = _INFO.format(html.escape(
            f"key {shown}; query string with {', '.join(fields) or 'no fields'} "
            "(values hidden)"))

    def definition(self) -> Any:
        """The :class:`nitronb.datasets.Dataset` the fields describe (raises when invalid)."""
        from nitronb.datasets import Dataset, check_name

        name = self.name.value.strip()
        if not name:
            raise ValidationError("the dataset needs a name.", hint="Type it in the Name field.")
        check_name(name)
        if not self._url or not self._key:
            raise ValidationError("the form has no presigned URL or no key.",
                                  hint="Create it with DatasetForm(client, url=…, key=…).")
        return Dataset.from_url(name, self._url, self._key,
                                description=self.description.value.strip(),
                                labels=parse_labels(self.labels.value),
                                long_description=self.long_description.value)

    def create(self) -> dict[str, Any]:
        """Validate the fields and register the dataset — or, for a name in ``registered``,
        update it (description, labels, long description, credentials); return the manager's
        answer.

        Raises :class:`~nitronb.errors.ValidationError` for invalid fields and
        :class:`~nitronb.errors.ConflictError` when the name is another dataset's, or when a
        registered dataset has another location (a location cannot change).
        """
        from nitronb.errors import ConflictError

        if self.client is None:
            raise ValidationError("the form has no manager client.",
                                  hint="Create it with DatasetForm(CCMClient.for_party(…), …).")
        definition = self.definition()
        name, payload = definition.name, definition.payload()
        if name in self.registered:
            where = self.registered[name]
            location = self.client.get_dataset(name).get("location")
            if location != definition.location:
                raise ConflictError(
                    f"dataset {name} ({where}) has another location; a dataset's location "
                    "cannot change.", hint="Change the name to register another dataset.")
            saved = self.client.update_dataset(name, {k: payload[k] for k in (
                "description", "labels", "long_description", "credentials")})
            said = (f"dataset {name} updated (id {saved.get('id')}): description, labels, "
                    "long description and credentials saved.")
        else:
            try:
                saved = self.client.create_dataset(payload)
            except ConflictError:
                self._taken[name] = self._taken.get(name) or ""
                self._name_changed()
                raise ConflictError(f"dataset {name} exists already{self._owner_of(name)}.",
                                    hint="Change the name to register another.") from None
            said = (f"dataset {name} created (id {saved.get('id')}); the manager shows its "
                    "credentials redacted.")
            self._taken[name] = str(saved.get("owner") or "")
        self.result = saved
        self.message.value = _OK.format(html.escape(said))
        self._name_changed()
        if self.on_created is not None:
            more = self.on_created(saved)
            if more:
                self.message.value += "<br>" + _INFO.format(html.escape(more))
        return saved

    def load_long_description(self) -> str:
        """Fill the long description from the Markdown file (UTF-8) or http(s) URL in
        ``source``; return the text.

        Raises :class:`~nitronb.errors.ValidationError` (the fields keep what was typed) when
        ``source`` is empty, names no readable UTF-8 file, or is over the size limit, and
        :class:`~nitronb.errors.NitronbError` when the URL cannot be fetched.
        """
        from nitronb.datasets import load_long_description, read_long_description_file

        source = self.source.value.strip()
        if not source:
            raise ValidationError("type a file path or an http(s) URL to load from.",
                                  hint="Type it in the Load from field, then click Load.")
        if source.startswith(("http://", "https://")):
            text = load_long_description(source)
        else:
            text = read_long_description_file(source)
        self.long_description.value = text
        shown = source.split("?", 1)[0] + ("?…" if "?" in source else "")
        self.load_message.value = _OK.format(html.escape(
            f"long description loaded from {shown} ({len(text)} characters)"))
        return text

    def _guard(self, action: Callable[[], Any], where: Any) -> None:
        """Run ``action``; its error is shown in the HTML widget ``where``."""
        where.value = ""
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - shown inline; the fields are kept as typed
            where.value = _ERROR.format(html.escape(_error_text(exc)))

    def _names_taken(self) -> dict[str, str]:
        """Names of the datasets at the manager → their owners ({} without a manager)."""
        if self.client is None:
            return {}
        try:
            return {str(d.get("name")): str(d.get("owner") or "")
                    for d in self.client.list_datasets()}
        except NitronbError:
            return {}

    def _owner_of(self, name: str) -> str:
        owner = self._taken.get(name)
        return f" (registered by {owner})" if owner else ""

    def _name_changed(self) -> None:
        """Say beside the Name whether it names a dataset already; label the button."""
        name = self.name.value.strip()
        if name in self.registered:
            self.create_button.description = "Update dataset"
            self.name_note.value = _INFO.format(html.escape(
                f"dataset {name} exists already ({self.registered[name]}): Update dataset "
                "saves these fields into it; change the name to register another."))
        elif name in self._taken and name == (self.result or {}).get("name"):
            self.create_button.description = "Create dataset"
            self.name_note.value = _INFO.format(html.escape(
                f"dataset {name} is registered; change the name to register another."))
        elif name in self._taken:
            self.create_button.description = "Create dataset"
            self.name_note.value = _ERROR.format(html.escape(
                f"dataset {name} exists already{self._owner_of(name)}; change the name to "
                "register another."))
        else:
            self.create_button.description = "Create dataset"
            self.name_note.value = ""


__all__ = ["DatasetForm"]
