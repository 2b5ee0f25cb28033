"""The blind votes without Gradio: the store (scoring/votes.py) and the rules of a battle (scoring/battles.py).

Every refused vote says why and leaves the store as it was; many sessions voting at once from threads store each
vote exactly once; a store written by a process killed with -9 reads back whole; the export has its columns;
the Hub mirror writes the folder its CommitScheduler would push."""

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from errors import Refusal
from scoring import votes as votes_module
from scoring.battles import Battles, Side, variant_name
from scoring.votes import EXPORT_COLUMNS, SCHEMA_VERSION, Mirror, VoteStore, hub_mirror
from serving.controls import Controls

ROOT = Path(__file__).resolve().parents[2]
MODELS = {"preset": "tiny", "base": "b", "model1": "m1", "model2": "m2"}
SETTINGS = {"max_new_tokens": 12, "greedy": True, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.0,
            "seed": 0}
SIDES = (Side("model1", "Model 1", {"column": "model1", "merge": None}),
         Side("slerp", "SLERP t=0.50", {"column": "slerp", "merge": {"merge_method": "slerp",
                                                                       "parameters": {"t": 0.5}}}))


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def served(battles: Battles, session: str, finished: bool = True, question: str = "Işık nedir?"):
    battle = battles.open(session, question, *SIDES, SETTINGS, MODELS)
    if finished:
        battles.finish(battle.id, f"cevap A {battle.id[:4]}", f"cevap B {battle.id[:4]}")
    return battle


@pytest.fixture
def store(tmp_path):
    s = VoteStore(tmp_path / "votes.sqlite")
    yield s
    s.close()


def test_a_vote_is_stored_with_everything_and_the_voter_is_a_salted_hash(store):
    battles = Battles(store)
    battle = served(battles, "session-1")
    voted = battles.vote(battle.id, "session-1", "B")
    assert voted.choice == "B"
    [row] = store.rows()
    assert row["battle_id"] == battle.id and row["choice"] == "B" and row["question"] == "Işık nedir?"
    assert (row["variant_a"], row["variant_b"]) == ("Model 1", "SLERP t=0.50")
    assert row["answer_a"].startswith("cevap A") and row["answer_b"].startswith("cevap B")
    assert json.loads(row["spec_b"])["merge"]["parameters"] == {"t": 0.5}
    assert json.loads(row["models"]) == MODELS and json.loads(row["settings"]) == SETTINGS
    assert "session-1" not in row["voter"] and len(row["voter"]) == 16
    assert row["voter"] == store.voter("session-1") != store.voter("session-2")
    assert VoteStore(store.path).voter("session-1") == row["voter"]  # the salt is the file's: same after a restart
    assert [v.choice for v in store.votes(MODELS)] == ["B"] and store.votes({**MODELS, "base": "other"}) == []


@pytest.mark.parametrize("case, key", [
    ("bad choice", "err_vote_choice"), ("unknown battle", "err_vote_unknown"),
    ("another session's battle", "err_vote_other_session"), ("second vote", "err_vote_twice"),
    ("before the answers finished", "err_vote_unfinished"), ("over the rate limit", "err_vote_rate"),
    ("expired battle", "err_vote_unknown")])
def test_every_refused_vote_says_why_and_changes_nothing(store, case, key):
    clock = Clock()
    battles = Battles(store, max_votes_per_minute=2, clock=clock)
    mine = served(battles, "me")
    other = served(battles, "someone else")
    for _ in range(2 if case == "over the rate limit" else 1):
        first = served(battles, "me")
        battles.vote(first.id, "me", "A")
    before = store.rows()
    attempt = {"bad choice": (mine.id, "me", "C"), "unknown battle": ("f" * 32, "me", "A"),
               "another session's battle": (other.id, "me", "A"), "second vote": (first.id, "me", "tie"),
               "before the answers finished": (served(battles, "me", finished=False).id, "me", "A"),
               "over the rate limit": (mine.id, "me", "A"), "expired battle": (mine.id, "me", "A")}[case]
    if case == "expired battle":
        clock.now += battles.ttl_s + 1
    with pytest.raises(Refusal) as refused:
        battles.vote(*attempt)
    assert refused.value.key == key
    assert store.rows() == before
    words = {"err_vote_choice": "'C' is not valid", "err_vote_unknown": "no battle", "err_vote_other_session":
             "another session", "err_vote_twice": "already has its vote", "err_vote_unfinished": "not finished",
             "err_vote_rate": "at most 2 votes a minute"}[key]
    assert words in refused.value.text("en"), refused.value.text("en")
    assert refused.value.text("tr") != refused.value.text("en")
    if case == "over the rate limit":  # a minute later the same vote is taken
        clock.now += 61
        assert battles.vote(*attempt).choice == "A" and len(store.rows()) == 3


def test_concurrent_votes_from_many_sessions_are_each_stored_once(store):
    battles = Battles(store, max_votes_per_minute=1000)
    sessions = [f"s{i}" for i in range(16)]
    served_to = {s: [served(battles, s).id for _ in range(10)] for s in sessions}
    acknowledged, refused, start = [], [], threading.Barrier(len(sessions))

    def voter(session):
        start.wait()
        for battle_id in served_to[session]:
            for _ in range(2):  # a double click: the second is refused
                try:
                    acknowledged.append(battles.vote(battle_id, session, "tie").id)
                except Refusal as err:
                    refused.append(err.key)

    threads = [threading.Thread(target=voter, args=(s,)) for s in sessions]
    [t.start() for t in threads]
    [t.join() for t in threads]
    stored = [r["battle_id"] for r in store.rows()]
    assert len(acknowledged) == 160 and sorted(stored) == sorted(acknowledged) and len(set(stored)) == 160
    assert refused == ["err_vote_twice"] * 160


def test_a_store_written_by_a_process_killed_with_kill_9_reads_back_whole(tmp_path):
    path = tmp_path / "votes.sqlite"
    writer = f"""
import sys
from scoring.battles import Battles, Side
from scoring.votes import VoteStore
battles = Battles(VoteStore({str(path)!r}), max_votes_per_minute=10**6)
side = Side("model1", "Model 1", {{"column": "model1", "merge": None}})
other = Side("model2", "Model 2", {{"column": "model2", "merge": None}})
i = 0
while True:
    b = battles.open("s", "q" * 200, side, other, {{}}, {{}})
    battles.finish(b.id, "a" * 300, "b" * 300)
    battles.vote(b.id, "s", "A")
    print(b.id, flush=True)  # acknowledged: committed
    i += 1
"""
    proc = subprocess.Popen([sys.executable, "-c", writer], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    acknowledged = [proc.stdout.readline().strip() for _ in range(150)]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    acknowledged += [line.strip() for line in proc.stdout.read().splitlines() if len(line.strip()) == 32]
    reopened = VoteStore(path)
    stored = [r["battle_id"] for r in reopened.rows()]
    assert set(acknowledged) <= set(stored) and len(stored) == len(set(stored)) >= 150
    assert all(r["answer_a"] == "a" * 300 for r in reopened.rows())  # no torn row
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_the_export_has_its_columns_and_the_command_line_exports_and_clears(store, tmp_path, capsys):
    battles = Battles(store)
    ids = [served(battles, "s").id for _ in range(3)]
    for battle_id, choice in zip(ids, ("A", "both_bad", "tie")):
        battles.vote(battle_id, "s", choice)
    out = store.export_csv(tmp_path / "out.csv")
    with open(out, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == EXPORT_COLUMNS
    assert EXPORT_COLUMNS[:9] == ("battle_id", "time", "question", "variant_a", "variant_b", "answer_a", "answer_b",
                                  "choice", "voter")
    assert [r["choice"] for r in rows] == ["A", "both_bad", "tie"] and rows[0]["question"] == "Işık nedir?"
    assert votes_module.main(["export", "--votes", str(store.path), "--out", str(tmp_path / "cli.csv")]) == 0
    assert (tmp_path / "cli.csv").read_text(encoding="utf-8") == out.read_text(encoding="utf-8")
    assert votes_module.main(["clear", "--votes", str(store.path), "--yes"]) == 0
    assert "3 votes removed" in capsys.readouterr().out and store.count() == 0
    assert votes_module.main(["export", "--votes", str(tmp_path / "none.sqlite")]) == 2


def test_a_store_of_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(Refusal) as refused:
        VoteStore(path)
    assert refused.value.key == "err_store_schema" and str(path) in refused.value.text("en")


class FakeScheduler:
    """Stands in for huggingface_hub.CommitScheduler (the Hub is out of reach): keeps its arguments and a lock."""
    made = []

    def __init__(self, **kwargs):
        self.kwargs, self.lock = kwargs, threading.Lock()
        FakeScheduler.made.append(self)


def test_the_hub_mirror_writes_each_vote_to_the_folder_its_scheduler_pushes(tmp_path):
    folder = tmp_path / "mirror"
    mirror = hub_mirror("owner/harman-votes", "hf_x", folder, scheduler_type=FakeScheduler)
    scheduler = FakeScheduler.made[-1]
    assert scheduler.kwargs == {"repo_id": "owner/harman-votes", "repo_type": "dataset", "folder_path": str(folder),
                                "path_in_repo": "votes", "every": 5, "private": True, "token": "hf_x"}
    store = VoteStore(tmp_path / "votes.sqlite", mirror)
    battles = Battles(store)
    ids = [served(battles, "s").id for _ in range(2)]
    for battle_id in ids:
        battles.vote(battle_id, "s", "B")
    [file] = list(folder.glob("votes-*.jsonl"))
    lines = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
    assert [x["battle_id"] for x in lines] == ids and lines[0]["models"] == MODELS
    assert set(lines[0]) == set(EXPORT_COLUMNS)
    assert isinstance(Mirror(tmp_path / "m2").file, Path)


def test_variant_names_follow_the_settings():
    c = Controls(question="q", soup_w1=0.3, soup_w2=0.9, slerp_t=0.25, ties_lambda=1.2, extra_method="dare_ties",
                 extra_density=0.3)
    assert [variant_name(col, c) for col in ("model1", "model2", "soup", "slerp", "ties", "extra")] == [
        "Model 1", "Model 2", "Soup w=0.25/0.75", "SLERP t=0.25", "TIES d=0.50 λ=1.20",
        "dare_ties d=0.30 λ=1.20"]
    scheduled = Controls(question="q", slerp_attn_schedule="[0, 1]", extra_method="model_stock")
    assert variant_name("slerp", scheduled) == "SLERP t=0.50 attn=[0, 1]"
    assert variant_name("extra", scheduled) == "model_stock"


def test_variant_names_hold_no_words_of_either_language():
    """A name is one string on Turkish and English pages alike (the reveal, the leaderboard, the export), so it
    may not use a label of one language: "TIES density=0.50" put English on a Turkish page."""
    from words import TEXT

    def own_words(lang, other):
        pieces = {p.strip(" ·:%()/.,;-=") for v in TEXT[lang].values() for p in v.replace("}", "{").split("{")[::2]}
        return {p for p in pieces if len(p) >= 5 and p not in " ".join(TEXT[other].values())}

    c = Controls(question="q", ties_density1=0.3, ties_density2=0.6, ties_lambda=1.2, ties_w1=0.5,
                 extra_method="della", extra_density=0.3)
    names = " | ".join(variant_name(col, c) for col in ("model1", "model2", "soup", "slerp", "ties", "extra"))
    for lang, other in (("tr", "en"), ("en", "tr")):
        assert not [p for p in own_words(lang, other) if p in names], (lang, names)


def test_the_command_line_places_the_store_and_mirrors_it_when_the_owner_asks(tmp_path, monkeypatch):
    import app

    monkeypatch.delenv("HARMAN_VOTES", raising=False)
    monkeypatch.delenv("HARMAN_VOTES_REPO", raising=False)
    args = app.parse_args(["--save-dir", str(tmp_path / "saved")])
    assert args.max_votes_per_minute == 20
    store = app.open_votes(args)
    assert store.path == tmp_path / "saved" / "votes.sqlite" and store.mirror is None and store.path.exists()
    made = []
    monkeypatch.setattr(votes_module, "hub_mirror", lambda repo, token, folder: made.append((repo, token, folder))
                        or Mirror(folder))
    monkeypatch.setenv("HARMAN_VOTES", str(tmp_path / "elsewhere.sqlite"))
    monkeypatch.setenv("HARMAN_VOTES_REPO", "owner/votes")
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    store = app.open_votes(app.parse_args(["--max-votes-per-minute", "7"]))
    assert store.path == tmp_path / "elsewhere.sqlite" and isinstance(store.mirror, Mirror)
    assert made == [("owner/votes", "hf_x", tmp_path / "votes-mirror")]


def test_the_store_state_moves_with_every_vote_and_with_a_clear(store):
    """The page's leaderboard is refitted only when this state moves: a vote or a clear must move it."""
    battles = Battles(store, max_votes_per_minute=100)
    assert store.state() == (0, None)
    first = served(battles, "s1")
    battles.vote(first.id, "s1", "A")
    assert store.state() == (1, first.id)
    second = served(battles, "s2")
    battles.vote(second.id, "s2", "tie")
    assert store.state() == (2, second.id)
    store.clear()
    assert store.state() == (0, None)
    third = served(battles, "s1")
    battles.vote(third.id, "s1", "B")
    assert store.state() == (1, third.id) and third.id != first.id
