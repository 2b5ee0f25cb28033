"""References for bfloat16 on any device: a float32 merge, on the CPU, of the same bfloat16 parents.

Where a bfloat16 path rounds once (a materialised merge; a merge-free row summing its parents' products, or
mixing a norm vector), it must give that reference rounded once: bit for bit on all but a few elements, where the
float32 sums of the two sides straddle a rounding boundary. Rounding a coefficient to bfloat16 anywhere moves the
result by up to half a unit in the last place, so that a good share of all elements then differ. Logits and
tokens are another matter: every bfloat16 activation rounds too, by as much as a coefficient error of 0.3% would
move them (measured: the merge-free row's logit error is 0.45-3.5x the bfloat16 materialised merge's, across
seeds, with or without such an error), so they are held to the measured noise of their dtype on their device,
which in bfloat16 catches what is grossly wrong (a slice, a coefficient 20% off, the cache) and nothing finer.
The fine checks are the rounded-once ones.
"""

from __future__ import annotations

import pytest
import torch

from merging import MergeSpec, merge_model
from merging.coefficients import ParentFigures, coefficients
from models.bank import WeightBank
from serving.batched import (
    BankedEmbedding,
    BankedLayerNorm,
    BankedLinear,
    BankedRMSNorm,
    Mix,
    Rows,
    batched_model,
    selected_rows,
)
from tests.tiny_models import MERGED, PARENTS, tiny_bank, tiny_model

# Every check runs on the CPU here and on a CUDA device when one is present.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="needs a CUDA device"))]
# The share of elements that may differ from the reference rounded once: where float32 sums in another order
# straddle a bfloat16 rounding boundary. Measured over 10 seeds of four models and five merges: at most 0.26%
# (embeddings), 0.18% (products), 0.07% (vectors); a coefficient off by 0.3%, or rounded to bfloat16, moves
# 10-65% of them.
MISSED = 0.01


def ulp(t: torch.Tensor) -> torch.Tensor:
    """bfloat16's unit in the last place at each value of t (8 significant bits), in float64."""
    return torch.ldexp(torch.ones_like(t, dtype=torch.float64), torch.frexp(t.double()).exponent - 8)


class Tally:
    """Elements compared with their reference, by kind, for a share of misses over a whole model: a single layer's
    handful of elements would make one miss look like many."""

    def __init__(self):
        self.counts: dict[str, list[int]] = {}

    def add(self, kind: str, missed: torch.Tensor) -> None:
        count = self.counts.setdefault(kind, [0, 0])
        count[0] += int(missed.sum())
        count[1] += missed.numel()

    def assert_few(self, what: str, reference: str = "the float32 reference rounded once") -> None:
        for kind, (missed, total) in self.counts.items():
            assert missed <= MISSED * total, f"{what}: {kind}: {missed} of {total} elements are not {reference}"


def assert_rounded_once(actual: torch.Tensor, exact: torch.Tensor, what: str, tally: Tally, kind: str,
                        terms: torch.Tensor | None = None) -> None:
    """actual (bfloat16, any device) is ``exact`` (float32/64) rounded to bfloat16 once, but for a few elements
    (counted in ``tally``), and within one unit in the last place everywhere; ``terms``, the sum of the
    magnitudes of what was summed into ``exact``, bounds float32's own error where they cancel."""
    actual, exact = actual.detach().cpu(), exact.detach().cpu().double()
    expected = exact.to(torch.bfloat16)
    assert actual.dtype == torch.bfloat16, what
    tally.add(kind, actual != expected)
    slack = ulp(expected) + (0 if terms is None else 2.0 ** -20 * terms.detach().cpu().double())
    worst = ((actual.double() - exact).abs() / slack).max().item()
    assert worst <= 1.0, f"{what}: {worst:.2f} units in the last place from the float32 reference"


def assert_alike(actual: torch.Tensor, expected: torch.Tensor, tally: Tally, kind: str) -> None:
    """Two bfloat16 results of the same computation, on weights that should be equal: equal but for a few."""
    tally.add(kind, actual.detach().cpu() != expected.detach().cpu())


class Family:
    """A tiny model's bank of bfloat16 parents on ``device`` and its float32 reference on the CPU.

    ``reference``: a float32 CPU bank holding the same parents (bfloat16 values, exact in float32) and, in its
    "soup" slice, their merge by ``spec`` in float32. ``bank``: the parents in ``dtype`` on ``device``; its "ties"
    slice holds the reference merge rounded once (what an exact bfloat16 merge stores), its "soup" and "slerp"
    slices start as the base. ``mix``: the merge-free row of ``spec`` over the bank's parents; ``table``: the
    spec's coefficients (base, Model 1, Model 2) per tensor, in float64, from the reference's parents.
    """

    def __init__(self, arch: str, spec: MergeSpec, device: str = "cpu", dtype: torch.dtype = torch.bfloat16,
                 seed: int = 0):
        self.arch, self.spec, self.device, self.seed = arch, spec, torch.device(device), seed
        self.reference, _ = tiny_bank(arch, tiny_model(arch, seed))
        for tensor in self.reference.tensors.values():
            tensor.copy_(tensor.to(torch.bfloat16))  # the parents as a bfloat16 checkpoint holds them
        self.layers = self.reference.template.config.num_hidden_layers
        merge_into(self.reference, "soup", spec, self.layers)
        template = tiny_model(arch).to(device=self.device, dtype=dtype)
        self.bank = WeightBank.build(template, {v: self.reference.slice(v) for v in PARENTS}, MERGED)
        for name, view in self.bank.slice("ties").items():
            view.copy_(self.reference.tensors[name][self.reference.index("soup")])  # rounds once
        parents = [self.reference.slice(v) for v in PARENTS]
        self.table = coefficients(spec, list(self.reference.tensors), self.layers, ParentFigures(*parents)).table
        bank_parents = [self.bank.slice(v) for v in PARENTS]
        found = coefficients(spec, list(self.bank.tensors), self.layers, ParentFigures(*bank_parents))
        self.mix = Mix.of(found.table, [self.bank.index(v) for v in PARENTS])

    def exact(self, name: str) -> torch.Tensor:
        """The float32 merge of one tensor: the reference."""
        return self.reference.tensors[name][self.reference.index("soup")]

    def terms(self, name: str) -> torch.Tensor:
        """The magnitudes summed into that merge, by its coefficients: what bounds float32's own error."""
        return sum(abs(c) * self.reference.tensors[name][k].double().abs() for k, c in enumerate(self.table[name]))


def merge_into(bank: WeightBank, variant: str, spec: MergeSpec, layers: int) -> None:
    base, first, second = (bank.slice(v) for v in PARENTS)
    merge_model(bank.slice(variant), base, [first, second], spec, layers)


def assert_mixed_rows_round_once(family: Family) -> None:
    """Every banked layer of the batched model, fed random inputs: the merge-free row gives what the float32
    reference gives, rounded once (its products summed with exact coefficients, its vectors mixed in float32).
    The products themselves are each parent's own, rounded as the device rounds them: they come from the rows
    that read each parent alone, in the same call."""
    bank, mix, device, tally = family.bank, family.mix, family.device, Tally()
    generator = torch.Generator().manual_seed(family.seed)

    def random(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device=device, dtype=bank.template.dtype)

    exact_row = bank.index("ties")
    for path, module in batched_model(bank).named_modules():
        names = getattr(module, "names", {})
        if isinstance(module, BankedLinear):
            alone = BankedLinear(module.weight_bank, None, module.transposed)  # the products, without the bias
            alone.names = names
            features = module.weight_bank.shape[-1 if module.transposed else -2]
            coefficients = family.table[names["weight"]]
            for tokens in (1, 5):  # a decoding step (W @ x^T on some CPUs) and a prompt
                x = random(1, tokens, features).expand(4, tokens, features)
                with selected_rows(Rows([0, 1, 2, mix], device, frozen=bank.frozen)), torch.no_grad():
                    out = alone(x)
                exact = sum(c * out[k].double() for k, c in enumerate(coefficients))
                terms = sum(abs(c) * out[k].double().abs() for k, c in enumerate(coefficients))
                assert_rounded_once(out[3], exact, f"{path}, {tokens} tokens", tally, "products", terms)
            if module.bias_bank is not None:  # zero input: the output is the row's bias vector itself
                with selected_rows(Rows([mix], device, frozen=bank.frozen)), torch.no_grad():
                    out = module(torch.zeros(1, 1, features, device=device, dtype=bank.template.dtype))
                assert_rounded_once(out[0, 0], family.exact(names["bias"]), f"{path} bias", tally, "vectors",
                                    family.terms(names["bias"]))
        elif isinstance(module, (BankedLayerNorm, BankedRMSNorm)):
            # Against the row of the reference merge rounded once: the same norm, its vectors exactly those.
            x = random(1, 5, module.weight_bank.shape[-1]).expand(2, 5, -1)
            with selected_rows(Rows([exact_row, mix], device, frozen=bank.frozen)), torch.no_grad():
                out = module(x)
            assert_alike(out[1], out[0], tally, "vectors")
        elif isinstance(module, BankedEmbedding):
            ids = torch.randint(0, module.weight_bank.shape[1], (1, 48), generator=generator).to(device)
            with selected_rows(Rows([exact_row, mix], device, frozen=bank.frozen)), torch.no_grad():
                out = module(ids.expand(2, -1))
            assert_alike(out[1], out[0], tally, "embeddings")
    assert set(tally.counts) == {"products", "vectors", "embeddings"}, tally.counts  # every kind was seen
    tally.assert_few(f"{family.arch}, {family.spec.method}")


def assert_banked_rows_compute_as_their_modules(family: Family) -> None:
    """Every banked layer of the batched model, fed random inputs with plain rows (a parent, another parent, the
    reference merge rounded once): each row gives what transformers' own module of its slice gives, rounding
    where it rounds. Bit for bit on the CPU; on a device, another kernel may sum in another order."""
    bank, device, tally = family.bank, family.device, Tally()
    variants = ["model1", "model2", "ties"]
    rows = Rows([bank.index(v) for v in variants], device, frozen=bank.frozen)
    own = {v: dict(bank.module(v).named_modules()) for v in variants}
    generator = torch.Generator().manual_seed(family.seed)
    for path, module in batched_model(bank).named_modules():
        if isinstance(module, BankedEmbedding):
            inputs = [torch.randint(0, module.weight_bank.shape[1], (1, 48), generator=generator).to(device)]
        elif isinstance(module, (BankedLinear, BankedLayerNorm, BankedRMSNorm)):
            transposed = getattr(module, "transposed", True)
            features = module.weight_bank.shape[-1 if transposed else -2]
            inputs = [torch.randn(1, tokens, features, generator=generator).to(device=device, dtype=bank.template.dtype)
                      for tokens in (1, 5)]  # a decoding step and a prompt
        else:
            continue
        for x in inputs:
            with selected_rows(rows), torch.no_grad():
                out = module(x.expand(len(variants), *x.shape[1:]))
                for row, variant in enumerate(variants):
                    tally.add(type(module).__name__, (out[row] != own[variant][path](x)[0]).cpu())
    assert len(tally.counts) >= 3, tally.counts  # products, norms and embeddings were seen
    tally.assert_few(f"{family.arch} on {device}", "transformers' module of the row's slice")


def forward(model, ids: list[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits of every position, float32 on the CPU."""
    with torch.no_grad():
        return model(torch.tensor([ids], device=device)).logits[0].float().cpu()


def float32_noise(logits: torch.Tensor) -> float:
    """A floor for measured noise: float32's own, where the module measured computes as the reference does."""
    return 1e-6 * logits.abs().max().item()


def assert_greedy_within_noise(tokens: list[int], prompt: list[int], reference, noisy, device, what: str,
                               factor: float = 4.0) -> None:
    """Greedy tokens of a bfloat16 path against the float32 reference module, teacher-forced on the same tokens.

    Every step's token must be one the reference could pick within bfloat16's noise: its reference logit at
    most ``factor`` times that noise below the best. The noise is measured, on the same tokens, as the largest
    logit error of ``noisy`` (transformers' own module of the same weights in bfloat16, on the same device).
    Exact token equality would fail at random: these tiny models' greedy margins are often thinner than that
    noise (bfloat16 sequences part from the float32 one after 0-32 steps, depending on the seed).
    """
    assert tokens, what
    sequence = prompt + tokens
    positions = slice(len(prompt) - 1, len(sequence) - 1)
    exact = forward(reference, sequence)[positions]
    noise = max((forward(noisy, sequence, device)[positions] - exact).abs().max().item(), float32_noise(exact))
    chosen = exact.gather(1, torch.tensor(tokens)[:, None])[:, 0]
    below = exact.max(dim=-1).values - chosen
    worst = int(below.argmax())
    assert below[worst] <= factor * noise, (f"{what}: step {worst} chose token {tokens[worst]}, "
                                            f"{below[worst]:.4f} below the float32 best; bfloat16 noise {noise:.4f}")
