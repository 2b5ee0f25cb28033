"""Shared links: the page's controls as URL query keys (models/controls.py names them), and back."""

from __future__ import annotations

from collections.abc import Mapping

from models.controls import CONTROLS


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
