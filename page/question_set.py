"""The question set on the page: a list of questions answered by every column at once, streamed into a grid (a row
per question, a column per variant: the seed experiment's results table), with what the eye needs at a glance
(cells that repeat another column's, the Turkish check per column, SLERP's fallback share) and downloads.

``QuestionSetPart(ctx, seed_questions)`` creates its components where it is called (inside the page's Blocks, in
layout order); its handlers take named parameters and return outputs by component; ``wire`` connects its events.
The work is serving/question_set.py's.
"""


import html
import tempfile
from pathlib import Path

import gradio as gr

from errors import Refusal
from page import links, views
from page.context import PageContext, endpoint, visitor, wanted_columns
from scoring import question_set as set_scores
from scoring.heldout import HeldoutError, load_heldout
from serving import controls as table
from serving import question_set as sets
from serving.columns import COLUMNS
from serving.requests import generation_settings, merge_specs
from words import language, say

GRID_STYLE = ("border-collapse:collapse;width:100%;table-layout:fixed;font-size:0.9em")
CELL_STYLE = "border:1px solid #d0d0d8;padding:6px;vertical-align:top;white-space:pre-wrap;word-wrap:break-word"
MARK_STYLE = ("display:inline-block;margin-bottom:3px;padding:0 5px;border-radius:4px;background:#fde68a;"
              "color:#713f12;font-size:0.85em;font-weight:600")


class QuestionSetPart:
    """The question set's components (created here, a closed accordion until used or opened by a link) and its
    handlers."""

    def __init__(self, ctx: PageContext, seed_questions: list[str]):
        self.ctx = ctx
        i18n, heldout = ctx.i18n, ctx.limits.heldout
        with gr.Accordion(i18n("set_title"), open=False, elem_id="question-set") as self.accordion:
            with gr.Row(equal_height=False):
                self.questions = gr.Textbox("\n".join(seed_questions), lines=5, max_lines=12,
                                            label=i18n("set_questions"), scale=5, elem_id="set-questions")
                with gr.Column(scale=2, min_width=240):
                    self.example = gr.Dropdown(ctx.examples, value=None, label=i18n("set_add_example"),
                                               elem_id="set-example")
                    with gr.Row():
                        self.heldout = gr.Dropdown(list(heldout), value=(heldout or [None])[0],
                                                   label=i18n("set_heldout"), scale=3, elem_id="set-heldout")
                        self.heldout_n = gr.Number(5, precision=0, label=i18n("set_heldout_n"), scale=1,
                                                   min_width=80, elem_id="set-heldout-n")
                    self.add_heldout_btn = gr.Button(i18n("set_add_heldout"), size="sm", elem_id="set-add-heldout")
            with gr.Row(equal_height=True):
                self.answer_btn = gr.Button(i18n("set_answer"), variant="primary", scale=1, elem_id="set-answer")
                self.stop_btn = gr.Button(i18n("stop"), variant="stop", scale=1, elem_id="set-stop")
                self.copy_btn = gr.Button(i18n("set_copy_link"), size="sm", scale=1, elem_id="set-copy-link")
                self.link = gr.Textbox(show_label=False, container=False, buttons=["copy"], scale=4,
                                       elem_id="set-link")
            self.message = gr.Markdown(elem_id="set-message")
            self.grid = gr.HTML(elem_id="set-grid")
            self.summary = gr.Markdown(elem_id="set-summary")
            self.table = gr.Dataframe(interactive=False, visible=False, elem_id="set-table")  # the API's plain grid
            self.files = gr.File(label=i18n("set_downloads"), file_count="multiple", visible=False,
                                 elem_id="set-files")
        self.answered = gr.State(False)  # this visitor's set has been answered: a slider release redoes its column
        self.from_link = gr.State(False)  # the page was opened with a shared set

    @property
    def outputs(self) -> list:
        return [self.message, self.grid, self.summary, self.table, self.files, self.answered]

    def shown(self, snap, c, lang: str, final: bool, memo: dict) -> dict:
        """What the part shows of a snapshot of the set (the downloads and the API's table once it is done)."""
        names = {n: views.column_name(n, self.ctx.preset, lang, c.extra_method) for n in COLUMNS}
        done = sum(cell.done for cell in snap.cells.values())
        if memo.get("done") != done or final:  # the Turkish check only when an answer has finished
            memo["done"], memo["summary"] = done, summary_markdown(snap, names, lang)
        total = len(snap.cells)
        stopped = any(cell.finish_reason == "stopped" for cell in snap.cells.values())
        note = say(lang, "set_stopped" if stopped else "set_cells", done=done, total=total)
        if snap.dropped_tokens:
            note += " " + say(lang, "dropped", n=snap.dropped_tokens)
        out = {self.message: note, self.grid: grid_html(snap, names, lang), self.summary: memo["summary"]}
        if final:
            out.update({self.table: table_frame(snap, c.extra_method),
                        self.files: gr.File(export_files(snap, c.extra_method), visible=True),
                        self.answered: True})
        return out

    def answer(self, questions: str, c, request: gr.Request):
        """Answer every question of the set with Model 1, Model 2 and every merge at the controls ``c``; stream
        the grid."""
        ctx, lang = self.ctx, language(request)
        limits = ctx.limits
        if not ctx.loading.ready():
            yield {self.message: say(lang, "loading")}
        comparison = ctx.loading.get()
        try:
            with ctx.visitors.request(visitor(request)) as cancel:
                lines = sets.parse_questions(questions, limits.max_set_questions)
                asked = sets.check_questions(lines, comparison.model_set.tokenizer, limits.max_question_chars,
                                             limits.max_question_tokens)
                specs, settings = merge_specs(c), generation_settings(c, ctx.preset.generation)
                memo, last = {}, None
                for last in sets.run_set(comparison, sets.SetRequest(asked, wanted_columns(c), specs, settings),
                                         cancel):
                    yield self.shown(last, c, lang, False, memo)
                yield self.shown(last, c, lang, True, memo)
        except ValueError as err:  # a Refusal, or a value the model code refuses
            raise ctx.refused(err, lang) from None

    def on_release(self, answered: bool, questions: str, c, request: gr.Request):
        """A slider released after a set was answered: the set again, where only that column is not cached."""
        if not answered:
            yield gr.skip()
            return
        yield from self.answer(questions, c, request)

    def restore(self, request: gr.Request) -> dict:
        """A shared set's questions, the accordion open; more questions than allowed: a message, not an error."""
        limit = self.ctx.limits.max_set_questions
        query = dict(request.query_params) if request else {}
        text = links.questions_from_query(query)
        if text is None:
            return {self.from_link: False}
        n = len([line for line in text.splitlines() if line.strip()])
        too_many = n > limit
        return {self.questions: text, self.accordion: gr.Accordion(open=True), self.from_link: not too_many,
                self.message: say(language(request), "set_link_too_many", n=n, limit=limit) if too_many else ""}

    def open_shared(self, request: gr.Request):
        """A shared set on opening: its questions in the box and the accordion open, then the set answered with
        the link's settings (read from the link itself: the page's controls may not be restored yet). One queued
        event: nothing passes through the session's state from one request to another, and the answer does not
        wait on the browser starting a second event after the first."""
        shown = self.restore(request)
        yield shown
        if shown[self.from_link]:
            yield from self.answer(shown[self.questions],
                                        controls_from_query(dict(request.query_params), self.ctx.defaults), request)

    def stop(self, request: gr.Request) -> None:
        """This visitor's Stop: the set's rows leave the loop; the cells written so far stay."""
        self.ctx.visitors.stop(visitor(request))

    def add_example(self, example: str, questions: str) -> dict:
        """Append the chosen example question to the set."""
        if not example:
            return {self.questions: gr.skip()}
        return {self.questions: "\n".join(q for q in [(questions or "").rstrip("\n"), example] if q),
                self.example: None}

    def add_heldout(self, heldout: str, n, questions: str, request: gr.Request) -> dict:
        """Append the first N questions of a held-out set."""
        lang, limits = language(request), self.ctx.limits
        try:
            if heldout not in limits.heldout:
                raise Refusal("err_heldout_unknown", path=heldout, choices=", ".join(limits.heldout))
            count = int(n or 0)
            if not 1 <= count <= limits.max_set_questions:
                raise Refusal("err_set_many", n=count, limit=limits.max_set_questions)
            rows = load_heldout(heldout, limit=count).rows
        except (HeldoutError, ValueError) as err:
            raise self.ctx.refused(err, lang) from None
        added = [" ".join(r.question.split() + r.giris.split()) for r in rows]
        return {self.questions: "\n".join(q for q in [(questions or "").rstrip("\n"), *added] if q)}

    def wire(self, page) -> None:
        """The list's additions, Answer (the compare_set endpoint), the page's slider releases, a shared set's
        link on opening, Stop and the set's link."""
        ctx = self.ctx
        inputs = ctx.control_list(but_question=True)
        self.example.change(self.add_example, [self.example, self.questions], [self.questions, self.example],
                            api_visibility="private", queue=False)
        self.add_heldout_btn.click(self.add_heldout, [self.heldout, self.heldout_n, self.questions], [self.questions],
                                   api_visibility="private")
        self.answer_btn.click(endpoint(self.answer, ("questions",), but_question=True), [self.questions, *inputs],
                              self.outputs, api_name="compare_set", show_progress="hidden")
        on_release = endpoint(self.on_release, ("answered", "questions"), but_question=True)
        for c in table.CONTROLS:  # a set already answered: the released column is redone for every question
            if c.group == "main":
                ctx.controls[c.name].release(on_release, [self.answered, self.questions, *inputs], self.outputs,
                                             trigger_mode="always_last", api_visibility="private",
                                             show_progress="hidden")
        page.load(self.open_shared, None, [self.questions, self.accordion, self.from_link, *self.outputs],
                  api_visibility="private", show_progress="hidden")
        self.stop_btn.click(self.stop, None, None, api_visibility="private", queue=False)
        self.copy_btn.click(None, [self.questions, *inputs], self.link, js=copy_link_js(), api_visibility="private")


def grid_html(snapshot: sets.SetSnapshot, names: dict[str, str], lang: str) -> str:
    """The grid: a row per question, a column per variant; a cell that repeats an earlier column's answer in its
    row carries "= Soup"; a cell still being written ends with a cursor, one waiting for its merge an hourglass."""
    marks = sets.same_as(snapshot)
    head = "".join(f'<th style="{CELL_STYLE};width:14%">{html.escape(say(lang, "set_question"))}</th>' +
                   "".join(f'<th style="{CELL_STYLE}">{html.escape(names[c])}</th>' for c in snapshot.columns))
    rows = []
    for i, question in enumerate(snapshot.questions):
        cells = [f'<td style="{CELL_STYLE};font-weight:600">{html.escape(question)}</td>']
        for column in snapshot.columns:
            cell = snapshot.cells[i, column]
            text = html.escape(snapshot.text(i, column))
            if cell.pending:
                text += "⏳"
            elif not cell.done and text:
                text += "▍"
            same = marks.get((i, column))
            mark = (f'<span class="set-same" style="{MARK_STYLE}" '
                    f'title="{html.escape(say(lang, "set_same_title", column=names[same]))}">'
                    f'{html.escape(say(lang, "set_same", column=names[same]))}</span><br>') if same else ""
            cells.append(f'<td style="{CELL_STYLE}" data-column="{column}">{mark}{text}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table id="set-grid-table" style="{GRID_STYLE}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def summary_markdown(snapshot: sets.SetSnapshot, names: dict[str, str], lang: str) -> str:
    """A line per column over the set: the Turkish check, repetition, answers that repeat an earlier column's,
    and SLERP's linear-fallback share (why Soup and SLERP agree on a LoRA pair)."""
    lines = []
    for s in set_scores.summaries(snapshot):
        parts = []
        if s.word_share is not None:
            parts.append(say(lang, "turkish_words", share=100 * s.word_share, n=s.words_checked,
                             valid=round(s.word_share * s.words_checked)))
        if s.repeated_share is not None:
            parts.append(say(lang, "repeated", share=100 * s.repeated_share))
        if not s.answered:
            parts.append(say(lang, "set_summary_none"))
        if s.identical:
            parts.append(say(lang, "set_identical", n=s.identical, total=len(snapshot.questions)))
        if s.fallback_share is not None:
            parts.append(say(lang, "brief_fallback", share=100 * s.fallback_share))
        lines.append(f"**{names[s.column]}**: " + " · ".join(parts))
    return "\n\n".join(lines)


def export_files(snapshot: sets.SetSnapshot, extra_method: str) -> list[str]:
    """The grid as Markdown and CSV files in a folder of their own, for the page's download."""
    folder = Path(tempfile.mkdtemp(prefix="harman-set-"))
    (folder / "harman-soru-seti.md").write_text(sets.markdown(snapshot, extra_method), encoding="utf-8")
    (folder / "harman-soru-seti.csv").write_text(sets.csv_text(snapshot, extra_method), encoding="utf-8")
    return [str(folder / "harman-soru-seti.md"), str(folder / "harman-soru-seti.csv")]


def table_frame(snapshot: sets.SetSnapshot, extra_method: str):
    """The API's grid: the question, then each column's plain answer, headed Model 1, Model 2, Soup, SLERP, TIES
    (and the extra method)."""
    import pandas as pd

    head = sets.headers(snapshot.columns, {"question": "question", **sets.TABLE_HEADERS}, extra_method)
    return pd.DataFrame(snapshot.grid(), columns=head)


def controls_from_query(query: dict, defaults: dict):
    """The controls a shared link asks for, the page's defaults where it says nothing."""
    values = links.values_from_query(query, defaults, None)
    return table.from_values([defaults[c.name] if v is None else v for c, v in zip(table.CONTROLS, values)])


COPY_SET_LINK_JS = """(questions, ...values) => {
  const keys = %s;
  const params = new URLSearchParams();
  keys.forEach((k, i) => params.set(k, String(values[i] ?? "")));
  params.set("%s", questions || "");
  const url = window.location.origin + window.location.pathname + "?" + params.toString();
  if (navigator.clipboard) { navigator.clipboard.writeText(url).catch(() => {}); }
  return url;
}"""


def copy_link_js() -> str:
    """The set's link: every control but the single question, and the set's questions."""
    return COPY_SET_LINK_JS % ([c.link for c in table.CONTROLS[1:]], links.SET_KEY)
