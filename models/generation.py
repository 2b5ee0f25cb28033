"""Decoding for a set of variants that answer one prompt.

One loop serves both paths, so their answers agree: the batched forward (one row per variant, models/batched.py)
and the fallback that runs each variant's own Hugging Face module in a thread. Each row stops on its own (EOS,
stop string, length), every row ends within one step of the stop event, and each row samples with its own
generator seeded from the settings, so a variant's answer does not depend on which others run beside it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from queue import Queue
from typing import Protocol

import torch
from transformers import DynamicCache, PreTrainedModel

from models.bank import WeightBank
from models.batched import Mix, Recipe, Rows, UnsupportedModel, batched_model, selected_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0  # nucleus sampling: keep the most likely tokens whose probabilities add up to top_p
    repetition_penalty: float = 1.0  # 1.0 is off; as in transformers, applied to every token of prompt and answer
    greedy: bool = False  # argmax; temperature and top_p are then ignored
    seed: int = 0
    eos_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()  # the answer ends before the first of these

    def __post_init__(self):
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens={self.max_new_tokens} (must be at least 1)")
        if not self.greedy and not self.temperature > 0:
            problems.append(f"temperature={self.temperature} (must be above 0 when sampling; use greedy=True)")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p={self.top_p} (must be in (0, 1])")
        if not self.repetition_penalty > 0:
            problems.append(f"repetition_penalty={self.repetition_penalty} (must be above 0; 1.0 is off)")
        if any(not s for s in self.stop_strings):
            problems.append(f"stop_strings={self.stop_strings!r} (an empty stop string would end every answer)")
        if problems:
            raise ValueError("GenerationSettings: " + "; ".join(problems))


def greedy_settings(prompt, max_new_tokens: int) -> GenerationSettings:
    """Greedy decoding that ends where a prompts.formats.Prompt says its answers end (scores, lengths, benches)."""
    return GenerationSettings(max_new_tokens=max_new_tokens, greedy=True, eos_token_ids=prompt.eos_token_ids,
                              stop_strings=prompt.stop_strings)


@dataclass
class GenerationResult:
    variant: str
    token_ids: list[int]  # the generated tokens, including an EOS or the token that completed a stop string
    text: str | None  # without EOS, cut before a stop string; None without a tokenizer
    n_tokens: int
    seconds: float  # from the call of generate() to this variant's last token
    time_to_first_token: float | None  # None when stopped before the first token
    finish_reason: str  # "eos" | "stop_string" | "length" | "stopped"


class Streamer(Protocol):
    def put(self, token_ids: list[int]) -> None: ...

    def end(self, result: GenerationResult) -> None: ...


class QueueStreamer:
    """Puts ``(variant, "token", text_so_far, n_tokens)`` and finally ``(variant, "end", result)`` on a queue.

    Each token decodes only the tokens since the text was last whole, with the token before them as context (a
    sentencepiece word's leading space, the bytes of a character that spans tokens), so streaming an answer
    costs time in proportion to its length, not to its square.
    """

    def __init__(self, variant: str, queue: Queue, tokenizer):
        self.variant, self.queue, self.tokenizer = variant, queue, tokenizer
        self.token_ids: list[int] = []
        self.text = ""  # the decoded text of token_ids[:self.whole]
        self.whole = 0

    def put(self, token_ids: list[int]) -> None:
        self.token_ids.extend(token_ids)
        self.queue.put((self.variant, "token", self._text(), len(self.token_ids)))

    def _text(self) -> str:
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        context = self.token_ids[self.whole - 1:self.whole] if self.whole else []
        head, tail = decode(context), decode(context + self.token_ids[self.whole:])
        if not tail.startswith(head):  # a tokenizer whose decoding is not prefix-stable: decode it all
            head, tail, self.text, self.whole = "", decode(self.token_ids), "", 0
        added = tail[len(head):]
        if added.endswith("\ufffd"):  # a character still waiting for its bytes: not whole yet
            return self.text + added.rstrip("\ufffd")
        self.text, self.whole = self.text + added, len(self.token_ids)
        return self.text

    def end(self, result: GenerationResult) -> None:
        self.queue.put((self.variant, "end", result))


def generate(bank: WeightBank, variants: Sequence[str], prompt_ids: list[int], settings: GenerationSettings,
             streamers: Mapping[str, Streamer], stop_event: threading.Event | None = None, batched: bool = True,
             tokenizer=None, recipes: Mapping[str, Recipe] | None = None, same: dict | None = None
             ) -> dict[str, GenerationResult]:
    """Answer ``prompt_ids`` with every variant; batched in one forward per step, or one thread per variant.

    A variant is a bank variant's name, or a column named in ``recipes``: a bank slice, or a merge-free Mix
    (models.batched), which needs the batched forward. ``same`` keeps which bank slices were found bitwise equal
    (models.batched.Rows) across calls, as the server's decoding loop keeps it: only for a caller whose slices
    do not change between the calls it passes it to. Without it each call compares the slices again at its
    first step (about 0.4 s for the default pair's five columns on 2 cores).
    """
    started = time.perf_counter()
    recipes = {v: recipes[v] if recipes and v in recipes else bank.index(v) for v in variants} if variants else {}
    _check(bank, variants, prompt_ids, settings, tokenizer)
    mixes = sorted(v for v, r in recipes.items() if isinstance(r, Mix))
    # Bank order: consecutive slices are read as one view; merge-free rows after them.
    order = sorted(variants, key=lambda v: len(bank.variants) if v in mixes else recipes[v])
    run = _Run(prompt_ids, settings, streamers, stop_event or threading.Event(), tokenizer, bank.device, started)
    if batched:
        try:
            model = batched_model(bank)
        except UnsupportedModel as err:
            if mixes:
                raise UnsupportedModel(f"merge-free columns {mixes} need the batched forward: {err}") from None
            log.warning("batched generation is not available for this model, generating each variant in its "
                        "own thread instead: %s", err)
            batched = False
    elif mixes:
        raise ValueError(f"generate: merge-free columns {mixes} need the batched forward (batched=True)")
    if batched:
        results = _decode(_batched_step(model, [recipes[v] for v in order], bank.device, bank.frozen, same),
                          order, run)
    else:
        results = _threads(bank, {v: bank.variants[recipes[v]] for v in order}, run)
    return {v: results[v] for v in variants}


@dataclass
class _Run:
    """What every row of one generate() call shares."""
    prompt_ids: list[int]
    settings: GenerationSettings
    streamers: Mapping[str, Streamer]
    stop_event: threading.Event
    tokenizer: object
    device: torch.device
    started: float


@dataclass
class _Row:
    variant: str
    generator: torch.Generator
    token_ids: list[int] = field(default_factory=list)
    first_token_at: float | None = None


# step(input_ids [rows, t], active) -> logits [rows, vocab] of the last position, float32; `active` lists the rows
# still generating, by their position in the first call, so a batched step can drop finished rows from its cache.
Step = Callable[[torch.Tensor, list[int]], torch.Tensor]


def _decode(step: Step, variants: list[str], run: _Run) -> dict[str, GenerationResult]:
    settings = run.settings
    rows = [_Row(v, torch.Generator(device=run.device).manual_seed(settings.seed)) for v in variants]
    results: dict[str, GenerationResult] = {}
    active = list(range(len(rows)))
    seen = torch.tensor([run.prompt_ids] * len(rows), device=run.device)  # for the repetition penalty
    inputs = seen
    while active:
        if run.stop_event.is_set():
            for r in active:
                results[rows[r].variant] = _finish(rows[r], "stopped", run)
            break
        logits = step(inputs, active)
        tokens = _choose(logits, seen, settings, [rows[r].generator for r in active])
        seen = torch.cat([seen, tokens[:, None]], dim=1)
        chosen = tokens.tolist()  # waits for the device
        now = time.perf_counter() - run.started
        keep = []
        for position, (r, token) in enumerate(zip(active, chosen)):
            row = rows[r]
            row.token_ids.append(token)
            row.first_token_at = now if row.first_token_at is None else row.first_token_at
            if row.variant in run.streamers:
                run.streamers[row.variant].put([token])
            reason = _stop_reason(row.token_ids, settings, run.tokenizer)
            if reason is None:
                keep.append(position)
            else:
                results[row.variant] = _finish(row, reason, run)
        if len(keep) < len(active):
            active = [active[p] for p in keep]
            seen, tokens = seen[keep], tokens[keep]
        inputs = tokens[:, None]
    return results


def _choose(logits: torch.Tensor, seen: torch.Tensor, settings: GenerationSettings,
            generators: list[torch.Generator]) -> torch.Tensor:
    """The next token of every row, processed as transformers' logits processors do, in their order."""
    if settings.repetition_penalty != 1.0:
        scores = logits.gather(1, seen)
        scores = torch.where(scores < 0, scores * settings.repetition_penalty, scores / settings.repetition_penalty)
        logits = logits.scatter(1, seen, scores)
    if settings.greedy:
        return logits.argmax(dim=-1)
    logits = logits / settings.temperature
    if settings.top_p < 1.0:
        ordered, order = torch.sort(logits, descending=False)
        drop = ordered.softmax(dim=-1).cumsum(dim=-1) <= 1 - settings.top_p
        drop[:, -1] = False  # the most likely token always stays
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    probs = logits.softmax(dim=-1)
    # One draw per row from the row's own generator: a variant samples the same tokens alone or in a batch.
    return torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)])


def _stop_reason(token_ids: list[int], settings: GenerationSettings, tokenizer) -> str | None:
    if token_ids[-1] in settings.eos_token_ids:
        return "eos"
    if settings.stop_strings and _stop_at(tokenizer.decode(token_ids, skip_special_tokens=True), settings) is not None:
        return "stop_string"
    if len(token_ids) >= settings.max_new_tokens:
        return "length"
    return None


def _stop_at(text: str, settings: GenerationSettings) -> int | None:
    found = [i for i in (text.find(s) for s in settings.stop_strings) if i >= 0]
    return min(found) if found else None


def _finish(row: _Row, reason: str, run: _Run) -> GenerationResult:
    text = None
    if run.tokenizer is not None:
        ids = row.token_ids[:-1] if reason == "eos" else row.token_ids
        text = run.tokenizer.decode(ids, skip_special_tokens=True)
        if reason == "stop_string":
            text = text[:_stop_at(text, run.settings)]
    result = GenerationResult(row.variant, row.token_ids, text, len(row.token_ids),
                              time.perf_counter() - run.started, row.first_token_at, reason)
    if row.variant in run.streamers:
        run.streamers[row.variant].end(result)
    return result


def _last_logits(model: PreTrainedModel, input_ids: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
    with torch.inference_mode():
        out = model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1].float()


def _batched_step(model: PreTrainedModel, recipes: list[Recipe], device: torch.device, frozen: int = 0,
                  same: dict | None = None) -> Step:
    cache = DynamicCache(config=model.config)
    current, rows = list(range(len(recipes))), Rows(recipes, device, same=same, frozen=frozen)

    def step(input_ids: torch.Tensor, active: list[int]) -> torch.Tensor:
        nonlocal current, rows
        if active != current:  # finished rows leave the batch: the others stop paying for their weights
            cache.batch_select_indices(torch.tensor([current.index(r) for r in active], device=device))
            current, rows = active, Rows([recipes[r] for r in active], device, same=rows.same, frozen=frozen)
        with selected_rows(rows):
            return _last_logits(model, input_ids, cache)

    return step


def _module_step(module: PreTrainedModel) -> Step:
    cache = DynamicCache(config=module.config)
    return lambda input_ids, active: _last_logits(module, input_ids, cache)


def _threads(bank: WeightBank, variants: Mapping[str, str], run: _Run) -> dict[str, GenerationResult]:
    """Each column (key) on its bank variant's own module (value), in its own thread."""
    results: dict[str, GenerationResult] = {}
    failures: list[BaseException] = []

    def work(column: str) -> None:
        try:
            results.update(_decode(_module_step(bank.module(variants[column])), [column], run))
        except BaseException as err:  # re-raised in the caller's thread below
            failures.append(err)

    threads = [threading.Thread(target=work, args=(v,), name=f"harman-generate-{v}") for v in variants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return results


def _check(bank: WeightBank, variants: Sequence[str], prompt_ids: list[int], settings: GenerationSettings,
           tokenizer) -> None:
    if not variants:
        raise ValueError("generate: no variants given; name at least one of " + ", ".join(bank.variants))
    if len(set(variants)) != len(variants):
        raise ValueError(f"generate: variants {list(variants)} name one variant twice")
    if not prompt_ids:
        raise ValueError("generate: the prompt is empty; it needs at least one token")
    if settings.stop_strings and tokenizer is None:
        raise ValueError(f"generate: stop strings {settings.stop_strings!r} need a tokenizer to be found; "
                         "pass tokenizer=")
    limit = getattr(bank.template.config, "max_position_embeddings", None)
    if limit is not None and len(prompt_ids) + settings.max_new_tokens > limit:
        raise ValueError(f"generate: prompt of {len(prompt_ids)} tokens + max_new_tokens="
                         f"{settings.max_new_tokens} exceeds the model's {limit} positions; shorten the prompt "
                         "or lower max_new_tokens")
