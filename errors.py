"""The errors the app reports to people rather than as tracebacks.

``SourceError``: a model source that cannot be loaded (folders, Hub ids, GGUF packages, adapters), the one type
the app and ``--check`` report to the owner. ``Refusal``: a request the server refuses, told to the visitor in
their language: it carries a key of words.py's messages and the values that fill it, so the page says it in
Turkish or English and ``str()`` (logs, the API) in English.
"""

from __future__ import annotations

from dataclasses import dataclass

from words import say


class SourceError(OSError):
    """A source that could not be loaded: the message names the source, what was tried and what to do."""


@dataclass(frozen=True)
class Term:
    """A value of a refusal that is itself text to translate: a control's name (``key`` in words.py), with an
    untranslated ``suffix`` such as a schedule anchor's ``[2]``."""
    key: str
    suffix: str = ""


class Refusal(ValueError):
    """A refused request: what was wrong, where, and what to do, in the visitor's language (``text``)."""

    def __init__(self, key: str, **values):
        super().__init__(key)
        self.key, self.values = key, values

    def text(self, lang: str) -> str:
        filled = {k: say(lang, v.key) + v.suffix if isinstance(v, Term) else v for k, v in self.values.items()}
        return say(lang, self.key, **filled)

    def __str__(self) -> str:
        return self.text("en")
