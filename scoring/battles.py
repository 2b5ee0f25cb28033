"""Blind battles: which session was served which two variants, whether both answers finished, and the one vote each
battle may take. Battles live in memory (a restart forgets the unvoted ones); votes go to the store
(scoring/votes.py) and are acknowledged only once it has committed them.

A variant's name is built from its column and settings (``variant_name``) and is the one string the reveal, the
leaderboard and the export show.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone

from errors import Refusal
from merging.methods import METHODS, PAGE_INPUTS
from scoring.leaderboard import CHOICES
from serving.columns import PARENTS

RATE_WINDOW_S = 60.0
BATTLE_TTL_S = 3600.0  # a battle not voted on within the hour is forgotten
MAX_BATTLES = 10_000  # and never more than this many are kept, oldest first out


def variant_name(column: str, c) -> str:
    """The column at these controls (serving/controls.py's Controls), as votes and the leaderboard name it:
    "Model 1", "Soup w=0.50/0.50", "SLERP t=0.50", "TIES d=0.50", "dare_ties d=0.30 λ=1.20". One string in every
    language (the reveal, the leaderboard and the export share it), so its words are symbols, not labels."""
    if column in PARENTS:
        return f"Model {column[-1]}"
    if column == "soup":
        total = (c.soup_w1 + c.soup_w2) or 1.0
        return f"Soup w={c.soup_w1 / total:.2f}/{c.soup_w2 / total:.2f}"
    if column == "slerp":
        parts = [f"SLERP t={c.slerp_t:.2f}"]
        parts += [f"{what}={text.strip()}" for what, text in (("attn", c.slerp_attn_schedule),
                                                                ("mlp", c.slerp_mlp_schedule)) if text.strip()]
        return " ".join(parts)
    if column == "ties":
        d1 = c.ties_density if c.ties_density1 is None else c.ties_density1
        d2 = c.ties_density if c.ties_density2 is None else c.ties_density2
        parts = ["TIES", f"d={d1:.2f}" if d1 == d2 else f"d={d1:.2f}/{d2:.2f}"]
        return " ".join(parts + _weights_and_lambda(c, "ties"))
    method = c.extra_method
    parts = [method] + ([f"d={c.extra_density:.2f}"] if "density" in _reads(method) else [])
    return " ".join(parts + _weights_and_lambda(c, method))


def _weights_and_lambda(c, method: str) -> list[str]:
    """The TIES weights and λ (which the extra column shares) where they differ from 1, as the name's tail."""
    parts = []
    if "weight" in _reads(method) and (c.ties_w1, c.ties_w2) != (1.0, 1.0):
        parts.append(f"w={c.ties_w1:.2f}/{c.ties_w2:.2f}")
    if "lambda" in _reads(method) and c.ties_lambda != 1.0:
        parts.append(f"λ={c.ties_lambda:.2f}")
    return parts


def _reads(method: str) -> tuple[str, ...]:
    """The page's inputs a merge method reads (its record's), every one for a name without a record."""
    return METHODS[method].reads if method in METHODS else PAGE_INPUTS


@dataclass(frozen=True)
class Side:
    column: str  # the page's column: model1, model2, soup, slerp, ties, extra
    name: str  # variant_name
    spec: dict  # {"column": ..., "merge": the merge spec as a dict, or None for Model 1 and Model 2}


@dataclass
class Battle:
    id: str
    voter: str
    question: str
    a: Side
    b: Side
    settings: dict  # the generation settings both answers use
    models: dict  # the model set's identity
    created: float
    answer_a: str = ""
    answer_b: str = ""
    finished: bool = False
    voting: bool = False  # a vote on it is being written (or was)
    claimed_at: float = 0.0
    choice: str = ""  # set once the vote is committed


@dataclass
class Battles:
    """The battles served and not yet forgotten, and the rules of a vote; ``store`` is a VoteStore."""
    store: object
    max_votes_per_minute: int = 20
    ttl_s: float = BATTLE_TTL_S
    clock: object = time.monotonic
    _open: dict = field(default_factory=dict)
    _recent: dict = field(default_factory=dict)  # voter -> times of their votes in the last RATE_WINDOW_S
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def draw(self, columns: tuple[str, ...], rng: random.Random | None = None) -> tuple[str, str]:
        """Two different columns in random order: the first is shown as A."""
        if len(columns) < 2:
            raise Refusal("err_battle_columns")
        a, b = (rng or random).sample(list(columns), 2)
        return a, b

    def open(self, session: str, question: str, a: Side, b: Side, settings: dict, models: dict) -> Battle:
        battle = Battle(uuid.uuid4().hex, self.store.voter(session), question, a, b, settings, models, self.clock())
        with self._lock:
            self._forget_old()
            self._open[battle.id] = battle
        return battle

    def finish(self, battle_id: str, answer_a: str, answer_b: str) -> None:
        """Both answers are complete: the battle may now take its vote."""
        with self._lock:
            battle = self._open.get(battle_id)
            if battle is not None:
                battle.answer_a, battle.answer_b, battle.finished = answer_a, answer_b, True

    def vote(self, battle_id: str, session: str, choice: str) -> Battle:
        """Record the vote and return the battle, with its choice, once the store has committed it; a vote against
        the rules raises a Refusal and changes nothing."""
        voter = self.store.voter(session)
        with self._lock:
            battle = self._claim(str(battle_id or ""), voter, choice)
        try:
            self.store.record(self._row(battle, choice))
        except BaseException:
            with self._lock:
                battle.voting = False
                self._recent[voter].remove(battle.claimed_at)
            raise
        with self._lock:
            battle.choice = choice
        return battle

    def _claim(self, battle_id: str, voter: str, choice: str) -> Battle:
        """The battle, marked as being voted on, if this vote keeps every rule (called under the lock)."""
        if choice not in CHOICES:
            raise Refusal("err_vote_choice", choice=choice, choices=", ".join(CHOICES))
        self._forget_old()
        battle = self._open.get(battle_id)
        if battle is None:
            raise Refusal("err_vote_unknown", battle=battle_id, minutes=round(self.ttl_s / 60))
        if battle.voter != voter:
            raise Refusal("err_vote_other_session", battle=battle_id)
        if battle.voting:
            raise Refusal("err_vote_twice", battle=battle_id)
        if not battle.finished:
            raise Refusal("err_vote_unfinished", battle=battle_id)
        recent = self._recent.get(voter, ())
        if len(recent) >= self.max_votes_per_minute:
            wait = RATE_WINDOW_S - (self.clock() - recent[0])
            raise Refusal("err_vote_rate", limit=self.max_votes_per_minute, seconds=max(1, round(wait)))
        # Counted from the claim, so that votes written side by side cannot pass the limit together.
        battle.voting, battle.claimed_at = True, self.clock()
        self._recent.setdefault(voter, deque()).append(battle.claimed_at)
        return battle

    def _forget_old(self) -> None:
        """Drop battles past their time (and the oldest beyond MAX_BATTLES) and votes out of the rate window."""
        now = self.clock()
        for key in [k for k, b in self._open.items() if now - b.created > self.ttl_s]:
            del self._open[key]
        while len(self._open) > MAX_BATTLES:
            del self._open[next(iter(self._open))]
        for voter in list(self._recent):
            times = self._recent[voter]
            while times and now - times[0] > RATE_WINDOW_S:
                times.popleft()
            if not times:
                del self._recent[voter]

    @staticmethod
    def _row(battle: Battle, choice: str) -> dict:
        return {"battle_id": battle.id, "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "question": battle.question, "variant_a": battle.a.name, "variant_b": battle.b.name,
                "answer_a": battle.answer_a, "answer_b": battle.answer_b, "choice": choice, "voter": battle.voter,
                "spec_a": battle.a.spec, "spec_b": battle.b.spec, "models": battle.models,
                "settings": battle.settings}
