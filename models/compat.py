"""Can these three checkpoints be merged? Checked before anything is served.

Merging checkpoints that do not line up produces garbage silently, so every difference is an error that names
the first offending tensor, except one known, legitimate case: a fine-tune whose tokenizer adds tokens at the
end of the same vocabulary (turkish-gpt2 instruct models add ``<|stop|>`` as id 50257). That is resolved as
mergekit resolves a union vocabulary: a model that lacks a token gets the row of the only model that has it,
else the base's row, else the mean of the models that have it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch


class CompatibilityError(ValueError):
    pass


@dataclass
class VocabPlan:
    size: int  # rows of the union vocabulary
    tokenizer_from: str  # the role whose tokenizer covers the union
    notes: list[str] = field(default_factory=list)


def check_architecture(configs: Mapping[str, object], sources: Mapping[str, str]) -> None:
    base_arch = _arch(configs["base"])
    for role in [r for r in ("model1", "model2") if r in configs]:
        arch = _arch(configs[role])
        if arch != base_arch:
            raise CompatibilityError(
                f"architecture mismatch: base {sources['base']!r} is {base_arch}, {role} {sources[role]!r} is "
                f"{arch}; merging needs fine-tunes of the same architecture"
            )


def _arch(config) -> str:
    return (getattr(config, "architectures", None) or [type(config).__name__])[0]


def plan_vocabulary(tokenizers: Mapping[str, object], sources: Mapping[str, str]) -> VocabPlan:
    """The union vocabulary, allowed only when every tokenizer is a prefix of the largest one."""
    vocabs = {role: tok.get_vocab() for role, tok in tokenizers.items()}
    largest = max(vocabs, key=lambda role: (len(vocabs[role]), role == "base"))
    union = vocabs[largest]
    notes = []
    for role, vocab in vocabs.items():
        if vocab == union:
            continue
        by_id = {i: t for t, i in vocab.items()}
        union_by_id = {i: t for t, i in union.items()}
        for token_id in sorted(by_id):
            if union_by_id.get(token_id) != by_id[token_id]:
                raise CompatibilityError(
                    f"tokenizer mismatch: token id {token_id} is {by_id[token_id]!r} in {role} {sources[role]!r} "
                    f"but {union_by_id.get(token_id)!r} in {largest} {sources[largest]!r}; the vocabularies must "
                    f"agree (one may only add tokens at the end)"
                )
        extra = [union_by_id[i] for i in sorted(union_by_id) if i not in by_id]
        notes.append(
            f"{role} lacks {len(extra)} token(s) of {largest}'s vocabulary ({', '.join(map(repr, extra[:5]))}); "
            f"their rows are filled as mergekit does (the only model that has the token, else the base, else the mean)"
        )
    return VocabPlan(size=len(union), tokenizer_from=largest, notes=notes)


def vocab_parameter_names(model) -> set[str]:
    """Names of the parameters whose first axis is the vocabulary (input embeddings, untied LM head)."""
    targets = {id(model.get_input_embeddings().weight)}
    head = model.get_output_embeddings()
    if head is not None:
        targets.add(id(head.weight))
    return {name for name, p in model.named_parameters() if id(p) in targets}


def check_tensors(shapes: Mapping[str, Mapping[str, torch.Size]], vocab_names: set[str],
                  sources: Mapping[str, str]) -> None:
    """Same parameter names and shapes; vocabulary rows may differ (resolved by the union plan)."""
    base = shapes["base"]
    for role in ("model1", "model2"):
        other = shapes[role]
        missing = [n for n in base if n not in other]
        if missing:
            raise CompatibilityError(
                f"parameter {missing[0]!r} of base {sources['base']!r} is missing from {role} {sources[role]!r}"
            )
        extra = [n for n in other if n not in base]
        if extra:
            raise CompatibilityError(
                f"parameter {extra[0]!r} of {role} {sources[role]!r} does not exist in base {sources['base']!r}"
            )
        for name, shape in base.items():
            theirs = other[name]
            same = theirs == shape or (name in vocab_names and theirs[1:] == shape[1:])
            if not same:
                raise CompatibilityError(
                    f"shape mismatch at {name!r}: base {sources['base']!r} has {tuple(shape)}, {role} "
                    f"{sources[role]!r} has {tuple(theirs)}"
                )


def fill_vocab_rows(tensors: dict[str, torch.Tensor], name: str, size: int) -> None:
    """Grow one vocabulary parameter of every role to ``size`` rows, mergekit's way (in place in ``tensors``)."""
    have = {role: t.shape[0] for role, t in tensors.items()}
    if all(n == size for n in have.values()):
        return
    grown = {}
    for role, t in tensors.items():
        out = t.new_empty((size, *t.shape[1:]))
        out[: have[role]] = t
        grown[role] = out
    for row in range(min(have.values()), size):
        donors = [role for role, n in have.items() if n > row]
        if len(donors) == 1:
            value = tensors[donors[0]][row]
        elif "base" in donors:
            value = tensors["base"][row]
        else:
            value = torch.stack([tensors[r][row].float() for r in donors]).mean(0).to(grown["base"].dtype)
        for role, n in have.items():
            if n <= row:
                grown[role][row] = value
    tensors.update(grown)
