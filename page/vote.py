"""The blind vote part of the page: a question answered by two of the page's columns at its current settings,
shown as A and B with no names; four buttons; the reveal; the leaderboard with its win-rate heatmap.

``VotePart(ctx, battles, store)`` creates its components where it is called (inside the page's Blocks, in layout
order); its handlers take named parameters and return outputs by component; ``wire`` connects its events. The
rules of a vote live in scoring/battles.py, the store in scoring/votes.py, the fit in scoring/leaderboard.py.
"""

from __future__ import annotations

import html
import json
import logging
import math
import random
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import gradio as gr
import pandas as pd

from page import views
from page.context import PageContext, endpoint, wanted_columns
from scoring.battles import Side, variant_name
from scoring.leaderboard import CHOICES, leaderboard
from serving.columns import PARENTS
from serving.comparison import Request
from serving import controls as table
from serving.requests import RequestError, check_question, generation_settings, merge_specs
from words import language, say

log = logging.getLogger("harman.vote")
BOARD_COLUMNS = ("variant", "score", "ci_low", "ci_high", "votes", "wins", "ties", "both_bad", "losses")
JUDGING_KEY = "vote"  # a shared link's query key that opens the vote part
JUDGING_LINK_JS = """(...values) => {
  const keys = %s;
  const params = new URLSearchParams();
  keys.forEach((k, i) => { if (k !== "q") params.set(k, String(values[i] ?? "")); });
  params.set("%s", "1");
  const url = window.location.origin + window.location.pathname + "?" + params.toString();
  if (navigator.clipboard) { navigator.clipboard.writeText(url).catch(() => {}); }
  return url;
}"""
EXPORTS_KEPT = 3  # CSV downloads kept in the temporary folder; older ones are removed


def session_of(request) -> str:
    return getattr(request, "session_hash", None) or "api"


def model_identity(preset) -> dict:
    """What tells one model set from another in the store: votes of different sets never share a leaderboard."""
    return {"preset": preset.name, "base": preset.base, "model1": preset.model1, "model2": preset.model2}


class VotePart:
    """The components of the vote part (created here, in layout order) and their handlers."""

    def __init__(self, ctx: PageContext, battles, store):
        self.ctx, self.battles, self.store, self.preset = ctx, battles, store, ctx.preset
        i18n = ctx.i18n
        self.models = model_identity(ctx.preset)
        self.fitted = (None, None)  # (the store's state, its leaderboard): a burst of refreshes fits once
        with gr.Accordion(i18n("vote"), open=False, elem_id="vote") as self.accordion:
            gr.Markdown(i18n("vote_intro"))
            with gr.Row(equal_height=True):
                self.question = gr.Textbox(label=i18n("question"), placeholder=i18n("vote_question_ph"), scale=6,
                                           lines=1, elem_id="vote_question")
                self.example_btn = gr.Button(i18n("vote_example"), scale=1, elem_id="vote_example")
                self.battle_btn = gr.Button(i18n("vote_battle"), variant="primary", scale=1, elem_id="vote_battle")
            self.battle_id = gr.Textbox(visible=False, elem_id="vote_battle_id")
            self.choice = gr.Textbox(visible=False, elem_id="vote_choice")  # the vote endpoint's second input
            with gr.Row(equal_height=False):
                for side in ("a", "b"):
                    with gr.Column(min_width=240):
                        gr.Markdown(f"**{side.upper()}**", elem_id=f"vote_title_{side}")
                        setattr(self, f"answer_{side}", gr.Textbox(
                            show_label=False, container=False, lines=6, max_lines=20, interactive=False,
                            elem_id=f"vote_answer_{side}"))
            with gr.Row():
                self.buttons = {c: gr.Button(i18n(f"vote_{c}"), elem_id=f"vote_{c}") for c in CHOICES}
            self.status = gr.Markdown(elem_id="vote_status")
            self.reveal = gr.Markdown(elem_id="vote_reveal")
            with gr.Row(equal_height=False):
                self.next_btn = gr.Button(i18n("vote_next"), size="sm", scale=1, elem_id="vote_next")
                self.link_btn = gr.Button(i18n("vote_copy_link"), size="sm", scale=1, elem_id="vote_copy_link")
                self.link = gr.Textbox(label=i18n("vote_link"), buttons=["copy"], scale=3, elem_id="vote_link")
            self.vote_api = gr.Button(visible=False, elem_id="vote_api")  # the API's endpoints, no button shown
            self.export_api = gr.Button(visible=False, elem_id="vote_export_api")
            gr.Markdown(i18n("vote_board_title"))
            self.board = gr.Dataframe(interactive=False, elem_id="vote_leaderboard")
            gr.Markdown(i18n("vote_heatmap_title"))
            self.heatmap = gr.Dataframe(interactive=False, elem_id="vote_heatmap")
            with gr.Row():
                self.export_btn = gr.Button(i18n("vote_export"), size="sm", elem_id="vote_export")
                self.export_file = gr.File(label=i18n("download"), visible=False, elem_id="vote_file")

    @property
    def battle_outputs(self) -> list:
        """The battle endpoint's outputs: its first three are the battle id, answer A and answer B."""
        return [self.battle_id, self.answer_a, self.answer_b, self.status, self.reveal]

    def draw_example(self, question: str = "") -> dict:
        """An example question, another than the one in the box when there is a choice."""
        examples = self.ctx.examples
        others = [q for q in examples if q != question] or examples
        return {self.question: random.choice(others) if others else question}

    def battle(self, c, request: gr.Request):
        """Two columns drawn at random answer the question at the page's settings, shown as A and B."""
        lang, ctx = language(request), self.ctx
        comparison = ctx.loading.get()
        columns = wanted_columns(c)
        try:
            with ctx.visitors.request(session_of(request)):
                check_question(c.question, comparison.model_set.tokenizer, ctx.limits.max_question_chars,
                               ctx.limits.max_question_tokens)
                if not c.question.strip():
                    raise RequestError("err_vote_no_question")
                specs, settings = merge_specs(c), generation_settings(c, self.preset.generation)
                a, b = self.battles.draw(columns)
                sides = [Side(col, variant_name(col, c), {"column": col, "merge": specs[col].to_dict()
                                                          if col in specs else None}) for col in (a, b)]
                battle = self.battles.open(session_of(request), c.question, *sides, self.settings_record(settings),
                                           self.models)
                for snap in comparison.run(Request(c.question, (a, b), {k: specs[k] for k in (a, b) if k in specs},
                                                   settings)):
                    shown = {self.battle_id: battle.id, self.answer_a: views.answer_text(snap.columns[a]),
                             self.answer_b: views.answer_text(snap.columns[b]),
                             self.status: say(lang, "vote_writing"), self.reveal: ""}
                    yield shown
        except ValueError as err:
            raise self.ctx.refused(err, lang) from None
        if all(col.done and col.finish_reason != "stopped" for col in (snap.columns[a], snap.columns[b])):
            self.battles.finish(battle.id, shown[self.answer_a], shown[self.answer_b])
            yield {**shown, self.status: say(lang, "vote_ready")}  # the API's result is this last update, whole

    @staticmethod
    def settings_record(settings) -> dict:
        kept = asdict(settings)
        for key in ("eos_token_ids", "stop_strings"):  # the prompt format's, the same for every battle
            kept.pop(key, None)
        return kept

    async def vote(self, battle_id: str, choice: str, request: gr.Request) -> dict:
        """Record this session's vote on its battle; the reveal once the store has committed it. A coroutine:
        Gradio runs it on its event loop, not in a worker thread, so a burst of votes does not pass the
        interpreter lock back and forth between twenty threads (a vote is rules and one commit, about a
        millisecond; docs/benchmarks.md)."""
        lang, started = language(request), time.perf_counter()
        try:
            battle = self.battles.vote(battle_id, session_of(request), choice)
        except ValueError as err:
            raise self.ctx.refused(err, lang) from None
        # bench.votes reads this line: the server's share of a vote's latency, rules and commit.
        log.info("vote on %s committed in %.1f ms", battle.id, 1000 * (time.perf_counter() - started))
        return {self.reveal: self.reveal_text(battle, lang), self.status: say(lang, "vote_thanks")}

    def votable(self, on: bool) -> dict:
        """The four vote buttons, on or off."""
        return {button: gr.Button(interactive=on) for button in self.buttons.values()}

    def vote_for(self, choice: str):
        """A button's handler: this choice on the battle shown."""
        async def cast(battle_id: str, request: gr.Request) -> dict:
            return await self.vote(battle_id, choice, request)
        return cast

    @staticmethod
    def open_if_judging(request: gr.Request):
        """A judging link (``?vote=1``) opens the page at the vote part."""
        query = dict(request.query_params) if request else {}
        return gr.Accordion(open=True) if query.get(JUDGING_KEY) == "1" else gr.skip()

    @staticmethod
    def judging_link_js(keys) -> str:
        """The page's link with its settings but not its question (the judges bring their own), opening here."""
        return JUDGING_LINK_JS % (list(keys), JUDGING_KEY)

    def reveal_text(self, battle, lang: str) -> str:
        """Which variant was A and which B, their exact settings, the generation settings and the vote."""
        lines = [say(lang, "vote_your_choice", choice=say(lang, f"vote_{battle.choice}")), ""]
        for letter, side in (("A", battle.a), ("B", battle.b)):
            label = views.parent_label(self.preset, side.column, lang) if side.column in PARENTS else ""
            if label.startswith(side.name):  # "Model 1 (soru-cevap)": what the label adds to the name
                label = label[len(side.name):].strip()
            label = f" {label}" if label.startswith("(") else f" ({label})" if label else ""
            merge = side.spec.get("merge")
            detail = (f" <details><summary>{say(lang, 'vote_spec')}</summary><code>"
                      f"{html.escape(json.dumps(merge, ensure_ascii=False, sort_keys=True))}</code></details>"
                      if merge else "")
            lines.append(f"- **{letter}** = **{side.name}**{label}{detail}")
        s = battle.settings
        lines.append("")
        lines.append(say(lang, "vote_settings", greedy=say(lang, "vote_greedy") if s["greedy"] else
                         say(lang, "vote_sampled", temperature=s["temperature"], top_p=s["top_p"]),
                         tokens=s["max_new_tokens"], penalty=s["repetition_penalty"], seed=s["seed"],
                         models=self.models["preset"]))
        return "\n".join(lines)

    def leaderboard(self, request: gr.Request) -> dict:
        """The Bradley–Terry table of this model set's votes and the pairwise win-rate heatmap."""
        lang, state = language(request), self.store.state()
        if self.fitted[0] != state:
            self.fitted = (state, leaderboard(self.store.votes(self.models)))
        board = self.fitted[1]
        headers = [say(lang, f"board_{k}") for k in BOARD_COLUMNS]
        rows = [[r.variant, round(r.score), round(r.ci_low), round(r.ci_high), r.votes, r.wins, r.ties,
                 r.both_bad, r.losses] for r in board.rows]
        table = pd.DataFrame(rows, columns=headers)
        rates = pd.DataFrame([["" if math.isnan(x) else f"{100 * x:.0f}%" for x in row] for row in board.win_rate],
                             columns=board.order)
        rates.insert(0, say(lang, "board_row_vs_column"), board.order)
        return {self.board: table, self.heatmap: rates.style.apply(heat, rates=board.win_rate, axis=None)}

    def export(self) -> dict:
        """The page's download: every vote as a CSV file, shown."""
        return {self.export_file: gr.File(self.export_path(), visible=True)}

    def export_path(self) -> str:
        """Every vote as a CSV file (the votes_export endpoint: the file itself)."""
        folder = Path(tempfile.gettempdir()) / "harman-votes-export"
        folder.mkdir(exist_ok=True)
        for old in sorted(folder.glob("votes-*.csv"))[:-EXPORTS_KEPT + 1]:
            old.unlink(missing_ok=True)
        out = self.store.export_csv(folder / f"votes-{time.strftime('%Y%m%d-%H%M%S')}-{random.randrange(10**6)}.csv")
        return str(out)

    def wire(self, page) -> None:
        """A battle (the compare endpoint's parameters, its own question first), the votes, the leaderboard, the
        judging link and the votes' export."""
        controls = self.ctx.control_list(but_question=True)
        battle = dict(fn=endpoint(self.battle), inputs=[self.question, *controls], outputs=self.battle_outputs,
                      show_progress="hidden")
        # One leaderboard fit at a time (a burst of votes would otherwise run a bootstrap each on the 2 cores the
        # next votes' acknowledgements need); votes have no limit: a vote is a commit, not a queue's worth of work.
        board = dict(fn=self.leaderboard, inputs=None, outputs=[self.board, self.heatmap], show_progress="hidden",
                     concurrency_limit=1, concurrency_id="vote_leaderboard")
        # The vote buttons wait for both answers: off before a battle starts, on again when it has ended (the
        # rule is the server's, Battles.vote; this only spares the visitor a refusal).
        votable = dict(outputs=list(self.buttons.values()), api_visibility="private", queue=False,
                       show_progress="hidden")
        page.load(**board, api_name="leaderboard")  # before the private uses, which would take its name
        self.example_btn.click(self.draw_example, self.question, self.question, api_visibility="private", queue=False)
        drawn = self.next_btn.click(self.draw_example, self.question, self.question, api_visibility="private",
                                    queue=False).then
        private = {"api_visibility": "private"}
        for start, api in ((self.battle_btn.click, {"api_name": "battle"}), (self.question.submit, private),
                           (drawn, private)):
            start(lambda: self.votable(False), None, **votable).then(**battle, **api).then(
                lambda: self.votable(True), None, **votable)
        # A vote is one commit: outside Gradio's queue (one POST answered after the commit, no queue event and
        # event stream), so a burst of colleagues' votes is acknowledged at once (docs/benchmarks.md).
        self.vote_api.click(self.vote, [self.battle_id, self.choice], [self.reveal, self.status], api_name="vote",
                            queue=False).then(**board, api_visibility="private")
        for choice, button in self.buttons.items():
            button.click(self.vote_for(choice), self.battle_id, [self.reveal, self.status], api_visibility="private",
                         queue=False, show_progress="hidden").success(**board, api_visibility="private")
        page.load(self.open_if_judging, None, self.accordion, api_visibility="private", queue=False)
        self.link_btn.click(None, inputs=self.ctx.control_list(), outputs=self.link,
                            js=self.judging_link_js(table.LINK_KEYS), api_visibility="private")
        self.export_api.click(self.export_path, None, self.export_file, api_name="votes_export")
        self.export_btn.click(self.export, None, self.export_file, api_visibility="private")


def heat(frame: pd.DataFrame, rates) -> pd.DataFrame:
    """Cell colours of the win-rate table: green where the row's variant beats the column's, red where it loses,
    the stronger the further from an even split."""
    styles = pd.DataFrame("", index=frame.index, columns=frame.columns)
    for i in range(rates.shape[0]):
        for j in range(rates.shape[1]):
            x = rates[i, j]
            if not math.isnan(x):
                hue = (f"rgba(40, 160, 80, {2 * (x - 0.5):.2f})" if x >= 0.5
                       else f"rgba(220, 60, 60, {2 * (0.5 - x):.2f})")
                styles.iat[i, j + 1] = f"background-color: {hue}"
    return styles
