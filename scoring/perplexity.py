"""How likely a model finds the reference answers: NLL of the answer given the prompt.

Prompt and answer are tokenized separately and joined, so the boundary between
them is a token boundary and only answer tokens are scored. Whatever separates
the two (a space, a newline) belongs at the end of the prompt, as the app's
prompt format writes it.
"""

import inspect
import math
from collections.abc import Mapping, Sequence

import torch


class Cancelled(Exception):
    """A score, sweep or greedy soup was stopped between two of its steps."""


def answer_nll(
    model, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 8, cancel=None
) -> list[tuple[float, int]]:
    """(sum of negative log-likelihood in nats, number of tokens) of each answer given its prompt; a set
    ``cancel`` event raises Cancelled before the next batch."""
    if len(prompts) != len(answers):
        raise ValueError(f"answer_nll: {len(prompts)} prompts but {len(answers)} answers; pass one answer per prompt")
    if batch_size < 1:
        raise ValueError(f"answer_nll: batch_size={batch_size}; pass a positive batch size")
    rows = [_encode(model, tokenizer, i, p, a) for i, (p, a) in enumerate(zip(prompts, answers))]
    # Batches of rows of similar length waste little on padding; results go back in the rows' order.
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    keeps = _keeps_logits(model)
    was_training = model.training
    model.eval()  # dropout would make the score random
    try:
        results: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
        for start in range(0, len(order), batch_size):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            batch = order[start : start + batch_size]
            for i, result in zip(batch, _batch_nll(model, tokenizer, [rows[i] for i in batch], keeps)):
                results[i] = result
        return results
    finally:
        model.train(was_training)


def perplexity(model, tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 8,
               cancel=None) -> float:
    """exp(total answer NLL / total answer tokens) over all rows."""
    scored = answer_nll(model, tokenizer, prompts, answers, batch_size, cancel)
    total_tokens = sum(count for _, count in scored)
    if total_tokens == 0:
        raise ValueError("perplexity: the answers have no tokens; pass at least one non-empty answer")
    return math.exp(sum(nll for nll, _ in scored) / total_tokens)


def answer_nll_many(
    models: Mapping[str, object], tokenizer, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 8
) -> dict[str, list[tuple[float, int]]]:
    """answer_nll for each named model (variants share the tokenizer)."""
    return {name: answer_nll(model, tokenizer, prompts, answers, batch_size) for name, model in models.items()}


def _encode(model, tokenizer, index: int, prompt: str, answer: str) -> tuple[list[int], int]:
    """Token ids of prompt + answer, and how many of them are the prompt."""
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if not prompt_ids:
        raise ValueError(
            f"answer_nll: prompt {index} has no tokens, so its first answer token has no context; pass a non-empty prompt"
        )
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and len(prompt_ids) + len(answer_ids) > limit:
        raise ValueError(
            f"answer_nll: row {index} is {len(prompt_ids)} prompt + {len(answer_ids)} answer tokens, "
            f"over the model's {limit} positions; shorten the prompt or the answer"
        )
    return prompt_ids + answer_ids, len(prompt_ids)


def _keeps_logits(model) -> bool:
    """Whether the model's forward takes transformers' `logits_to_keep` (GPT-2, Llama and most causal LMs)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


@torch.inference_mode()
def _batch_nll(model, tokenizer, rows: list[tuple[list[int], int]],
               keeps_logits: bool) -> list[tuple[float, int]]:
    width = max(len(ids) for ids, _ in rows)
    # The pad id is never attended to nor scored; any valid id will do.
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    # scored[b, t]: token t of row b is an answer token (so logits at t - 1 predict it).
    scored = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, (ids, prompt_len) in enumerate(rows):
        input_ids[b, : len(ids)] = torch.tensor(ids)
        attention_mask[b, : len(ids)] = 1
        scored[b, prompt_len : len(ids)] = True

    predicted = scored[:, 1:]  # logits at t predict token t + 1
    next_ids = input_ids[:, 1:][predicted].to(model.device)
    inputs = {"input_ids": input_ids.to(model.device), "attention_mask": attention_mask.to(model.device)}
    if keeps_logits:
        # The head runs on the positions that predict answer tokens only: over a large vocabulary, logits of
        # every prompt position would cost a good share of the whole pass. A boolean mask flattens the kept
        # positions row by row, the order of next_ids.
        keep = torch.zeros_like(scored)
        keep[:, :-1] = predicted
        logits = model(**inputs, logits_to_keep=keep.to(model.device)).logits
    else:
        logits = model(**inputs).logits[:, :-1][predicted.to(model.device)]
    # Only the scored positions go to float32: a float32 copy of all [batch, length, vocab]
    # logits would be the largest tensor of the whole pass for a large vocabulary.
    token_nll = torch.nn.functional.cross_entropy(logits.float(), next_ids, reduction="none")
    predicted = predicted.to(logits.device)
    nll = torch.zeros(len(rows), dtype=torch.float64, device=logits.device)
    nll.index_add_(0, predicted.nonzero()[:, 0], token_nll.double())
    return [(float(n), int(c)) for n, c in zip(nll.cpu(), predicted.sum(dim=1).cpu())]
