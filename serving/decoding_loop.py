"""One decoding loop for the whole server: the rows of every visitor's request are rows of one batched forward.

A request (a Job: one prompt, its settings, one row per column) is prefilled on its own as soon as the loop is
between two steps, and its cache then joins the running batch: the shorter of the two is padded on the left,
and the attention mask hides the padding, so every row attends to its own tokens only and keeps its own
positions. A finished, stopped or failed row leaves the batch (transformers' batch_select_indices) without
disturbing the others; padding that no remaining row needs is cut off. Each row samples with its own generator
and stops on its own, so its answer is the one it gets alone (greedy: the same tokens).

What transformers gives and what is written here (docs/architecture.md): the model code, DynamicCache and its
layers, batch_select_indices and the masks built from a padded attention mask are transformers'. Joining two
caches of different lengths, and cutting common padding, are not in DynamicCache; they are _join and _trim below.
transformers' own continuous batching (generate_batch) needs its paged cache and flattened batches of tokens,
which the banked layers (one row per variant) do not take, and one sampler for all requests.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import torch
from transformers import DynamicCache

from models.bank import WeightBank
from serving.batched import Recipe, Rows, batched_model, selected_rows
from serving.decoding import GenerationResult, Job, Row, advance, choose
from serving.threads import parallel

__all__ = ["DecodingLoop", "Job"]

log = logging.getLogger(__name__)


@dataclass
class _Member:
    """A row of the running batch."""
    row: Row
    recipe: Recipe
    seen: torch.Tensor  # prompt and answer so far, for the repetition penalty
    position: int  # the position of the row's next input token
    last: int  # the row's last token, the next input

    @property
    def job(self) -> Job:
        return self.row.job

    def took(self, token: int) -> None:
        """The row took ``token`` (Row.take): it is the next input, and seen from now on."""
        self.seen = torch.cat([self.seen, self.seen.new_tensor([token])])
        self.last = token


class DecodingLoop:
    """Owns the batched forward of one bank; ``submit`` from any thread, the loop runs in its own."""

    def __init__(self, bank: WeightBank):
        self.bank = bank
        self.model = batched_model(bank)  # raises UnsupportedModel: the caller falls back to per-variant threads
        self._pending: list[Job] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._members: list[_Member] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [rows, length]: 1 for a row's own tokens, 0 for padding
        self._rows: Rows | None = None
        self._same: dict = {}
        self.steps = 0  # decoding steps run, for tests and benches
        # Called in the loop's thread after each step with the job of every row it decoded: which requests shared
        # a forward, seen by tests and benches without timing anything.
        self.on_step: Callable[[list[Job]], None] | None = None

    def submit(self, job: Job) -> Job:
        with self._cond:
            self._pending.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="harman-decoding-loop", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return job

    def run(self, job: Job) -> dict[str, GenerationResult]:
        """Submit and wait; raises the job's error."""
        self.submit(job).done.wait()
        if job.error is not None:
            raise job.error
        return job.results

    @property
    def rows(self) -> int:
        return len(self._members)

    # The loop thread

    def _loop(self) -> None:
        parallel()  # the server's one thread on every core while it decodes (serving/threads.py)
        while True:
            with self._cond:
                if not self._pending and not self._members:
                    # Idle: the thread ends, and its OpenMP team with it, so that a merge started meanwhile (a
                    # TIES release whose other columns are cached) has the cores' only team; the next submit
                    # starts a new thread.
                    self._thread = None
                    return
                arriving, self._pending = self._pending, []
            for job in arriving:
                self._admit(job)
            self._drop_finished()
            if self._members:
                try:
                    self._step()
                except BaseException as err:  # never the loop: every row in the batch ends with the error
                    log.exception("decoding step failed")
                    for job in {id(m.job): m.job for m in self._members}.values():
                        self._fail(job, err)
                    self._members, self._cache, self._mask, self._rows = [], None, None, None

    def _admit(self, job: Job) -> None:
        """Prefill a new job's rows on their own, choose their first tokens, and join them to the batch."""
        try:
            job.started = time.perf_counter()
            device = self.bank.device
            columns = list(job.columns)
            if job.stop_event.is_set():
                for column in columns:
                    Row(column, job, torch.Generator(device=device)).finish("stopped")
                job.done.set()
                return
            recipes = [job.columns[c] for c in columns]
            cache = DynamicCache(config=self.model.config)
            ids = torch.tensor([job.prompt_ids] * len(columns), device=device)
            with selected_rows(Rows(recipes, device, same=self._same, versions=self.bank.versions,
                                    frozen=self.bank.frozen)), \
                    torch.inference_mode():
                logits = self.model(input_ids=ids, past_key_values=cache, use_cache=True,
                                    logits_to_keep=1).logits[:, -1].float()
            rows = [Row.seeded(c, job, device) for c in columns]
            tokens = choose(logits, ids, job.settings, [r.generator for r in rows]).tolist()
        except BaseException as err:  # this request's own failure (a bad prompt, memory): only its rows end
            self._fail(job, err)
            return
        mask = torch.ones(len(columns), len(job.prompt_ids), dtype=torch.long, device=device)
        self._cache, self._mask = _join(self._cache, self._mask, cache, mask)
        now = time.perf_counter() - job.started
        for row, recipe, token in zip(rows, recipes, tokens):
            member = _Member(row, recipe, ids[0], len(job.prompt_ids), token)
            self._members.append(member)
            row.take(token, now)
            member.took(token)
        self._rows = None

    def _step(self) -> None:
        members = self._members
        device = self.bank.device
        if self._rows is None:
            self._rows = Rows([m.recipe for m in members], device, same=self._same, versions=self.bank.versions,
                              frozen=self.bank.frozen)
        inputs = torch.tensor([[m.last] for m in members], device=device)
        positions = torch.tensor([[m.position] for m in members], device=device)
        self._mask = torch.cat([self._mask, torch.ones(len(members), 1, dtype=torch.long, device=device)], dim=1)
        with selected_rows(self._rows), torch.inference_mode():
            logits = self.model(input_ids=inputs, attention_mask=self._mask, position_ids=positions,
                                past_key_values=self._cache, use_cache=True, logits_to_keep=1).logits[:, -1].float()
        self.steps += 1
        if self.on_step is not None:
            self.on_step([m.job for m in members])
        # Each job chooses with its own settings; its rows share them and have seen as many tokens.
        by_job: dict[int, list[int]] = {}
        for i, m in enumerate(members):
            by_job.setdefault(id(m.job), []).append(i)
        for indices in by_job.values():
            group = [members[i] for i in indices]
            advance([m.row for m in group], logits[indices], torch.stack([m.seen for m in group]))
            for member in group:
                member.position += 1
                member.took(member.row.token_ids[-1])

    def _drop_finished(self) -> None:
        """Rows that finished or were stopped leave the batch; a job whose rows are all done is done."""
        keep = []
        for i, m in enumerate(self._members):
            if m.row.variant not in m.job.results and m.job.stop_event.is_set():
                m.row.finish("stopped")
            if m.row.variant not in m.job.results:
                keep.append(i)
        if len(keep) == len(self._members):
            return
        done = {id(m.job): m.job for m in self._members if len(m.job.results) == len(m.job.columns)}
        self._members = [self._members[i] for i in keep]
        self._rows = None
        if not keep:
            self._cache, self._mask = None, None
        else:
            index = torch.tensor(keep, device=self.bank.device)
            self._cache.batch_select_indices(index)
            self._mask = self._mask.index_select(0, index)
            self._cache, self._mask = _trim(self._cache, self._mask)
        for job in done.values():  # once its rows have left: a done job is never counted in ``rows``
            job.done.set()

    def _fail(self, job: Job, err: BaseException) -> None:
        job.error = err
        job.on_error(err)
        job.done.set()


def _join(cache: DynamicCache | None, mask: torch.Tensor | None, new: DynamicCache, new_mask: torch.Tensor
          ) -> tuple[DynamicCache, torch.Tensor]:
    """The running batch's cache and mask with a new job's rows appended, the shorter padded on the left."""
    if cache is None:
        return new, new_mask
    length, new_length = mask.shape[1], new_mask.shape[1]
    total = max(length, new_length)
    for layer, added in zip(cache.layers, new.layers):
        stored = total if not getattr(layer, "is_sliding", False) else min(total, layer.sliding_window - 1)
        layer.keys = torch.cat([_left_pad(layer.keys, stored), _left_pad(added.keys, stored)])
        layer.values = torch.cat([_left_pad(layer.values, stored), _left_pad(added.values, stored)])
        if hasattr(layer, "cumulative_length"):
            layer.cumulative_length = total
    return cache, torch.cat([_left_pad(mask, total, dim=1), _left_pad(new_mask, total, dim=1)])


def _trim(cache: DynamicCache, mask: torch.Tensor) -> tuple[DynamicCache, torch.Tensor]:
    """Cut the leading positions that are padding in every row."""
    used = mask.any(dim=0).nonzero()
    cut = int(used[0]) if len(used) else 0
    if cut == 0:
        return cache, mask
    total = mask.shape[1] - cut
    for layer in cache.layers:
        stored = total if not getattr(layer, "is_sliding", False) else min(total, layer.sliding_window - 1)
        layer.keys, layer.values = layer.keys[:, :, -stored:], layer.values[:, :, -stored:]
        if hasattr(layer, "cumulative_length"):
            layer.cumulative_length = total
    return cache, mask[:, cut:]


def _left_pad(tensor: torch.Tensor, length: int, dim: int = 2) -> torch.Tensor:
    """Zeros before ``tensor`` along ``dim`` up to ``length`` (keys and values: [rows, heads, length, dim])."""
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor if missing == 0 else tensor.narrow(dim, -missing, length)
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
