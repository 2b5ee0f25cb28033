"""The controls on the page, each a component built from its row of serving/controls.py's table: the main sliders
under the question, and the advanced and generation settings in their closed accordions. Every part reads them
through the page's context (``ctx.controls``)."""

from __future__ import annotations

import gradio as gr

from page.context import PageContext
from serving import controls as table
from serving.requests import EXTRA_METHODS


def component(ctx: PageContext, c):
    """A control's component, from its row of the table."""
    label, value = ctx.i18n(c.label), ctx.defaults[c.name]
    if c.kind == "slider":
        hi = ctx.preset.generation.max_new_tokens_cap if c.hi is None else c.hi
        return gr.Slider(c.lo, hi, value, step=c.step, label=label, elem_id=c.name, min_width=160)
    if c.kind == "number":  # an optional one follows another control until given (None, or 0 on the page)
        return gr.Number(value, precision=0 if c.whole else None, step=c.step or 1, label=label, elem_id=c.name,
                         info=ctx.i18n("follows_density") if c.optional else None)
    if c.kind == "checkbox":
        return gr.Checkbox(value, label=label, elem_id=c.name)
    if c.kind == "dropdown":
        return gr.Dropdown([("—", "")] + [(m, m) for m in EXTRA_METHODS], value=value, label=label, elem_id=c.name)
    return gr.Textbox(value=value, label=label, elem_id=c.name)


def build_main(ctx: PageContext) -> None:
    """The main sliders, in a row under the question."""
    with gr.Row():
        for c in table.CONTROLS:
            if c.group == "main":
                ctx.controls[c.name] = component(ctx, c)


def build_settings(ctx: PageContext) -> None:
    """The advanced merge settings and the generation settings, each in a closed accordion."""
    for group in ("advanced", "generation"):
        with gr.Accordion(ctx.i18n(group), open=False, elem_id=f"group-{group}"):
            with gr.Row():
                for c in table.CONTROLS:
                    if c.group == group:
                        ctx.controls[c.name] = component(ctx, c)


def wire(ctx: PageContext) -> None:
    """A control that sets others on the page to its own value (the TIES density sets both per-model ones)."""
    for c in table.CONTROLS:
        same = [ctx.controls[other] for other, how in c.sets if how == "same"]
        if same:
            ctx.controls[c.name].change(copies(same), ctx.controls[c.name], same, api_visibility="private",
                                        queue=False, show_progress="hidden")


def copies(targets: list):
    """The handler that gives each of ``targets`` the moved control's value."""
    def copy_value(value) -> dict:
        return {target: value for target in targets}
    return copy_value
