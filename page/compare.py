"""The comparison on the page: the question, the main sliders, a streamed column per variant (Model 1, Model 2,
Soup, SLERP, TIES and the optional extra method), Stop, example questions and the shared link that reopens it.

``ComparePart(ctx)`` creates its components where it is called (inside the page's Blocks, in layout order); its
handlers take named parameters and return outputs by component; ``wire`` connects its events. The work is
serving/comparison.py's, what the columns say page/views.py's.
"""

from __future__ import annotations

import itertools
import logging

import gradio as gr

from page import controls, links, views
from page.context import PageContext, endpoint, visitor, wanted_columns
from serving.columns import COLUMNS
from serving.comparison import Request
from serving import controls as table
from serving.requests import check_question, generation_settings, merge_specs
from words import language, say

log = logging.getLogger("harman")

COPY_LINK_JS = """(...values) => {
  const keys = %s;
  const params = new URLSearchParams();
  keys.forEach((k, i) => params.set(k, String(values[i] ?? "")));
  const url = window.location.origin + window.location.pathname + "?" + params.toString();
  if (navigator.clipboard) { navigator.clipboard.writeText(url).catch(() => {}); }
  return url;
}"""
KEEP = object()  # a control a shared link does not name: the page keeps its value


class ComparePart:
    """The question, the main controls and the columns: their components (created here) and handlers."""

    def __init__(self, ctx: PageContext):
        self.ctx = ctx
        i18n = ctx.i18n
        gr.Markdown(i18n("heading"))
        with gr.Row(equal_height=True):
            self.question = ctx.controls["question"] = gr.Textbox(
                label=i18n("question"), placeholder=i18n("question_ph"), scale=6, elem_id="question", autofocus=True,
                lines=1)
            self.generate_btn = gr.Button(i18n("generate"), variant="primary", scale=1, elem_id="generate")
            self.stop_btn = gr.Button(i18n("stop"), variant="stop", scale=1, elem_id="stop")
        controls.build_main(ctx)
        self.notes = gr.Markdown(elem_id="notes")
        self.titles, self.answers, self.footers = {}, {}, {}
        # Not of equal height: stretched columns share out the spare height between title, answer and footer,
        # and the answers then start at different heights, as their footers differ.
        with gr.Row(equal_height=False):
            for name in COLUMNS:
                with gr.Column(min_width=180, visible=name != "extra", elem_id=f"col-{name}") as column:
                    self.titles[name] = gr.Markdown(elem_id=f"title-{name}", elem_classes=["column-title"])
                    self.answers[name] = gr.Textbox(show_label=False, container=False, lines=8, max_lines=24,
                                                    interactive=False, buttons=["copy"], elem_id=f"answer-{name}")
                    self.footers[name] = gr.Markdown(elem_id=f"footer-{name}")
                if name == "extra":
                    self.extra_column = column
        with gr.Row(equal_height=True):
            self.example = gr.Dropdown(ctx.examples, value=None, label=i18n("examples"), scale=4, elem_id="examples")
            self.copy_btn = gr.Button(i18n("copy_link"), size="sm", scale=1, elem_id="copy_link")
            self.link = gr.Textbox(label=i18n("link"), buttons=["copy"], scale=4, elem_id="link")
        self.reports = gr.State({})  # this visitor's latest merge diagnostics, column -> report
        self.from_link = gr.State(False)  # the page was opened with a shared link's question
        self.answer_events = []  # every event that answers the question (Stop cancels them; diagnostics follow)

    @property
    def outputs(self) -> list:
        """The compare endpoint's outputs: the notes, every column's title, answer and footer, the diagnostics."""
        return [self.notes, *self.titles.values(), *self.answers.values(), *self.footers.values(), self.reports]

    def compare(self, c, request: gr.Request):
        """Answer the question with Model 1, Model 2 and every merge; stream all columns together."""
        ctx, lang = self.ctx, language(request)
        log.info("compare: a question of %d characters; soup %s/%s, SLERP t %s, TIES density %s",
                 len(c.question or ""), c.soup_w1, c.soup_w2, c.slerp_t, c.ties_density)
        if not ctx.loading.ready():  # a restart: the page is up before the models
            yield {self.notes: say(lang, "loading")}
        comparison = ctx.loading.get()
        try:
            with ctx.visitors.request(visitor(request)):
                check_question(c.question, comparison.model_set.tokenizer, ctx.limits.max_question_chars,
                               ctx.limits.max_question_tokens)
                specs, settings = merge_specs(c), generation_settings(c, ctx.preset.generation)
                snapshots = comparison.run(Request(c.question, wanted_columns(c), specs, settings))
                first = next(snapshots)
                titles = {self.titles[n]: views.column_title(n, ctx.preset, c, lang) for n in COLUMNS}
                for snap in itertools.chain([first], snapshots):
                    yield {self.notes: views.notes(snap, lang), **titles, **self.columns_shown(snap, c.question, lang),
                           self.reports: {n: col.report for n, col in snap.columns.items() if col.report is not None}}
        except ValueError as err:  # a Refusal, or a value the model code refuses
            raise ctx.refused(err, lang) from None

    def columns_shown(self, snap, question: str, lang: str) -> dict:
        """Every column's answer and footer in a snapshot (empty for a column it does not answer)."""
        shown = {}
        for n in COLUMNS:
            column = snap.columns.get(n)
            shown[self.answers[n]] = views.answer_text(column)
            shown[self.footers[n]] = views.column_footer(column, question, lang)
        return shown

    def compare_if_shared(self, from_link: bool, c, request: gr.Request):
        """Answer a shared link's question on opening. Only then: a question typed before the page finished
        loading is the user's own and is answered by their Enter, not a second time here."""
        if from_link:
            yield from self.compare(c, request)
        else:  # a generator that yields nothing would clear its outputs (the titles restore just wrote)
            yield gr.skip()

    def restore(self, request: gr.Request) -> dict:
        """Fill the controls from a shared link's query (keep the page's values for missing keys), and title
        the columns before the first answer."""
        ctx = self.ctx
        query = dict(request.query_params) if request else {}
        values = dict(zip((c.name for c in table.CONTROLS), links.values_from_query(query, ctx.defaults, KEEP)))
        shown = table.from_values([ctx.defaults[n] if v is KEEP else v for n, v in values.items()])
        lang = language(request)
        try:
            titles = {self.titles[n]: views.column_title(n, ctx.preset, shown, lang) for n in COLUMNS}
        except (TypeError, ValueError, ZeroDivisionError):  # a link's odd value: its own error comes on compare
            opened = table.from_values([ctx.defaults[c.name] for c in table.CONTROLS])
            titles = {self.titles[n]: views.column_title(n, ctx.preset, opened, lang) for n in COLUMNS}
        restored = {ctx.controls[n]: v for n, v in values.items() if v is not KEEP}
        return {**restored, self.from_link: bool(query.get(table.LINK_KEYS[0], "").strip()), **titles}

    def stop(self, request: gr.Request) -> None:
        """This visitor's Stop: their answers, scores, sweeps and greedy soups stop and show what they measured."""
        self.ctx.visitors.stop(visitor(request))

    def show_extra_column(self, extra_method: str) -> dict:
        """The extra column, shown while a method is chosen for it."""
        return {self.extra_column: gr.Column(visible=bool(extra_method))}

    def take_example(self, example: str) -> dict:
        """The chosen example becomes the question."""
        return {self.question: example or gr.skip()}

    def wire(self, page) -> None:
        """The answer on Generate, Enter and a released main slider, on opening a shared link; Stop; the link."""
        ctx, inputs = self.ctx, self.ctx.control_list()
        run = dict(fn=endpoint(self.compare), inputs=inputs, outputs=self.outputs, show_progress="hidden")
        generate = self.generate_btn.click(**run, api_name="compare")
        submit = self.question.submit(**run, api_visibility="private")
        releases = [ctx.controls[c.name].release(**run, trigger_mode="always_last", api_visibility="private")
                    for c in table.CONTROLS if c.group == "main"]
        controls.wire(ctx)
        extra = ctx.controls["extra_method"]
        extra.change(self.show_extra_column, extra, self.extra_column, api_visibility="private", queue=False)
        self.example.change(self.take_example, self.example, self.question, api_visibility="private", queue=False)
        self.copy_btn.click(None, inputs=inputs, outputs=self.link, js=COPY_LINK_JS % list(table.LINK_KEYS),
                            api_visibility="private")
        shared = page.load(self.restore, None, [*inputs, self.from_link, *self.titles.values()],
                           api_visibility="private", queue=False).then(
            endpoint(self.compare_if_shared, ("from_link",)), [self.from_link, *inputs], self.outputs,
            api_visibility="private", show_progress="hidden")
        self.answer_events = [generate, submit, *releases, shared]
        self.stop_btn.click(self.stop, None, None, cancels=self.answer_events, api_visibility="private", queue=False)
