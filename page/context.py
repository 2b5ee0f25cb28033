"""What every part of the page shares, in one object passed to each: the models (loading or loaded), the preset,
the owner's limits, the visitors' running requests, the controls' defaults and components, the page's words; and
``endpoint``, a handler of named parameters as Gradio's API sees it. Gradio is imported where it is used: the
command line reads ``Limits`` from here before it needs any page (``app.py --check``)."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from errors import Refusal
from page.tasks import Loading, Visitors
from serving import controls as table
from serving.columns import COLUMNS
from words import TEXT, say

if TYPE_CHECKING:
    import gradio as gr

log = logging.getLogger("harman")


@dataclass(frozen=True)
class Limits:
    """What the owner allows on this deployment."""
    heldout: tuple[str, ...] = ()  # held-out TSVs offered for scores and sweeps
    max_rows: int = 60
    max_bench_items: int = 1836  # TurkMorfBench items one score may use (its whole core set)
    max_sweep_points: int = 21
    save_dir: str = "saved"
    download_mb: int = 200  # saved merges up to this size are also offered as a zip download
    max_saves: int = 20  # saved merges the save directory may hold (each a whole checkpoint)
    keep_archives: int = 3  # download zips kept; older ones are removed
    max_question_chars: int = 2000  # a longer question is refused, not cut
    max_question_tokens: int = 512
    max_requests_per_visitor: int = 3  # requests one visitor may have running at once
    max_set_questions: int = 10  # questions one question set may hold
    hub_token: str | None = field(default=None, repr=False)  # the owner's HF_TOKEN: saved merges may be pushed
    max_votes_per_minute: int = 20  # blind votes one visitor may cast a minute


@dataclass
class PageContext:
    """The page's shared state. ``controls`` fills as page/controls.py lays the controls out (name -> component)."""
    loading: Loading
    preset: object
    limits: Limits
    visitors: Visitors
    defaults: dict  # each control's value when the page opens
    i18n: gr.I18n
    examples: list[str]
    controls: dict = field(default_factory=dict)

    def control_list(self, but_question: bool = False) -> list:
        """The controls' components in table order (the compare endpoint's inputs)."""
        return [self.controls[n] for n in control_names()[1 if but_question else 0:]]

    def refused(self, err, lang: str) -> gr.Error:
        """The error the visitor reads: why, in their language (a Refusal's own words, else the message)."""
        import gradio as gr

        # An ordinary refusal is the visitor's to read, not a server fault: no traceback in the log.
        log.info("refused: %s", err)
        return gr.Error(f"{say(lang, 'error')}: {err.text(lang) if isinstance(err, Refusal) else err}",
                        title="harman", print_exception=False)


def page_context(loading: Loading, preset, limits: Limits, examples: list[str]) -> PageContext:
    """The context of a page for this preset: its words (the heading names the preset), defaults and visitors."""
    import gradio as gr

    gen = preset.generation
    text = {lang: {**entries, "heading": "### harman · " + ((preset.title_en if lang == "en" and preset.title_en
                                                             else preset.title) or preset.name)}
            for lang, entries in TEXT.items()}
    return PageContext(loading, preset, limits, Visitors(limits.max_requests_per_visitor),
                       {c.name: getattr(gen, c.name) if c.preset else c.default for c in table.CONTROLS},
                       gr.I18n(**text), list(examples))


def control_names() -> tuple[str, ...]:
    """The controls' names in table order (read when a page is built: a test may add a row to the table)."""
    return tuple(c.name for c in table.CONTROLS)


def visitor(request) -> str:
    """The visitor a request is from (their page session; "api" for a client without one)."""
    return getattr(request, "session_hash", None) or "api"


def wanted_columns(c) -> tuple[str, ...]:
    """The columns a request answers in: the extra one only with a method chosen."""
    return tuple(n for n in COLUMNS if n != "extra" or c.extra_method)


def endpoint(handler, named: tuple[str, ...] = (), but_question: bool = False, progress: bool = False):
    """``handler(**named inputs, c=Controls, request=…[, progress=…])`` as Gradio sees a function of the inputs
    ``named`` followed by the controls (the controls table's names, in its order; ``but_question``: all but the
    first, the single question, which is then empty in ``c``): the API's parameters follow the controls table."""
    import gradio as gr

    every = control_names()
    names = (*named, *every[1 if but_question else 0:])

    def arguments(values) -> dict:
        given = dict(zip(names, values))
        kept = {"c": table.from_values([given.get(n) for n in every]), "request": values[len(names)]}
        if progress:
            kept["progress"] = values[len(names) + 1]
        return {**{n: given[n] for n in named}, **kept}

    if inspect.isgeneratorfunction(handler):
        def gradio_fn(*values):
            return (yield from handler(**arguments(values)))
    else:
        def gradio_fn(*values):
            return handler(**arguments(values))

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    # Defaults of None: Gradio's API then offers None as the default of an input whose component starts empty (a
    # per-model TIES density: follow the density); the others default to their components' values.
    params = [inspect.Parameter(n, kind, default=None) for n in names]
    params.append(inspect.Parameter("request", kind, default=None, annotation=gr.Request))
    if progress:
        params.append(inspect.Parameter("progress", kind, default=gr.Progress()))
    gradio_fn.__signature__ = inspect.Signature(params)
    gradio_fn.__annotations__ = {"request": gr.Request}  # Gradio finds the request by its type hint
    gradio_fn.__name__ = gradio_fn.__qualname__ = handler.__name__  # the name Gradio gives a private endpoint
    gradio_fn.__doc__ = handler.__doc__
    return gradio_fn
