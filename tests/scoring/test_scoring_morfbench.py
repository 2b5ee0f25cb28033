"""TurkMorfBench in Scores: the batched scorer against the package's own local scorer (turkmorfbench.olcum.Yerel)
on tiny random models saved to folders, item by item."""

import sys
import threading

import pytest
from turkmorfbench import olcum, rapor, veri

from errors import Refusal
from models import model_set, presets, saving
from page import views
from scoring import morfbench
from serving.comparison import Comparison
from serving.controls import Controls
from serving.requests import merge_specs
from tests import tiny_models

COLUMNS = ["model1", "model2", "soup", "slerp", "ties"]
ITEMS = 12


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny model set, its comparison, and every column saved as a checkpoint folder for the package."""
    root = tmp_path_factory.mktemp("morfbench")
    dirs = tiny_models.model_set_dirs(root, "llama")
    comparison = Comparison(model_set.load(presets.load(str(tiny_models.write_preset(root / "p.yaml", dirs)))))
    specs = merge_specs(Controls(question=""))
    with comparison.holding({c: specs[c] for c in COLUMNS[2:]}, materialise=True) as held:
        folders = {c: saving.save_variant(comparison.model_set, held.variants.get(c, c), root / "saved", c, "x")
                   for c in COLUMNS}
    return comparison, {c: olcum.Yerel(str(folders[c]), dtype="float32") for c in COLUMNS}


def batched_choices(comparison, items, **kwargs):
    """Every column's choices, Soup and SLERP as merge-free rows (as Scores holds them)."""
    specs = merge_specs(Controls(question=""))
    bank = comparison.model_set.bank
    with comparison.holding({c: specs[c] for c in COLUMNS[2:]}) as held:
        assert type(held.recipes["soup"]).__name__ == "Mix"  # the merge-free path is what is tested
        recipes = [held.recipes[c] if c in held.recipes else bank.index(c) for c in COLUMNS]
        return morfbench.score_items(bank, recipes, comparison.model_set.tokenizer, items, **kwargs)


def package_scores(yerel, item):
    prompt = olcum.ISTEM % (item["govde"], "")
    return [yerel.olasilik(prompt, text) for text in [item["altin"], *item["celdirici"].values()]]


def test_every_column_scores_every_candidate_as_the_package_does(served):
    comparison, package = served
    items = morfbench.load_items(ITEMS)
    choices = batched_choices(comparison, items, items_per_forward=5)  # chunks of 5, 5 and 2 items
    for column, found in zip(COLUMNS, choices):
        assert set(found) == {m["kimlik"] for m in items}
        chosen = olcum.secim_olc(package[column], items)
        for item in items:
            got = found[item["kimlik"]]
            assert list(got.scores) == pytest.approx(package_scores(package[column], item), abs=2e-5)
            assert (got.correct, got.chosen) == chosen[item["kimlik"]], (column, item["kimlik"])
    # Random tiny models choose differently: the figures are not all the same choice.
    assert len({c.chosen for found in choices for c in found.values()}) > 1


def test_a_candidate_whose_first_token_merges_with_the_prompts_last(served):
    comparison, package = served
    tokenizer = comparison.model_set.tokenizer
    item = {"kimlik": "sinir", "govde": "Ankara", "altin": "Ankara'dır", "kova": "deneme", "gorev": "deneme",
            "gercek": True, "celdirici": {"uyum": "Ankara'dir", "kesme_yok": "Ankara"}}
    prompt_ids = tokenizer(olcum.ISTEM % ("Ankara", ""))["input_ids"]
    full_ids = tokenizer(olcum.ISTEM % ("Ankara", "Ankara'dır"))["input_ids"]
    # The prompt's last token (the space) is not a token of prompt + candidate: it merged into the candidate's.
    assert full_ids[:len(prompt_ids) - 1] == prompt_ids[:-1] and full_ids[len(prompt_ids) - 1] != prompt_ids[-1]
    encoded = morfbench.encode(tokenizer, item)
    # The straddling token counts for every candidate, and the shared ids are the candidates', not the prompt's:
    # the boundary token is computed from what precedes it, never read from the prompt-alone forward.
    assert encoded.starts == (len(prompt_ids) - 1,) * 3
    assert encoded.prefix[len(prompt_ids) - 1] == full_ids[len(prompt_ids) - 1] != prompt_ids[-1]
    # "Ankara" is a prefix of the other two candidates: all its scored tokens lie in the shared prefix.
    assert not encoded.tail_scored(2) and encoded.tail_scored(0)
    for column, found in zip(COLUMNS, batched_choices(comparison, [item])):
        assert list(found["sinir"].scores) == pytest.approx(package_scores(package[column], item), abs=2e-5)


def test_the_breakdown_is_the_packages_report_of_the_same_choices(served):
    comparison, package = served
    items = morfbench.load_items(ITEMS)
    rows = morfbench.bench_variants(comparison, items, COLUMNS, Controls(question=""))
    for row in rows:
        expected = rapor.kesitler(items, olcum.secim_olc(package[row.variant], items))
        assert row.report == expected
        assert row.scored == ITEMS and row.right == expected["kesit"]["TOPLAM"][0]
    headers, table = views.bench_table(rows, comparison.model_set.preset, "en")
    assert headers[:2] == ["Column", "TurkMorfBench accuracy (%)"]
    assert [r[1] for r in table] == [round(100 * r.right / ITEMS, 1) for r in rows]
    soup = rows[2].report
    assert table[2][2] == round(soup["kesit"]["gerçek gövde"][2], 1)
    top = max(soup["hata_turu"].items(), key=lambda e: (e[1], e[0]))
    assert table[2][4] == f"{top[0]} ({top[1]} times)"
    note = views.bench_note(rows, ITEMS, comparison.model_set.preset, "tr")
    bucket = next(k for k in soup["kesit"] if k.startswith("kova: "))
    right, total, share = soup["kesit"][bucket]
    assert f"| {bucket[6:]} |" in note and f"{share:.1f} ({right}/{total})" in note and "CC BY 4.0" in note


def test_stop_keeps_the_items_already_scored(served):
    comparison, _ = served
    items = morfbench.load_items(ITEMS)
    cancel, seen = threading.Event(), []

    def progress(done, total):
        seen.append((done, total))
        cancel.set()  # Stop after the first forward

    choices = batched_choices(comparison, items, items_per_forward=4, cancel=cancel, progress=progress)
    assert seen == [(4, ITEMS)]
    assert [set(found) for found in choices] == [{m["kimlik"] for m in items[:4]}] * len(COLUMNS)


def test_items_are_the_packages_own_sample():
    fresh = veri.suz(veri.yukle("cekirdek"), en_fazla=300)  # what `turkmorfbench olc --en-fazla 300` measures
    assert [m["kimlik"] for m in morfbench.load_items(300)] == [m["kimlik"] for m in fresh]
    assert len(morfbench.load_items(morfbench.CORE_ITEMS)) == 1836


@pytest.mark.parametrize("n, cap", [(0, 1836), (1837, 1836), (11, 10), (5000, 9999)])
def test_an_item_count_out_of_range_is_refused(n, cap):
    with pytest.raises(Refusal) as refused:
        morfbench.load_items(n, cap)
    assert refused.value.key == "err_bench_items"
    limit = min(cap, 1836)
    assert f"{n} is outside the allowed range [1, {limit}]" in refused.value.text("en")
    assert f"{n} izin verilen [1, {limit}]" in refused.value.text("tr")


def test_a_missing_package_is_refused_with_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "turkmorfbench", None)  # import turkmorfbench now raises ImportError
    with pytest.raises(Refusal) as refused:
        morfbench.load_items(10)
    assert "pip install turkmorfbench==3.8.0" in refused.value.text("en")
    assert "kurulu değil" in refused.value.text("tr")
