"""Shared links: the page's controls as URL query keys (serving/controls.py names them), and back."""

from __future__ import annotations

from collections.abc import Mapping

from serving.controls import CONTROLS


def values_from_query(query: Mapping[str, str], defaults: Mapping[str, object], keep) -> list:
    """Each control's value from a shared link's query, in table order; ``keep`` where the link has no key (the
    page keeps what it shows), the default where a number does not parse."""
    values = []
    for c in CONTROLS:
        if c.link not in query:
            values.append(keep)
        elif c.kind == "checkbox":
            values.append(query[c.link].lower() in ("true", "1", "yes"))
        elif c.kind in ("slider", "number"):
            try:
                values.append(float(query[c.link]))
            except ValueError:
                values.append(defaults[c.name])
        else:
            values.append(query[c.link])
    return values


SET_KEY = "set"  # a question set's link: its questions, one per line, beside the controls' keys


def questions_from_query(query: Mapping[str, str]) -> str | None:
    """A shared question set's questions (one per line), or None when the link has no set."""
    text = query.get(SET_KEY)
    return text.replace("\r\n", "\n") if text is not None and text.strip() else None
