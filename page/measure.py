"""Measuring the columns on the page: a held-out set (or TurkMorfBench) and its rows; Scores (every column's
perplexity and overlap metrics, or TurkMorfBench accuracy); Sweep (one parameter over its range, the best point
applied to the sliders) and Wortsman et al.'s greedy soup.

``MeasurePart(ctx)`` creates the held-out choice and the Scores and Sweep tabs where it is called (the other tabs
of "Keep" join ``tabs``); its handlers take named parameters and return outputs by component; ``wire`` connects
its events. Long work runs in the background (page/tasks.py), the measuring itself is scoring/'s.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from errors import Refusal
from page import views
from page.context import PageContext, endpoint, visitor, wanted_columns
from page.tasks import background
from scoring import morfbench
from scoring import variants as scoring
from scoring.heldout import HeldoutError, load_heldout
from serving import controls as table
from words import language, say


class MeasurePart:
    """The held-out choice, Scores and Sweep: their components (created here) and handlers."""

    def __init__(self, ctx: PageContext):
        self.ctx = ctx
        i18n, limits = ctx.i18n, ctx.limits
        with gr.Row():
            self.heldout = gr.Dropdown([*limits.heldout, (morfbench.NAME, morfbench.CHOICE)],
                                       value=(limits.heldout or [morfbench.CHOICE])[0],
                                       label=i18n("heldout"), allow_custom_value=False, elem_id="heldout")
            # As high as TurkMorfBench's item cap, so the API takes it; the page narrows it per choice.
            self.rows = gr.Slider(2, max(limits.max_rows, limits.max_bench_items), min(20, limits.max_rows), step=1,
                                  label=i18n("rows"), elem_id="rows")
        with gr.Tabs() as self.tabs:
            with gr.Tab(i18n("scores")):
                self.score_btn = gr.Button(i18n("score"), elem_id="score")
                self.score_note = gr.Markdown(elem_id="score_note")
                # The table and plots are shown once there is something in them (an empty Dataframe shows
                # headers "1 2 3", an empty plot an icon).
                self.score_table = gr.Dataframe(interactive=False, visible=False, elem_id="score_table")
                self.score_plot = gr.BarPlot(x="variant", y="perplexity", visible=False, elem_id="score_plot")
            with gr.Tab(i18n("sweep")):
                self.build_sweep_tab()
        self.best_point = gr.State(None)  # (parameter, value) of this visitor's last sweep
        self.scores = gr.State({})  # this visitor's latest held-out scores, column -> {metric: value}

    def build_sweep_tab(self) -> None:
        i18n = self.ctx.i18n
        with gr.Row():
            self.sweep_param = gr.Dropdown(list(table.SWEEPABLE), value="slerp_t", label=i18n("sweep_param"),
                                           elem_id="sweep_param")
            self.sweep_points = gr.Number(11, precision=0, label=i18n("sweep_points"), elem_id="sweep_points")
            self.sweep_turkish = gr.Checkbox(False, label=i18n("sweep_turkish"), elem_id="sweep_turkish")
            self.sweep_btn = gr.Button(i18n("run_sweep"), elem_id="run_sweep")
        self.sweep_plot = gr.LinePlot(x="value", y="perplexity", color="series", visible=False, elem_id="sweep_plot")
        self.sweep_turkish_plot = gr.LinePlot(x="value", y="share", color="series", visible=False,
                                              elem_id="sweep_turkish_plot")  # shown when asked for
        self.sweep_best = gr.Markdown(elem_id="sweep_best")
        with gr.Row():
            self.apply_best_btn = gr.Button(i18n("apply_best"), elem_id="apply_best")
            self.greedy_soup_btn = gr.Button(i18n("greedy_soup"), elem_id="greedy_soup")
        self.greedy_soup_md = gr.Markdown(elem_id="greedy_soup_result")

    def open_heldout(self, path: str, n, lang: str):
        limits = self.ctx.limits
        if path not in limits.heldout:
            raise self.ctx.refused(Refusal("err_heldout_unknown", path=path, choices=", ".join(limits.heldout)), lang)
        try:
            limit = int(n)
            if not 2 <= limit <= limits.max_rows:
                raise Refusal("err_rows", n=n, limit=limits.max_rows)
            return load_heldout(path, limit=limit)
        except (HeldoutError, ValueError) as err:
            raise self.ctx.refused(err, lang) from None

    def bench_items(self, n_items, lang: str):
        try:
            return morfbench.load_items(int(n_items), self.ctx.limits.max_bench_items)
        except ValueError as err:
            raise self.ctx.refused(err, lang) from None

    def measured(self, work, request, progress):
        """Run a score, sweep or greedy soup for this visitor in the background (the page untouched meanwhile);
        its result, or what it measured before the visitor's Stop."""
        lang, preset = language(request), self.ctx.preset
        shown = None if progress is None else (
            lambda fraction, what: progress(fraction, desc=what and views.progress_text(what, preset, lang)))
        try:
            with self.ctx.visitors.request(visitor(request)) as cancel:
                return (yield from background(lambda report: work(cancel, report), cancel, gr.skip(), shown))
        except (ValueError, TypeError) as err:
            raise self.ctx.refused(err, lang) from None

    def rows_for(self, heldout: str, rows) -> dict:
        """The rows slider for the chosen set: up to TurkMorfBench's item cap, or to the held-out row cap."""
        limits = self.ctx.limits
        cap = limits.max_bench_items if heldout == morfbench.CHOICE else limits.max_rows
        return {self.rows: gr.Slider(maximum=cap, value=min(int(rows or 2), cap))}

    def score(self, heldout: str, rows, c, request: gr.Request, progress):
        """Score every column on a held-out set: perplexity, chrF, BLEU, ROUGE-L (+ EM and F1 for QA)."""
        lang, preset = language(request), self.ctx.preset
        if heldout == morfbench.CHOICE:
            return (yield from self.bench_score(rows, c, request, progress))
        data = self.open_heldout(heldout, rows, lang)
        comparison = self.ctx.loading.get()
        result = yield from self.measured(lambda cancel, report: scoring.score_variants(
            comparison, data, list(wanted_columns(c)), c, c.max_new_tokens, cancel, report), request, progress)
        headers, table_rows = views.score_table(result, preset, lang, c.extra_method)
        table = pd.DataFrame(table_rows, columns=headers)
        plot = gr.BarPlot(table, x=headers[0], y=headers[1], sort=[row[0] for row in table_rows], y_lim=[0, None],
                          x_title=say(lang, "col_column"), y_title=headers[1], visible=True)
        answered = min((r.rows for r in result), default=0)
        yield {self.score_table: gr.Dataframe(table, visible=True), self.score_plot: plot,
               self.score_note: say(lang, "scores_stopped", n=answered) if answered < len(data.rows) else "",
               self.scores: {r.variant: {"perplexity": r.perplexity, **r.metrics} for r in result}}

    def bench_score(self, n_items, c, request, progress):
        """TurkMorfBench in Scores: every column's accuracy and the package's breakdown."""
        lang, preset = language(request), self.ctx.preset
        items = self.bench_items(n_items, lang)
        comparison = self.ctx.loading.get()
        result = yield from self.measured(lambda cancel, report: morfbench.bench_variants(
            comparison, items, list(wanted_columns(c)), c, cancel, report), request, progress)
        headers, table_rows = views.bench_table(result, preset, lang, c.extra_method)
        table = pd.DataFrame(table_rows, columns=headers)
        plot = gr.BarPlot(table, x=headers[0], y=headers[1], sort=[row[0] for row in table_rows], y_lim=[0, 100],
                          x_title=say(lang, "col_column"), y_title=headers[1], visible=True)
        yield {self.score_table: gr.Dataframe(table, visible=True), self.score_plot: plot,
               self.score_note: views.bench_note(result, len(items), preset, lang, c.extra_method),
               self.scores: {r.variant: {"turkmorfbench_accuracy": r.accuracy} for r in result}}

    def sweep(self, heldout: str, rows, parameter: str, points, turkish_curve: bool, c, request: gr.Request,
              progress):
        """Re-merge one column at evenly spaced values of a parameter; plot held-out perplexity and, if asked,
        the Turkish check of the column's greedy answers as a second curve."""
        ctx, lang = self.ctx, language(request)
        bench = heldout == morfbench.CHOICE  # TurkMorfBench accuracy as the curve, highest best
        items = self.bench_items(rows, lang) if bench else None
        data = None if bench else self.open_heldout(heldout, rows, lang)
        comparison = ctx.loading.get()
        outcome = yield from self.measured(lambda cancel, report: scoring.sweep_parameter(
            comparison, data, c, parameter, int(points), ctx.limits.max_sweep_points, cancel, report,
            turkish=bool(turkish_curve) and not bench,
            **(dict(measure=morfbench.accuracy_measure(comparison, items, cancel), higher=True) if bench else {})),
            request, progress)
        curve, note, best = views.sweep_rows(outcome, ctx.preset, lang, "sweep_best_bench" if bench else "sweep_best")
        second = pd.DataFrame(views.turkish_rows(outcome, ctx.preset, lang), columns=["value", "share", "series"])
        # The swept range with a margin, so that a best point at either end is not drawn on the axis.
        lo, hi = table.SWEEPABLE[parameter][1:]
        x = dict(x_lim=[lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo)], x_title=say(lang, f"name_{parameter}"),
                 color_title=" ")
        yield {self.sweep_plot: gr.LinePlot(pd.DataFrame(curve, columns=["value", "perplexity", "series"]),
                                            y_title=say(lang, "col_bench_accuracy") if bench else "perplexity",
                                            visible=True, **x),
               self.sweep_best: note, self.best_point: best,
               self.sweep_turkish_plot: gr.LinePlot(second, y_title=say(lang, "axis_share"),
                                                    visible=bool(turkish_curve), **x)}

    def apply_best(self, point, c, request: gr.Request) -> dict:
        """Move the swept control's slider, and the controls it sets, to the best point."""
        if not point:
            return gr.skip()
        moved = table.controls_at(c, *point)
        return {self.ctx.controls[k.name]: getattr(moved, k.name) for k in table.CONTROLS
                if getattr(moved, k.name) != getattr(c, k.name)} or gr.skip()

    def greedy_soup(self, heldout: str, rows, c, request: gr.Request):
        """Wortsman et al.'s greedy soup of Model 1 and Model 2 by held-out perplexity."""
        lang = language(request)
        data = self.open_heldout(heldout, rows, lang)
        comparison = self.ctx.loading.get()
        result = yield from self.measured(lambda cancel, report: scoring.greedy_soup_of(comparison, data, c, cancel),
                                          request, None)
        shown = {self.greedy_soup_md: views.greedy_soup_text(result, lang)}
        if result is not None:  # not stopped
            shown.update({self.ctx.controls["soup_w1"]: result.weights.get("model1", 0.0),
                          self.ctx.controls["soup_w2"]: result.weights.get("model2", 0.0)})
        yield shown

    def wire(self, page) -> None:
        """The rows slider follows the chosen set; Score, Sweep, Apply best and Greedy soup."""
        ctx = self.ctx
        inputs, measure = ctx.control_list(), [self.heldout, self.rows]
        narrow_rows = dict(fn=self.rows_for, inputs=measure, outputs=self.rows, api_visibility="private",
                           queue=False)
        self.heldout.change(**narrow_rows)
        page.load(**narrow_rows)
        self.score_btn.click(endpoint(self.score, ("heldout", "rows"), progress=True), [*measure, *inputs],
                             [self.score_table, self.score_plot, self.score_note, self.scores], api_name="score")
        self.sweep_btn.click(endpoint(self.sweep, ("heldout", "rows", "parameter", "points", "turkish_curve"),
                                      progress=True),
                             [*measure, self.sweep_param, self.sweep_points, self.sweep_turkish, *inputs],
                             [self.sweep_plot, self.sweep_best, self.best_point, self.sweep_btn,
                              self.sweep_turkish_plot], api_name="sweep")
        self.apply_best_btn.click(endpoint(self.apply_best, ("point",)), [self.best_point, *inputs], inputs,
                                  api_visibility="private")
        self.greedy_soup_btn.click(endpoint(self.greedy_soup, ("heldout", "rows")), [*measure, *inputs],
                                   [self.greedy_soup_md, ctx.controls["soup_w1"], ctx.controls["soup_w2"]],
                                   api_name="greedy_soup")
