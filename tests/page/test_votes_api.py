"""The blind vote's endpoints (`battle`, `vote`, `leaderboard`, `votes_export`) through gradio_client, against the
app launched in-process on tiny models with a vote store in a temporary folder."""

import csv
import json

import pytest
from gradio_client import Client

import app
from models import model_set
from scoring.votes import EXPORT_COLUMNS, VoteStore
from serving.comparison import Comparison
from tests import tiny_models
from tests.page.defaults import DEFAULTS

ANSWERS = slice(1 + len(app.COLUMNS), 1 + 2 * len(app.COLUMNS))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("votes-app")
    tok = tiny_models.tokenizer()
    base = tiny_models.model("gpt2", len(tok))
    dirs = {"base": tiny_models.save(base, tok, root / "base"),
            "model1": tiny_models.save(tiny_models.finetune_of(base, seed=1, scale=0.05), tok, root / "m1"),
            "model2": tiny_models.save(tiny_models.finetune_of(base, seed=2, scale=0.05), tok, root / "m2")}
    preset = tiny_models.preset(dirs, generation={"max_new_tokens": 8, "max_new_tokens_cap": 32})
    store = VoteStore(root / "votes.sqlite")
    page, options = app.build_page(Comparison(model_set.load(preset)), ["Türkiye'nin başkenti neresidir?"],
                                   app.Limits(max_votes_per_minute=5), votes=store)
    app.queue_quietly(page.queue(max_size=32, default_concurrency_limit=4))
    _, url, _ = page.launch(prevent_thread_lock=True, quiet=True, show_error=True, **options)
    clients = [Client(url, verbose=False, headers={"Accept-Language": lang}) for lang in ("en-US", "tr-TR")]
    yield url, clients, store
    for c in clients:
        c.close()
    page.close()


def battle(client, **changes):
    out = client.predict(*{**DEFAULTS, **changes}.values(), api_name="/battle")
    return out[0], out[1], out[2]


def test_a_battle_answers_with_two_columns_of_the_pipeline_and_a_vote_reveals_them(served):
    _, (en, tr), store = served
    battle_id, answer_a, answer_b = battle(en, question="Işık nedir?")
    assert len(battle_id) == 32 and answer_a and answer_b
    reveal = en.predict(battle_id, "A", api_name="/vote")
    [row] = [r for r in store.rows() if r["battle_id"] == battle_id]
    assert row["choice"] == "A" and (row["answer_a"], row["answer_b"]) == (answer_a, answer_b)
    assert f"**A** = **{row['variant_a']}**" in reveal[0] and f"**B** = **{row['variant_b']}**" in reveal[0]
    assert "Your vote" in reveal[0] and json.loads(row["models"])["preset"] == "tiny"
    # The same answers as the compare endpoint's columns at the same settings: the battle is that pipeline.
    compared = dict(zip(app.COLUMNS, en.predict(*{**DEFAULTS, "question": "Işık nedir?"}.values(),
                                                api_name="/compare")[ANSWERS]))
    columns = json.loads(row["spec_a"])["column"], json.loads(row["spec_b"])["column"]
    assert columns[0] != columns[1] and (compared[columns[0]], compared[columns[1]]) == (answer_a, answer_b)
    table = en.predict(api_name="/leaderboard")[0]
    assert table["headers"][:5] == ["variant", "score", "95% low", "95% high", "votes"]
    names = {r[0]: r for r in table["data"]}
    assert row["variant_a"] in names and row["variant_b"] in names  # the reveal's names are the leaderboard's
    # The page keeps the last fit until the store moves: a new vote shows at once.
    votes_before = {r[0]: r[4] for r in table["data"]}
    second_id = battle(en, question="Su nedir?")[0]
    en.predict(second_id, "tie", api_name="/vote")
    [second] = [r for r in store.rows() if r["battle_id"] == second_id]
    after = {r[0]: r[4] for r in en.predict(api_name="/leaderboard")[0]["data"]}
    for name in (second["variant_a"], second["variant_b"]):
        assert after[name] == votes_before.get(name, 0) + 1


def test_refused_votes_through_the_api_change_nothing(served):
    _, (en, tr), store = served
    battle_id, _, _ = battle(tr, question="Su kaç derecede kaynar?")
    before = store.count()
    for client, args, words in ((en, (battle_id, "A"), "another session"),
                                (tr, (battle_id, "C"), "geçerli değil"),
                                (tr, ("0" * 32, "A"), "karşılaştırma yok")):
        with pytest.raises(Exception, match=words):
            client.predict(*args, api_name="/vote")
    assert store.count() == before
    tr.predict(battle_id, "both_bad", api_name="/vote")
    with pytest.raises(Exception, match="zaten oy verildi"):
        tr.predict(battle_id, "tie", api_name="/vote")
    assert store.count() == before + 1
    [row] = [r for r in store.rows() if r["battle_id"] == battle_id]
    assert row["choice"] == "both_bad"


def test_the_export_endpoint_gives_the_csv_of_every_vote(served):
    _, (en, _), store = served
    path = en.predict(api_name="/votes_export")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == EXPORT_COLUMNS
    assert [r["battle_id"] for r in rows] == [r["battle_id"] for r in store.rows()] and rows


def test_the_battle_endpoint_takes_the_compare_endpoints_parameters(served):
    url, (en, _), _ = served
    api = en.view_api(print_info=False, return_format="dict")["named_endpoints"]
    battle_params = [p["parameter_name"] for p in api["/battle"]["parameters"]]
    assert battle_params == [p["parameter_name"] for p in api["/compare"]["parameters"]]
    assert [p["parameter_name"] for p in api["/vote"]["parameters"]] == ["battle_id", "choice"]
    assert {"/leaderboard", "/votes_export"} <= set(api)


def test_a_visitor_over_the_owners_votes_a_minute_is_refused(served):
    url, _, store = served
    client = Client(url, verbose=False, headers={"Accept-Language": "en-US"})  # a session of its own
    before = store.count()
    for i in range(5):  # the fixture's owner allows 5 a minute
        battle_id, _, _ = battle(client, question=f"Soru {i}?")
        client.predict(battle_id, "tie", api_name="/vote")
    battle_id, _, _ = battle(client, question="Bir soru daha?")
    with pytest.raises(Exception, match="at most 5 votes a minute"):
        client.predict(battle_id, "tie", api_name="/vote")
    assert store.count() == before + 5
    client.close()
