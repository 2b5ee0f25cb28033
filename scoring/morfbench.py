"""TurkMorfBench (eCloud Tech.; code Apache-2.0, data CC BY 4.0): Turkish suffix selection as a forced choice,
scored for every column at once by the package's own rule (turkmorfbench/olcum.py, ``Yerel.olasilik``).

The rule, per candidate: the prompt alone and prompt + candidate are tokenized apart; the candidate's tokens
start where the two id lists stop agreeing (so a token that straddles the boundary, ": " + "kal" -> " kal",
counts for the candidate); their log-probabilities are summed and divided by the candidate's length in
characters; the highest scoring candidate, gold first on a tie, is the choice.

Batched, every candidate of an item continues one prefilled prefix: the ids all its candidates share, less the
last one, whose logits predict the first scored token. Where a candidate's first token merges with the prompt's
last token, the shared ids end before that token and the candidates recompute it from there, which is what
keeps the scores those of the package's one-by-one forward. Each item's prefix is prefilled once per column
and its cache repeated for the candidates; every column is a row of the same forward (a bank slice or a Mix).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from transformers import DynamicCache

from errors import Refusal
from scoring.perplexity import Cancelled
from serving.batched import Mix, Recipe, Rows, batched_model, selected_rows
from serving.requests import RequestError, merge_specs

NAME, CHOICE = "TurkMorfBench", "turkmorfbench"  # as Scores offers it next to the held-out sets, and its value
PROMPT = "Kelime: %s\nÇekimli biçim: "  # the package's ISTEM % (stem, "")
CORE_ITEMS = 1836  # the core set shipped in the package (turkmorfbench.veri.CEKIRDEK_N)
LOGIT_BUDGET = 2**27  # floats of logits one forward may hold (512 MB); sets how many items go in one forward


def package():
    """The turkmorfbench package, or a Refusal saying how to install it."""
    try:
        import turkmorfbench
        from turkmorfbench import rapor, veri  # noqa: F401  (submodules the scorer reads)
    except ImportError:
        raise Refusal("err_bench_missing") from None
    return turkmorfbench


def load_items(n: int, cap: int = CORE_ITEMS) -> list[dict]:
    """The n items ``turkmorfbench olc --en-fazla n`` measures: the core set through the package's own sampling
    (its default seed); refused when n is outside 1..cap."""
    tmb = package()
    items = tmb.veri.yukle("cekirdek")
    limit = min(cap, len(items))
    if not isinstance(n, int) or not 1 <= n <= limit:
        raise Refusal("err_bench_items", n=n, limit=limit)
    return tmb.veri.suz(list(items), en_fazla=n)  # suz shuffles the list it is given: a copy


@dataclass(frozen=True)
class Encoded:
    """One item's token ids: the prefix every candidate shares (prefilled once per column), and per candidate
    the ids after it, the index in prompt + candidate ids of its first scored token, and its length in
    characters."""
    key: str
    names: tuple[str, ...]  # "altin" (gold) first, then the distractors' error types
    prefix: tuple[int, ...]
    tails: tuple[tuple[int, ...], ...]
    starts: tuple[int, ...]
    chars: tuple[int, ...]

    def shared_scored(self, k: int) -> range:
        """Positions in the prefix whose logits score candidate k's tokens (they are the same for all)."""
        return range(self.starts[k] - 1, len(self.prefix))

    def tail_scored(self, k: int) -> range:
        """Positions in candidate k's tail whose logits score its remaining tokens."""
        cut = len(self.prefix)
        return range(max(self.starts[k], cut + 1) - 1 - cut, len(self.tails[k]) - 1)


def encode(tokenizer, item: dict) -> Encoded:
    prompt = PROMPT % item["govde"]
    candidates = [("altin", item["altin"])] + list(item["celdirici"].items())
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    ids = [tokenizer(prompt + text, add_special_tokens=True)["input_ids"] for _, text in candidates]
    starts = []
    for full in ids:
        agree = _common_prefix(prompt_ids, full)
        # The package's slice tek[max(0, agree - 1):], or the last token when that is empty.
        starts.append(max(1, agree) if max(1, agree) < len(full) else len(full) - 1)
    # Every id the candidates share is computed once, the stem's tokens included (their logits are the same for
    # every candidate); the last shared id goes with the candidates, so each tail has a token to start from.
    cut = _common_prefix(*ids) - 1
    if cut < 1:
        raise ValueError(f"TurkMorfBench item {item['kimlik']}: its candidates share {cut + 1} token(s), too few "
                         "to prefill; this tokenizer rewrites the start of the prompt")
    return Encoded(item["kimlik"], tuple(n for n, _ in candidates), tuple(ids[0][:cut]),
                   tuple(tuple(full[cut:]) for full in ids), tuple(starts), tuple(len(text) for _, text in candidates))


def _common_prefix(*lists: Sequence[int]) -> int:
    n = 0
    while all(n < len(x) for x in lists) and all(x[n] == lists[0][n] for x in lists):
        n += 1
    return n


@dataclass
class Choice:
    correct: bool
    chosen: str | None  # the distractor's error type when a distractor won
    scores: tuple[float, ...]  # per candidate, gold first: summed log-probability per character


def choose(encoded: Encoded, scores: Sequence[float]) -> Choice:
    best = max(range(len(scores)), key=lambda k: scores[k])  # the first of equal scores, as max() in the package
    return Choice(best == 0, None if best == 0 else encoded.names[best], tuple(scores))


def score_items(bank, recipes: Sequence[Recipe], tokenizer, items: Sequence[dict],
                cancel: threading.Event | None = None, progress: Callable[[int, int], None] | None = None,
                items_per_forward: int | None = None) -> list[dict[str, Choice]]:
    """Per recipe (column), {item key: Choice} for the items scored; stopped (``cancel``), the items scored so
    far. Every column is a row of the same forwards through the bank's batched model."""
    model = batched_model(bank)
    if not any(isinstance(r, Mix) for r in recipes):
        # Many rows read each slice here. The grouped product of a mixed selection multiplies each slice once
        # for all its rows; as plain slices every row would be a product of its own.
        names = list(bank.tensors)
        recipes = [Mix({n: ((r, 1.0),) for n in names}) for r in recipes]
    encoded = [encode(tokenizer, item) for item in items]
    if items_per_forward is None:
        # The most logits one item keeps in one column: a position per candidate per scored tail token (a row's
        # count padded to the widest), and the prefix's.
        most = max((len(e.tails) * max(len(e.tail_scored(k)) for k in range(len(e.tails))) + len(e.prefix)
                    - min(e.starts) + 1 for e in encoded), default=1)
        items_per_forward = max(1, min(32, LOGIT_BUDGET // (len(recipes) * most * model.config.vocab_size)))
    results: list[dict[str, Choice]] = [{} for _ in recipes]
    for start in range(0, len(encoded), items_per_forward):
        if cancel is not None and cancel.is_set():
            break
        chunk = encoded[start:start + items_per_forward]
        for column, per_item in enumerate(_score_chunk(model, bank.device, recipes, chunk)):
            for e, scores in zip(chunk, per_item):
                results[column][e.key] = choose(e, scores)
        if progress is not None:
            progress(start + len(chunk), len(encoded))
    return results


@torch.inference_mode()
def _score_chunk(model, device, recipes: Sequence[Recipe], chunk: list[Encoded]) -> list[list[list[float]]]:
    """Per column, per item, per candidate: the package's score."""
    cache, prefix_mask, shared = _prefill(model, device, recipes, chunk)
    sums = [[[sum(shared[c * len(chunk) + i][p] for p in e.shared_scored(k)) for k in range(len(e.tails))]
             for i, e in enumerate(chunk)] for c in range(len(recipes))]
    # Column-major rows, so the rows of one column read their slice as one run; a candidate whose tokens all
    # lie in the shared prefix (its ids a prefix of another's) needs no row.
    rows = [(c, i, k) for c in range(len(recipes)) for i, e in enumerate(chunk) for k in range(len(e.tails))
            if e.tail_scored(k)]
    if rows:
        for (c, i, k), summed in zip(rows, _continue(model, device, recipes, chunk, rows, cache, prefix_mask)):
            sums[c][i][k] += summed
    return [[[total / max(1, e.chars[k]) for k, total in enumerate(per_item)] for e, per_item in zip(chunk, column)]
            for column in sums]


def _prefill(model, device, recipes: Sequence[Recipe], chunk: list[Encoded]) -> tuple[DynamicCache, torch.Tensor,
                                                                                        list[dict[int, float]]]:
    """The cache of every item's prefix in every column (row c * items + i), left-padded, and its mask; per row,
    the log-probability of each shared token that some candidate scores, by the position that predicts it."""
    length = max(len(e.prefix) for e in chunk)
    ids = torch.zeros(len(chunk), length, dtype=torch.long)
    mask = torch.zeros(len(chunk), length, dtype=torch.long)
    for i, e in enumerate(chunk):
        ids[i, length - len(e.prefix):] = torch.tensor(e.prefix)
        mask[i, length - len(e.prefix):] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    wanted = [range(min(e.starts) - 1, len(e.prefix)) for e in chunk]
    cache = DynamicCache(config=model.config)
    inputs = dict(input_ids=ids.repeat(len(recipes), 1).to(device), attention_mask=mask.repeat(len(recipes), 1)
                  .to(device), position_ids=positions.repeat(len(recipes), 1).to(device), past_key_values=cache,
                  use_cache=True)
    shared: list[dict[int, float]] = [{} for _ in range(len(recipes) * len(chunk))]
    with selected_rows(Rows([r for r in recipes for _ in chunk], device)):
        if not any(wanted):  # the decoder alone: no logits are wanted from the prefix
            model.base_model(**inputs)
            return cache, inputs["attention_mask"], shared
        kept, targets = _kept(wanted, [length - len(e.prefix) for e in chunk],
                              [e.prefix + e.tails[0][:1] for e in chunk])
        logits = model(**inputs, logits_to_keep=kept.repeat(len(recipes), 1).to(device)).logits
    log_probs = _log_probs(logits, targets.repeat(len(recipes), 1).to(device))
    for row in range(len(shared)):
        shared[row] = dict(zip(wanted[row % len(chunk)], log_probs[row].tolist()))
    return cache, inputs["attention_mask"], shared


def _continue(model, device, recipes: Sequence[Recipe], chunk: list[Encoded], rows: list[tuple[int, int, int]],
              cache: DynamicCache, prefix_mask: torch.Tensor) -> list[float]:
    """Per row (column, item, candidate): the summed log-probability of the candidate's tokens after the shared
    prefix, its tail continuing its item's cached prefix in its column."""
    width = max(len(chunk[i].tails[k]) for _, i, k in rows)
    tails = torch.zeros(len(rows), width, dtype=torch.long)
    tail_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for r, (_, i, k) in enumerate(rows):
        tails[r, :len(chunk[i].tails[k])] = torch.tensor(chunk[i].tails[k])
        tail_mask[r, :len(chunk[i].tails[k])] = 1
    positions = torch.tensor([len(chunk[i].prefix) for _, i, _ in rows])[:, None] + torch.arange(width)
    wanted = [chunk[i].tail_scored(k) for _, i, k in rows]
    kept, targets = _kept(wanted, [0] * len(rows), [chunk[i].tails[k] for _, i, k in rows])
    source = torch.tensor([c * len(chunk) + i for c, i, _ in rows], device=device)
    cache.batch_select_indices(source)  # each candidate continues its item's prefix, in its column
    mask = torch.cat([prefix_mask.index_select(0, source), tail_mask.to(device)], dim=1)
    with selected_rows(Rows([recipes[c] for c, _, _ in rows], device)):
        logits = model(input_ids=tails.to(device), attention_mask=mask, position_ids=positions.to(device),
                       past_key_values=cache, use_cache=True, logits_to_keep=kept.to(device)).logits
    log_probs = _log_probs(logits, targets.to(device))
    return [float(log_probs[r, :len(w)].sum()) for r, w in enumerate(wanted)]


def _kept(wanted: list[range], offsets: list[int], ids: list[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions whose logits a forward keeps, the same count per row (a row's last one repeated, or
    position 0 for a row that wants none: the head runs on these only, and over a large vocabulary it is most of
    the cost), and the ids they predict."""
    keep = max(len(w) for w in wanted)
    kept = torch.zeros(len(wanted), keep, dtype=torch.long)
    targets = torch.zeros(len(wanted), keep, dtype=torch.long)
    for r, (w, offset, row_ids) in enumerate(zip(wanted, offsets, ids)):
        at = list(w)[:keep] or [0]
        at = at + at[-1:] * (keep - len(at))
        kept[r] = torch.tensor(at) + offset
        targets[r] = torch.tensor([row_ids[p + 1] if p + 1 < len(row_ids) else 0 for p in at])
    return kept, targets


def _log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per kept position, in float32, on the CPU as float64."""
    logits = logits.float()
    return (logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)).double().cpu()


def report(items: Sequence[dict], choices: dict[str, Choice]) -> dict:
    """The package's own breakdown (rapor.kesitler) of the items scored: {"kesit": {slice: (right, total, %)},
    "hata_turu": {error type: times a distractor of that type won}}."""
    scored = [m for m in items if m["kimlik"] in choices]
    return package().rapor.kesitler(scored, {k: (c.correct, c.chosen) for k, c in choices.items()})


@dataclass
class BenchRow:
    variant: str
    right: int
    scored: int  # items scored (fewer than asked when stopped)
    report: dict  # report(): the package's breakdown

    @property
    def accuracy(self) -> float:
        return self.right / self.scored if self.scored else float("nan")


def bench_variants(comparison, items: Sequence[dict], variants: list[str], controls,
                   cancel: threading.Event | None = None,
                   progress: Callable[[float, tuple[str, dict]], None] | None = None,
                   materialise: bool = False) -> list[BenchRow]:
    """TurkMorfBench accuracy and breakdown of every column, all columns rows of the same forwards (merge-free
    ones as coefficient rows, or with ``materialise`` every merge in a pool slice); stopped (``cancel``), over
    the items scored so far."""
    specs = merge_specs(controls)
    merged = {v: specs[v] for v in variants if v in specs}
    missing = [v for v in variants if v not in merged and v not in ("base", "model1", "model2")]
    if missing:
        raise RequestError("err_cannot_score", columns=", ".join(missing))
    bank = comparison.model_set.bank

    def step(done: int, total: int) -> None:
        if progress is not None:
            progress(done / total, ("progress_bench", {"i": done, "n": total}))

    with comparison.holding(merged, materialise=materialise) as held:
        recipes = [held.recipes[v] if v in held.recipes else bank.index(v) for v in variants]
        choices = score_items(bank, recipes, comparison.model_set.tokenizer, items, cancel, step)
    return [BenchRow(v, sum(c.correct for c in found.values()), len(found), report(items, found))
            for v, found in zip(variants, choices)]


def accuracy_measure(comparison, items: Sequence[dict], cancel: threading.Event | None = None):
    """A sweep's ``measure(held, column)`` (scoring/variants.py: sweep_parameter): the column's TurkMorfBench
    accuracy in percent over all the items; raises Cancelled when stopped before the last item."""
    bank, tokenizer = comparison.model_set.bank, comparison.model_set.tokenizer

    def measure(held, column: str) -> float:
        recipe = held.recipes[column] if column in held.recipes else bank.index(column)
        found = score_items(bank, [recipe], tokenizer, items, cancel)[0]
        if len(found) < len(items):
            raise Cancelled()
        return 100 * sum(c.correct for c in found.values()) / len(items)

    return measure
