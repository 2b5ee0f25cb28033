"""Decoding for a set of variants that answer one prompt.

One loop serves both paths, so their answers agree: the batched forward (one row per variant, serving/batched.py)
and the fallback that runs each variant's own Hugging Face module in a thread. Each row stops on its own (EOS,
stop string, length), every row ends within one step of the stop event, and each row samples with its own
generator seeded from the settings, so a variant's answer does not depend on which others run beside it. The
rows, their sampling and stopping rules are serving/decoding.py's, which the server's DecodingLoop shares.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from queue import Queue

import torch
from transformers import DynamicCache, PreTrainedModel

from models.bank import WeightBank
from serving.batched import Mix, Recipe, Rows, UnsupportedModel, batched_model, selected_rows
from serving.decoding import GenerationResult, GenerationSettings, Job, Row, Streamer, advance, greedy_settings

__all__ = ["GenerationResult", "GenerationSettings", "QueueStreamer", "Streamer", "generate", "greedy_settings"]

log = logging.getLogger(__name__)


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
    (serving.batched), which needs the batched forward. ``same`` keeps which bank slices were found bitwise equal
    (serving.batched.Rows) across calls, as the server's decoding loop keeps it: only for a caller whose slices
    do not change between the calls it passes it to. Without it each call compares the slices again at its
    first step (about 0.4 s for the default pair's five columns on 2 cores).
    """
    started = time.perf_counter()
    recipes = {v: recipes[v] if recipes and v in recipes else bank.index(v) for v in variants} if variants else {}
    _check(bank, variants, prompt_ids, settings, tokenizer)
    mixes = sorted(v for v, r in recipes.items() if isinstance(r, Mix))
    # Bank order: consecutive slices are read as one view; merge-free rows after them.
    order = sorted(variants, key=lambda v: len(bank.variants) if v in mixes else recipes[v])
    job = Job({v: recipes[v] for v in order}, prompt_ids, settings, streamers, stop_event or threading.Event(),
              tokenizer, started=started)
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
        _decode(_batched_step(model, [recipes[v] for v in order], bank.device, bank.frozen, same), order, job,
                bank.device)
    else:
        _threads(bank, {v: bank.variants[recipes[v]] for v in order}, job)
    return {v: job.results[v] for v in variants}


# step(input_ids [rows, t], active) -> logits [rows, vocab] of the last position, float32; `active` lists the rows
# still generating, by their position in the first call, so a batched step can drop finished rows from its cache.
Step = Callable[[torch.Tensor, list[int]], torch.Tensor]


def _decode(step: Step, variants: list[str], job: Job, device: torch.device) -> None:
    """Decode ``variants`` (columns of ``job``) to their ends; their results go into job.results."""
    rows = [Row.seeded(v, job, device) for v in variants]
    active = list(range(len(rows)))
    seen = torch.tensor([job.prompt_ids] * len(rows), device=device)  # for the repetition penalty
    inputs = seen
    while active:
        if job.stop_event.is_set():
            for r in active:
                rows[r].finish("stopped")
            break
        logits = step(inputs, active)
        tokens, ended = advance([rows[r] for r in active], logits, seen)
        seen = torch.cat([seen, tokens[:, None]], dim=1)
        keep = [position for position, done in enumerate(ended) if not done]
        if len(keep) < len(active):
            active = [active[p] for p in keep]
            seen, tokens = seen[keep], tokens[keep]
        inputs = tokens[:, None]


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


def _threads(bank: WeightBank, variants: Mapping[str, str], job: Job) -> None:
    """Each column (key) on its bank variant's own module (value), in its own thread."""
    failures: list[BaseException] = []

    def work(column: str) -> None:
        try:
            _decode(_module_step(bank.module(variants[column])), [column], job, bank.device)
        except BaseException as err:  # re-raised in the caller's thread below
            failures.append(err)

    threads = [threading.Thread(target=work, args=(v,), name=f"harman-generate-{v}") for v in variants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


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
