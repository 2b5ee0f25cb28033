"""What every decoding path shares: a request's settings and rows, and the rules that choose and stop tokens.

generate() (serving/generation.py: scores, sweeps, benches, the fallback without the batched forward) and the
server's DecodingLoop (serving/decoding_loop.py: the page, question sets) both describe a request as a Job, keep
one Row per column, and take each step through ``advance``: ``choose`` picks every row's next token, processed
as transformers' logits processors do, and ``Row.take`` does the per-token bookkeeping (stream it, stop on EOS,
a stop string or the length). So both paths sample and stop by the same rules.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from serving.batched import Recipe


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
    seconds: float  # from the start of decoding (Job.started) to this variant's last token
    time_to_first_token: float | None  # None when stopped before the first token
    finish_reason: str  # "eos" | "stop_string" | "length" | "stopped"


class Streamer(Protocol):
    def put(self, token_ids: list[int]) -> None: ...

    def end(self, result: GenerationResult) -> None: ...


@dataclass
class Job:
    """One request's rows: every column answers the same prompt with the same settings."""
    columns: Mapping[str, Recipe]  # column -> bank slice or Mix
    prompt_ids: list[int]
    settings: GenerationSettings
    streamers: Mapping[str, Streamer]
    stop_event: threading.Event = field(default_factory=threading.Event)
    tokenizer: object = None
    on_error: Callable[[BaseException], None] = lambda err: None
    results: dict[str, GenerationResult] = field(default_factory=dict)  # column -> result, as each row finishes
    done: threading.Event = field(default_factory=threading.Event)  # set by the DecodingLoop
    error: BaseException | None = None
    started: float = 0.0  # perf_counter when decoding began (generate's call, the loop's admission)


@dataclass
class Row:
    """One column of a Job as it decodes."""
    variant: str
    job: Job
    generator: torch.Generator  # the row's own, so a row samples the same tokens alone or in a batch
    token_ids: list[int] = field(default_factory=list)
    first_token_at: float | None = None

    @classmethod
    def seeded(cls, variant: str, job: Job, device: torch.device) -> Row:
        return cls(variant, job, torch.Generator(device=device).manual_seed(job.settings.seed))

    def take(self, token: int, now: float) -> bool:
        """Append a chosen token (``now``: seconds since the job started), stream it; True when the row ends."""
        job = self.job
        self.token_ids.append(token)
        self.first_token_at = now if self.first_token_at is None else self.first_token_at
        if self.variant in job.streamers:
            job.streamers[self.variant].put([token])
        reason = stop_reason(self.token_ids, job.settings, job.tokenizer)
        if reason is not None:
            self.finish(reason)
        return reason is not None

    def finish(self, reason: str) -> GenerationResult:
        """End the row: its result goes to its streamer and into the job's results."""
        job, text = self.job, None
        if job.tokenizer is not None:
            ids = self.token_ids[:-1] if reason == "eos" else self.token_ids
            text = job.tokenizer.decode(ids, skip_special_tokens=True)
            if reason == "stop_string":
                text = text[:stop_at(text, job.settings)]
        result = GenerationResult(self.variant, self.token_ids, text, len(self.token_ids),
                                  time.perf_counter() - job.started, self.first_token_at, reason)
        if self.variant in job.streamers:
            job.streamers[self.variant].end(result)
        job.results[self.variant] = result
        return result


def advance(rows: Sequence[Row], logits: torch.Tensor, seen: torch.Tensor) -> tuple[torch.Tensor, list[bool]]:
    """One decoding step for rows of one job: choose every row's next token from its logits (``seen``: the tokens
    of prompt and answer so far, for the repetition penalty) and take it. The tokens, and which rows ended."""
    job = rows[0].job
    tokens = choose(logits, seen, job.settings, [row.generator for row in rows])
    chosen = tokens.tolist()  # waits for the device
    now = time.perf_counter() - job.started
    return tokens, [row.take(token, now) for row, token in zip(rows, chosen)]


def choose(logits: torch.Tensor, seen: torch.Tensor, settings: GenerationSettings,
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


def stop_reason(token_ids: list[int], settings: GenerationSettings, tokenizer) -> str | None:
    """Why a row with these tokens ends now ("eos", "stop_string", "length"), or None while it goes on."""
    if token_ids[-1] in settings.eos_token_ids:
        return "eos"
    if settings.stop_strings and stop_at(tokenizer.decode(token_ids, skip_special_tokens=True), settings) is not None:
        return "stop_string"
    if len(token_ids) >= settings.max_new_tokens:
        return "length"
    return None


def stop_at(text: str, settings: GenerationSettings) -> int | None:
    """Where the first stop string begins in ``text``, or None."""
    found = [i for i in (text.find(s) for s in settings.stop_strings) if i >= 0]
    return min(found) if found else None
