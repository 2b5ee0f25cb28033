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

from models.batched import Recipe, Rows, batched_model, selected_rows
from models.errors import Refusal

PROMPT = "Kelime: %s\nÇekimli biçim: "  # the package's ISTEM % (stem, "")
CORE_ITEMS = 1836  # the core set shipped in the package (turkmorfbench.veri.CEKIRDEK_N)
LOGIT_BUDGET = 2**26  # floats of logits one forward may hold (256 MB); sets how many items go in one forward


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
    """One item's token ids: the prefix every candidate shares (prefilled), and per candidate the ids after it,
    the index in those ids of the first scored token, and the candidate's length in characters."""
    key: str
    names: tuple[str, ...]  # "altin" (gold) first, then the distractors' error types
    prefix: tuple[int, ...]
    tails: tuple[tuple[int, ...], ...]
    first: tuple[int, ...]
    chars: tuple[int, ...]


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
    shared = min(min(starts), _common_prefix(*ids))
    if shared < 2:
        raise ValueError(f"TurkMorfBench item {item['kimlik']}: its candidates share {shared} prompt token(s), "
                         "too few to prefill; this tokenizer rewrites the start of the prompt")
    cut = shared - 1  # the last shared id goes with the candidates: its logits predict their first scored token
    return Encoded(item["kimlik"], tuple(n for n, _ in candidates), tuple(ids[0][:cut]),
                   tuple(tuple(full[cut:]) for full in ids), tuple(s - cut for s in starts),
                   tuple(len(text) for _, text in candidates))


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
    encoded = [encode(tokenizer, item) for item in items]
    if items_per_forward is None:
        most = max((len(e.tails) * max(len(t) for t in e.tails) for e in encoded), default=1)
        items_per_forward = max(1, min(16, LOGIT_BUDGET // (len(recipes) * most * model.config.vocab_size)))
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
    """Per column, per item, per candidate: the package's score. Rows are column-major, so the rows of one
    column read their slice as one run."""
    cache, prefix_mask = _prefill(model, device, recipes, chunk)
    rows = [(c, i, k) for c in range(len(recipes)) for i, e in enumerate(chunk) for k in range(len(e.tails))]
    width = max(len(t) for e in chunk for t in e.tails)
    # Logits are kept at the positions that predict scored tokens only, the same count per row (the row's last
    # wanted position repeated): over a large vocabulary the head is most of the cost.
    wanted = [list(range(chunk[i].first[k] - 1, len(chunk[i].tails[k]) - 1)) for _, i, k in rows]
    keep = max(len(w) for w in wanted)
    tails = torch.zeros(len(rows), width, dtype=torch.long)
    tail_mask = torch.zeros(len(rows), width, dtype=torch.long)
    positions = torch.zeros(len(rows), width, dtype=torch.long)
    kept = torch.zeros(len(rows), keep, dtype=torch.long)
    for r, (_, i, k) in enumerate(rows):
        tail = chunk[i].tails[k]
        tails[r, :len(tail)] = torch.tensor(tail)
        tail_mask[r, :len(tail)] = 1
        positions[r] = len(chunk[i].prefix) + torch.arange(width)
        kept[r] = torch.tensor(wanted[r] + wanted[r][-1:] * (keep - len(wanted[r])))
    source = torch.tensor([c * len(chunk) + i for c, i, _ in rows], device=device)
    cache.batch_select_indices(source)  # each candidate continues its item's prefix, in its column
    mask = torch.cat([prefix_mask.index_select(0, source), tail_mask.to(device)], dim=1)
    with selected_rows(Rows([recipes[c] for c, _, _ in rows], device)):
        logits = model(input_ids=tails.to(device), attention_mask=mask, position_ids=positions.to(device),
                       past_key_values=cache, use_cache=True, logits_to_keep=kept.to(device)).logits
    targets = tails.gather(1, kept + 1).to(device)
    log_probs = (logits.float().gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                 - torch.logsumexp(logits.float(), dim=-1)).double().cpu()
    out = [[[0.0] * len(e.tails) for e in chunk] for _ in recipes]
    for r, (c, i, k) in enumerate(rows):
        out[c][i][k] = float(log_probs[r, :len(wanted[r])].sum()) / max(1, chunk[i].chars[k])
    return out


def _prefill(model, device, recipes: Sequence[Recipe], chunk: list[Encoded]) -> tuple[DynamicCache, torch.Tensor]:
    """The cache of every item's prefix in every column (row c * items + i), left-padded; and its mask."""
    length = max(len(e.prefix) for e in chunk)
    ids = torch.zeros(len(chunk), length, dtype=torch.long)
    mask = torch.zeros(len(chunk), length, dtype=torch.long)
    for i, e in enumerate(chunk):
        ids[i, length - len(e.prefix):] = torch.tensor(e.prefix)
        mask[i, length - len(e.prefix):] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    ids, mask, positions = (t.repeat(len(recipes), 1).to(device) for t in (ids, mask, positions))
    cache = DynamicCache(config=model.config)
    with selected_rows(Rows([r for r in recipes for _ in chunk], device)):
        # The decoder alone: no logits are wanted from the prefix.
        model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True)
    return cache, mask


def report(items: Sequence[dict], choices: dict[str, Choice]) -> dict:
    """The package's own breakdown (rapor.kesitler) of the items scored: {"kesit": {slice: (right, total, %)},
    "hata_turu": {error type: times a distractor of that type won}}."""
    scored = [m for m in items if m["kimlik"] in choices]
    return package().rapor.kesitler(scored, {k: (c.correct, c.chosen) for k, c in choices.items()})
