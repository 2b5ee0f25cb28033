"""The Turkish data sets the default fine-tunes learn from, and the example questions."""

import csv
import re

import pytest

from prompts import examples
from scoring.metrics import turkish_lower
from training.finetune import DATA, TASKS

COLUMNS = {"qa": ["soru", "insan", "makine"], "instructions": ["talimat", "giris", "cikti"]}
MAY_BE_EMPTY = {"giris"}


def rows(task, split):
    with (DATA / TASKS[task][split]).open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return reader.fieldnames, list(reader)


def key(row, task):
    text = row["soru"] if task == "qa" else row["talimat"] + " " + row["giris"]
    return re.sub(r"\W+", " ", turkish_lower(text)).strip()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_columns_sizes_and_no_empty_answers(task):
    for split, least in (("train", 300), ("heldout", 60)):
        header, data = rows(task, split)
        assert header == COLUMNS[task], (task, split)
        assert len(data) >= least, (task, split, len(data))
        for number, row in enumerate(data, start=2):
            assert None not in row and all(v is not None for v in row.values()), (task, split, number)
            for column in COLUMNS[task]:
                if column not in MAY_BE_EMPTY:
                    assert row[column].strip(), f"{task}/{split} line {number}: empty {column}"


@pytest.mark.parametrize("task", sorted(TASKS))
def test_no_duplicates_and_no_leak_from_train_into_heldout(task):
    train = [key(r, task) for r in rows(task, "train")[1]]
    heldout = [key(r, task) for r in rows(task, "heldout")[1]]
    assert len(set(train)) == len(train)
    assert len(set(heldout)) == len(heldout)
    assert not set(train) & set(heldout)
    train_words = [set(t.split()) for t in train]
    for h in heldout:
        words = set(h.split())
        worst = max(len(words & t) / len(words | t) for t in train_words)
        assert worst < 0.8, f"held-out row {h!r} nearly repeats a training row (Jaccard {worst:.2f})"


def test_examples_start_with_the_seed_questions_and_are_not_training_data():
    items = examples.load()
    assert [i["source"] for i in items[:5]] == ["seed"] * 5
    assert items[0]["text"] == "Bir abla ile kardeşin yaş farkı 10'dur, 5 yıl sonra yaş farkları kaç olur?"
    assert len(items) >= 20
    seen = {key(r, t) for t in TASKS for s in ("train", "heldout") for r in rows(t, s)[1]}
    for item in items:
        assert re.sub(r"\W+", " ", turkish_lower(item["text"])).strip() not in seen, item["text"]
