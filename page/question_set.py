"""The question set on the page: a list of questions answered by every column at once, streamed into a grid (a row
per question, a column per variant: the seed experiment's results table), with what the eye needs at a glance
(cells that repeat another column's, the Turkish check per column, SLERP's fallback share) and downloads.

``build`` makes the components in layout order; ``handlers`` makes the named handlers, which return their
outputs by component; app.py wires them in one block. The work is serving/question_set.py's.
"""


import html
import tempfile
from dataclasses import dataclass
from pathlib import Path

from page import links, views
from scoring import question_set as set_scores
from serving import controls as table
from serving import question_set as sets
from words import language, say

GRID_STYLE = ("border-collapse:collapse;width:100%;table-layout:fixed;font-size:0.9em")
CELL_STYLE = "border:1px solid #d0d0d8;padding:6px;vertical-align:top;white-space:pre-wrap;word-wrap:break-word"
MARK_STYLE = ("display:inline-block;margin-bottom:3px;padding:0 5px;border-radius:4px;background:#fde68a;"
              "color:#713f12;font-size:0.85em;font-weight:600")


@dataclass
class QuestionSetPart:
    """The question set's components."""
    accordion: object
    questions: object
    example: object
    heldout: object
    heldout_n: object
    add_heldout: object
    answer: object
    stop: object
    copy_link: object
    link: object
    message: object
    grid: object
    summary: object
    table: object
    files: object
    answered: object  # this visitor's set has been answered: a slider release redoes its column in the set too
    from_link: object  # the page was opened with a shared set

    @property
    def outputs(self) -> list:
        return [self.message, self.grid, self.summary, self.table, self.files, self.answered]


def build(i18n, examples: list[str], heldout: tuple[str, ...], seed_questions: list[str]) -> QuestionSetPart:
    """The question set's components, in layout order (a closed accordion until used or opened by a link)."""
    import gradio as gr

    with gr.Accordion(i18n("set_title"), open=False, elem_id="question-set") as accordion:
        with gr.Row(equal_height=False):
            questions = gr.Textbox("\n".join(seed_questions), lines=5, max_lines=12, label=i18n("set_questions"),
                                   scale=5, elem_id="set-questions")
            with gr.Column(scale=2, min_width=240):
                example = gr.Dropdown(examples, value=None, label=i18n("set_add_example"), elem_id="set-example")
                with gr.Row():
                    heldout_file = gr.Dropdown(list(heldout), value=(heldout or [None])[0],
                                               label=i18n("set_heldout"), scale=3, elem_id="set-heldout")
                    heldout_n = gr.Number(5, precision=0, label=i18n("set_heldout_n"), scale=1, min_width=80,
                                          elem_id="set-heldout-n")
                add_heldout = gr.Button(i18n("set_add_heldout"), size="sm", elem_id="set-add-heldout")
        with gr.Row(equal_height=True):
            answer = gr.Button(i18n("set_answer"), variant="primary", scale=1, elem_id="set-answer")
            stop = gr.Button(i18n("stop"), variant="stop", scale=1, elem_id="set-stop")
            copy_link = gr.Button(i18n("set_copy_link"), size="sm", scale=1, elem_id="set-copy-link")
            link = gr.Textbox(show_label=False, container=False, buttons=["copy"], scale=4, elem_id="set-link")
        message = gr.Markdown(elem_id="set-message")
        grid = gr.HTML(elem_id="set-grid")
        summary = gr.Markdown(elem_id="set-summary")
        table = gr.Dataframe(interactive=False, visible=False, elem_id="set-table")  # the API's plain grid
        files = gr.File(label=i18n("set_downloads"), file_count="multiple", visible=False, elem_id="set-files")
    return QuestionSetPart(accordion, questions, example, heldout_file, heldout_n, add_heldout, answer, stop,
                           copy_link, link, message, grid, summary, table, files, gr.State(False), gr.State(False))


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


def handlers(part: QuestionSetPart, *, loading, preset, limits, visitors, columns: tuple[str, ...], defaults: dict,
             refused):
    """The question set's handlers, by name. ``refused(err, lang)`` is the page's error for a refusal."""
    import gradio as gr

    from serving.requests import generation_settings, merge_specs

    def shown(snap, c, lang, final: bool, memo: dict) -> dict:
        names = {n: views.column_name(n, preset, lang, c.extra_method) for n in columns}
        done = sum(cell.done for cell in snap.cells.values())
        if memo.get("done") != done or final:  # the Turkish check only when an answer has finished
            memo["done"], memo["summary"] = done, summary_markdown(snap, names, lang)
        total = len(snap.cells)
        stopped = any(cell.finish_reason == "stopped" for cell in snap.cells.values())
        note = say(lang, "set_stopped" if stopped else "set_cells", done=done, total=total)
        if snap.dropped_tokens:
            note += " " + say(lang, "dropped", n=snap.dropped_tokens)
        out = {part.message: note, part.grid: grid_html(snap, names, lang), part.summary: memo["summary"]}
        if final:
            out.update({part.table: table_frame(snap, c.extra_method),
                        part.files: gr.File(export_files(snap, c.extra_method), visible=True),
                        part.answered: True})
        return out

    def answer_with(questions: str, c, request):
        lang = language(request)
        if not loading.ready():
            yield {part.message: say(lang, "loading")}
        comparison = loading.get()
        try:
            with visitors.request(getattr(request, "session_hash", None) or "api") as cancel:
                lines = sets.parse_questions(questions, limits.max_set_questions)
                asked = sets.check_questions(lines, comparison.model_set.tokenizer, limits.max_question_chars,
                                             limits.max_question_tokens)
                specs, settings = merge_specs(c), generation_settings(c, preset.generation)
                wanted = tuple(n for n in columns if n != "extra" or c.extra_method)
                memo, last = {}, None
                for last in sets.run_set(comparison, sets.SetRequest(asked, wanted, specs, settings), cancel):
                    yield shown(last, c, lang, False, memo)
                yield shown(last, c, lang, True, memo)
        except ValueError as err:  # a Refusal, or a value the model code refuses
            raise refused(err, lang) from None

    def answer(questions, *args):
        """Answer every question of the set with Model 1, Model 2 and every merge; stream the grid."""
        *values, request = args
        yield from answer_with(questions, table.from_values(["", *values]), request)

    def on_release(answered, questions, *args):
        """A slider released after a set was answered: the set again, where only that column is not cached."""
        if not answered:
            yield {part.message: gr.skip()}
            return
        yield from answer(questions, *args)

    def restore(request: gr.Request):
        """A shared set's questions, the accordion open; more questions than allowed: a message, not an error."""
        query = dict(request.query_params) if request else {}
        text = links.questions_from_query(query)
        if text is None:
            return {part.from_link: False}
        n = len([line for line in text.splitlines() if line.strip()])
        too_many = n > limits.max_set_questions
        return {part.questions: text, part.accordion: gr.Accordion(open=True), part.from_link: not too_many,
                part.message: say(language(request), "set_link_too_many", n=n, limit=limits.max_set_questions)
                if too_many else ""}

    def answer_shared(from_link, questions, request: gr.Request):
        """Answer a shared set on opening, with the link's settings (read from the link itself: the page's
        controls may not be restored yet)."""
        if not from_link:
            yield {part.message: gr.skip()}
            return
        yield from answer_with(questions, controls_from_query(dict(request.query_params), defaults), request)

    def stop(request: gr.Request):
        """This visitor's Stop: the set's rows leave the loop; the cells written so far stay."""
        visitors.stop(getattr(request, "session_hash", None) or "api")

    return {**list_handlers(part, limits, refused), "answer": answer, "on_release": on_release, "restore": restore,
            "answer_shared": answer_shared, "stop": stop}


def list_handlers(part: QuestionSetPart, limits, refused):
    """The handlers that fill the list of questions: an example question, or the first N of a held-out set."""
    import gradio as gr

    from errors import Refusal
    from scoring.heldout import HeldoutError, load_heldout

    def add_example(example, questions):
        """Append the chosen example question to the set."""
        if not example:
            return {part.questions: gr.skip()}
        return {part.questions: "\n".join(q for q in [(questions or "").rstrip("\n"), example] if q),
                part.example: None}

    def add_heldout(heldout, n, questions, request: gr.Request):
        """Append the first N questions of a held-out set."""
        lang = language(request)
        try:
            if heldout not in limits.heldout:
                raise Refusal("err_heldout_unknown", path=heldout, choices=", ".join(limits.heldout))
            count = int(n or 0)
            if not 1 <= count <= limits.max_set_questions:
                raise Refusal("err_set_many", n=count, limit=limits.max_set_questions)
            rows = load_heldout(heldout, limit=count).rows
        except (HeldoutError, ValueError) as err:
            raise refused(err, lang) from None
        added = [" ".join(r.question.split() + r.giris.split()) for r in rows]
        return {part.questions: "\n".join(q for q in [(questions or "").rstrip("\n"), *added] if q)}

    return {"add_example": add_example, "add_heldout": add_heldout}


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
