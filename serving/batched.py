"""One forward pass over several variants of the weight bank: row r of the batch runs on the weights of the r-th
selected variant.

The loaded Hugging Face model keeps its own code for everything without parameters (attention, positions, KV
cache, masks) and runs it on a batch of rows. Only the submodules that hold parameters are swapped for banked
versions, which read each row's slice of the bank in place: a linear layer multiplies every row by its own slice
(one batched matmul per run of consecutive slices; see _matmul).
Which slice each row reads is set with ``selected_rows()``, in a context variable, so one batched model serves
concurrent requests with different selections.

A row may also be a ``Mix``: a merge-free variant (soup, SLERP, task arithmetic, ...) that is, tensor by tensor,
a weighted sum of bank slices. Every banked layer is linear in its parameters, so such a row's output is the
same weighted sum of the slices' outputs: each slice that some row needs is read once for all those rows, and
each row sums its products with its own coefficients (see _mixed_matmul). Slices that are bitwise equal (a LoRA
pair leaves the embeddings as the base had them) count as one.
"""

from __future__ import annotations

import contextvars
import copy
import logging
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm, Gemma3TextScaledWordEmbedding
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.pytorch_utils import Conv1D

from models.bank import WeightBank
from models.memory import PACKED

log = logging.getLogger(__name__)


class UnsupportedModel(Exception):
    """The model holds parameters in a module type that has no banked version; generate per variant instead."""


@dataclass(frozen=True, eq=False)
class Mix:
    """A merge-free variant: for every bank tensor (by parameter name), the slices it sums and their coefficients."""
    table: Mapping[str, tuple[tuple[int, float], ...]]

    @classmethod
    def of(cls, table: Mapping[str, Sequence[float]], slices: Sequence[int]) -> Mix:
        """From per-tensor coefficients over ``slices`` (merging.coefficients: base, Model 1, Model 2)."""
        return cls({name: tuple((s, float(c)) for s, c in zip(slices, cs) if c != 0) for name, cs in table.items()})


Recipe = int | Mix  # a bank slice, or a weighted sum of slices


class Rows:
    """What each row of the batch reads (a bank slice, or a Mix of slices), and the views of the bank that this
    selection reads.

    Made once per membership of the batch (again when rows join or leave) and used for every step in between,
    so the views are cut once, not at every layer of every step.
    """

    def __init__(self, recipes: Sequence[Recipe], device: torch.device | str, same: dict | None = None,
                 versions: Sequence[int] | None = None, uniform: bool = False, frozen: int = 0):
        self.recipes = tuple(recipes)
        self.frozen = frozen  # slices below this never change (the parents): they may be packed (_many_rows)
        # Every row reads the same recipe, so an input of any number of rows may come (a head run on a
        # flattened selection of positions, as scoring does).
        self.uniform = uniform
        self.mixed = any(isinstance(r, Mix) for r in self.recipes)
        # Plain rows read one slice each; a mixed selection's rows have no single slice.
        self.slices = tuple(-1 if isinstance(r, Mix) else r for r in self.recipes)
        self.device = device
        # Which slices of a bank tensor are bitwise equal, (tensor id, slice, version, slice, version) -> bool.
        # A slice's version changes when it is rewritten (serving/pool.py), so what was found stays true for as
        # long as it is kept: the selections of one batch (rows join and leave) share it.
        self.same = {} if same is None else same
        self.versions = versions
        self.index = torch.tensor([max(s, 0) for s in self.slices], device=device)  # for gathers
        # (first row, end row, first slice) of each stretch of rows whose slices are consecutive in the bank:
        # such a stretch reads its weights as one view of the bank tensor.
        runs, first = [], 0
        for r in range(1, len(self.slices) + 1):
            if r == len(self.slices) or self.slices[r] != self.slices[r - 1] + 1:
                runs.append((first, r, self.slices[first]))
                first = r
        self.runs = tuple(runs)
        self._views: dict[tuple, object] = {}

    def __len__(self) -> int:
        return len(self.slices)

    def view(self, key: tuple, make: Callable[[], object]):
        """``make()``, cut on first use and kept for this selection; key starts with the bank tensor's id."""
        found = self._views.get(key)
        if found is None:
            found = self._views[key] = make()
        return found

    def equal(self, bank: torch.Tensor, a: int, b: int) -> bool:
        """Whether slices a and b of a bank tensor are bitwise equal (found once per version of each)."""
        return _equal_slices(bank, a, b, self.same, self.versions)

    def terms(self, name: str, bank: torch.Tensor) -> list[tuple[tuple[int, float], ...]]:
        """Per row, the (slice, coefficient) pairs it sums for this tensor; equal slices merged into the first."""
        def make():
            found: list[int] = []  # distinct slices of this tensor, the lowest of each set of equal ones

            def canonical(s: int) -> int:
                for first in found:
                    if self.equal(bank, first, s):
                        return first
                found.append(s)
                return s

            table = [((recipe, 1.0),) if not isinstance(recipe, Mix) else recipe.table[name]
                     for recipe in self.recipes]
            # Lowest first, whatever the rows' order: a batch whose first rows left (Model 1 ended early) still
            # reads, and packs (_many_rows), the slice it read before, not a second copy of the same weights.
            for s in sorted({s for pairs in table for s, _ in pairs}):
                canonical(s)
            per_row = []
            for pairs in table:
                summed: dict[int, float] = {}
                for s, c in pairs:
                    s = canonical(s)
                    summed[s] = summed.get(s, 0.0) + c
                # A weighted sum of one slice with weights adding to 1 is that slice itself, exactly.
                per_row.append(tuple((s, 1.0 if abs(c - 1.0) < 1e-12 else c) for s, c in summed.items()))
            return per_row
        return self.view((id(bank), "terms"), make)

    def groups(self, name: str, bank: torch.Tensor) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """Per distinct slice: the rows that read it and their coefficients, as tensors on the device."""
        def make():
            members: dict[int, list[tuple[int, float]]] = {}
            for row, pairs in enumerate(self.terms(name, bank)):
                for s, c in pairs:
                    members.setdefault(s, []).append((row, c))
            return [(s, torch.tensor([r for r, _ in rc], device=self.device),
                     torch.tensor([c for _, c in rc], dtype=torch.float32, device=self.device))
                    for s, rc in members.items()]
        return self.view((id(bank), "groups"), make)

    def mixing(self, name: str, bank: torch.Tensor) -> torch.Tensor | None:
        """The [rows, products] matrix that sums the groups' products (stacked in group order) into each row's
        output; None when there is one group that every row reads with coefficient 1, in order."""
        def make():
            groups = self.groups(name, bank)
            if len(groups) == 1 and groups[0][1].tolist() == list(range(len(self))) and bool(
                    (groups[0][2] == 1).all()):
                return None
            matrix = torch.zeros(len(self), sum(len(m) for _, m, _ in groups), dtype=torch.float32,
                                 device=self.device)
            column = 0
            for _, members, coefficients in groups:
                matrix[members, torch.arange(column, column + len(members), device=self.device)] = coefficients
                column += len(members)
            return matrix
        return self.view((id(bank), "mixing"), make)


_ROWS: contextvars.ContextVar[Rows] = contextvars.ContextVar("harman_rows")


@contextmanager
def selected_rows(rows: Rows) -> Iterator[Rows]:
    """Run the batched model inside this block with row r reading bank slice ``rows.slices[r]``."""
    token = _ROWS.set(rows)
    try:
        yield rows
    finally:
        _ROWS.reset(token)


def _rows(batch: int, shared: bool = False) -> Rows:
    """The current selection, checked against an input of ``batch`` rows (or one row shared by all, if allowed)."""
    rows = _ROWS.get(None)
    if rows is None:
        raise RuntimeError("the batched model was called outside selected_rows(); "
                           "generate through serving.generation.generate")
    if rows.uniform and batch != len(rows):
        return rows.view(("resized", batch), lambda: Rows(rows.recipes[:1] * batch, rows.device, rows.same,
                                                          rows.versions, uniform=True, frozen=rows.frozen))
    if batch != len(rows) and not (shared and batch == 1):
        raise RuntimeError(f"batched model: input has {batch} rows but {len(rows)} variants are selected")
    return rows


def _per_row(bank: torch.Tensor, rows: Rows, ndim: int, name: str = "") -> torch.Tensor:
    """A vector parameter (bias, norm weight) of every row, shaped to broadcast over an activation of ndim dims;
    a Mix row's is its weighted sum, in float32 and then in the bank's dtype, as a merge would store it."""
    def make():
        if rows.mixed:
            vectors = torch.stack([sum(c * bank[s].float() for s, c in pairs).to(bank.dtype)
                                   for pairs in rows.terms(name, bank)])
        elif len(rows.runs) == 1:
            vectors = bank[rows.slices[0]:rows.slices[0] + len(rows)]
        else:
            vectors = bank.index_select(0, rows.index)  # one small vector per row: a copy costs nothing here
        return vectors.view(len(rows), *[1] * (ndim - 2), vectors.shape[-1])
    return rows.view((id(bank), "vector", ndim), make)


# Whether a decoding step (one token per row) multiplies nn.Linear's weight [out, in] by the tokens as columns,
# W @ x^T, reading the weight in the order it is stored, rather than x @ W^T through a transposed view (a Conv1D
# weight [in, out] is read as stored by x @ W either way). Which is faster depends on the CPU and its BLAS: on one
# 2-core machine W @ x^T read 18-30 GB/s where x @ W^T read 12-20; on another, x @ W^T was twice as fast. So it
# is measured on first use per device type and dtype (None below), unless set here (tests force each path). With
# several tokens per row (the prompt) the products are compute-bound and x @ W^T is as fast; on a GPU one kernel
# per run of rows is the fast way either way.
STORED_ORDER_DECODE: dict[str, bool | None] = {"cpu": None}
_measured_orders: dict[tuple[str, torch.dtype], bool] = {}


def _stored_order(x: torch.Tensor) -> bool:
    choice = STORED_ORDER_DECODE.get(x.device.type, False)
    if choice is not None:
        return choice
    key = (x.device.type, x.dtype)
    if key not in _measured_orders:
        _measured_orders[key] = _stored_order_is_faster(x.device, x.dtype)
    return _measured_orders[key]


def _stored_order_is_faster(device: torch.device, dtype: torch.dtype) -> bool:
    """Time both orders on weights larger than the caches (64 MB in float32), once: a few tens of ms."""
    import time

    weights = torch.randn(4, 2048, 2048, device=device).to(dtype)
    x = torch.randn(4, 3, 2048, device=device).to(dtype)
    candidates = {True: lambda: (torch.bmm(weights, x[:, :1].mT), torch.mm(weights[0], x[0].T)),
                  False: lambda: (torch.bmm(x[:, :1], weights.mT), torch.mm(x[0], weights[0].T))}
    best = {}
    for choice, run in candidates.items():
        run()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        best[choice] = min(times)
    return best[True] < best[False]


def _matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, rows: Rows,
            transposed: bool, name: str = "") -> torch.Tensor:
    """x [k, n, in] times each row's weight: bank [V, out, in] when transposed (nn.Linear), else [V, in, out].

    Every run of rows reads its slices as one view of the bank; selected slices are never gathered into a new
    tensor, which would copy every selected weight at every step and double the memory traffic that bounds
    decoding.
    """
    if rows.mixed:
        return _mixed_matmul(x, weight, bias, rows, transposed, name)
    stored = transposed and x.shape[1] == 1 and _stored_order(x)
    if transposed and x.shape[1] == 1:
        shared = rows.view((id(weight), "shared"),
                           lambda: _identical_slices(weight, rows.slices, rows.same, rows.versions))
        if shared:
            return _shared_product(x, weight, bias, shared, stored, rows.frozen)
    if stored:
        products = []
        for first, end, start in rows.runs:
            w = rows.view((id(weight), "stored", start, end - first), lambda: weight[start:start + end - first])
            column = x[first:end].mT
            product = torch.bmm(w, column) if bias is None else torch.baddbmm(bias[first:end].mT, w, column)
            products.append(product.view(end - first, 1, -1))  # [n, out, 1] and [n, 1, out] share one layout
        return products[0] if len(products) == 1 else torch.cat(products)
    out = x.new_empty(x.shape[0], x.shape[1], weight.shape[-2] if transposed else weight.shape[-1])
    for first, end, start in rows.runs:
        # Keyed by the run's length too: two runs may start at one slice (two visitors' rows of one variant).
        w = rows.view((id(weight), "run", start, end - first),
                      lambda: weight[start:start + end - first].mT if transposed else weight[start:start + end - first])
        if bias is None:
            torch.bmm(x[first:end], w, out=out[first:end])
        else:
            torch.baddbmm(bias[first:end], x[first:end], w, out=out[first:end])
    return out


def _identical_slices(weight: torch.Tensor, slices: Sequence[int], same: dict | None = None,
                      versions: Sequence[int] | None = None) -> list[tuple[int, list[int]]]:
    """Rows grouped by bitwise-equal weight slices, as (slice, rows); empty when every row's slice differs.

    A LoRA pair leaves the embeddings (the tied head: a fifth of the default model) as the base had them, and
    every merge of equal tensors writes them back unchanged, so all five columns often read one and the same
    head. Rows that share a slice read it once, in one matrix product. A row alone with its slice then takes a
    matrix-vector product, which reads at about half the speed of the batched one (13 against 23-28 GB/s here),
    so grouping pays only when at most half as many slices as rows are distinct; at the defaults Soup and SLERP
    share every layer (both are the 50/50 interpolation) and the five rows are better off batched. The slices
    cannot change while rows read them (a request holds its pool slices), and what was found is kept per
    version of each slice (``versions``: a rewritten pool slice is found anew). Comparing slices that differ
    stops at the first differing element, so this costs little when nothing is shared.
    """
    same = {} if same is None else same
    groups: list[tuple[int, list[int]]] = []
    for row, s in enumerate(slices):
        for i, (first, members) in enumerate(groups):
            if _equal_slices(weight, first, s, same, versions):
                members.append(row)
                groups[i] = (min(first, s), members)  # the lowest, whichever row came first (Rows.terms)
                break
        else:
            groups.append((s, [row]))
    return groups if 2 * len(groups) <= len(slices) else []


def _equal_slices(bank: torch.Tensor, a: int, b: int, same: dict, versions: Sequence[int] | None) -> bool:
    """Whether slices a and b of a bank tensor are bitwise equal; found once per version of each slice and kept
    in ``same`` (a rewritten pool slice has a new version, so it is compared anew)."""
    if a == b:
        return True
    a, b = min(a, b), max(a, b)
    key = (id(bank), a, 0 if versions is None else versions[a], b, 0 if versions is None else versions[b])
    if key not in same:
        same[key] = torch.equal(bank[a], bank[b])
    return same[key]


def _shared_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    groups: list[tuple[int, list[int]]], stored: bool, frozen: int = 0) -> torch.Tensor:
    """x [k, 1, in] times nn.Linear weights [out, in], each weight read once for the rows that share it."""
    out = x.new_empty(x.shape[0], 1, weight.shape[-2])
    for s, members in groups:
        out[members, 0] = _many_rows(x[members, 0], weight, s, stored, frozen)  # one read of the weight for k rows
    return out if bias is None else out.add_(bias)


# A slice read by this many rows at once, of at least this many bytes, that never changes, is multiplied through
# a copy packed for oneDNN on CPUs: MKL's product of several rows with a weight is bound by arithmetic, not memory.
# A slice that meets any rule gets one packed copy, made on first use; only the parents' slices, which nothing
# writes, are packed.
# - Gemma's 262k-token head (671 MB in float32) read at 12.8 GB/s for 5 rows and 6.4 for 10 where one row read it
#   at 28 (the memory's speed); the packed copy read it at 26.6 and 21.0.
# - A layer's weights (Gemma 270M: 0.3-5 MB each, 0.35 GiB a parent) from 6 rows: several visitors at once, whose
#   Soup and SLERP rows read both parents. On one VM plain products read them at 13.6, 11.2 and 5.9 GB/s for 6, 9
#   and 18 rows, packed ones at 18.4, 16.4 and 12.8 (six users 15.3 -> 14.5 s); on another, 8 rows read 11.6
#   against 24.6 GB/s, and three users' 15 rows decoded 85 -> 115 tokens/s, six users' 30 rows 118 -> 138, the
#   same tokens (docs/benchmarks.md). One visitor's 3 rows gain little (45 -> 46) and pay no copy.
_packed_lock = threading.Lock()


def _many_rows(x: torch.Tensor, weight: torch.Tensor, s: int, stored: bool, frozen: int) -> torch.Tensor:
    """x [k, in] times nn.Linear slice s of the bank [out, in], read once for all k rows: [k, out]."""
    w = weight[s]
    if s < frozen and x.device.type == "cpu" and x.dtype == torch.float32 and any(
            len(x) >= rows and w.numel() * w.element_size() >= size for rows, size in PACKED):
        packed = _packed_slice(weight, s)
        if packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    return torch.mm(w, x.T).T if stored else torch.mm(x, w.T)


def _packed_slice(weight: torch.Tensor, s: int) -> torch.Tensor | None:
    """The packed copy of a bank slice, made on first use and kept with the bank tensor (dies with it)."""
    with _packed_lock:
        packed = weight.__dict__.setdefault("harman_packed", {})
        if s not in packed:
            try:
                packed[s] = torch.ops.mkldnn._reorder_linear_weight(weight[s], 8)
            except (AttributeError, RuntimeError) as err:  # a build without oneDNN: the plain product
                log.info("no packed product on this CPU (%s); multiplying as stored", err)
                packed[s] = None
        return packed[s]


def _mixed_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, rows: Rows,
                  transposed: bool, name: str) -> torch.Tensor:
    """x [k, n, in] times each row's weighted sum of slices, as the weighted sum of the slices' products.

    Each distinct slice is read once, in one product for every row that needs it; one small matrix product then
    sums the stacked products into each row's output with its coefficients, in float32 (a row of one slice gets
    its product unchanged). The bias, a vector, is mixed per row.
    """
    decode = transposed and x.shape[1] == 1
    stored = decode and _stored_order(x)
    products = []
    for s, members, _ in rows.groups(name, weight):
        xs = x.index_select(0, members) if len(members) < len(rows) else x
        if decode:
            products.append(_many_rows(xs[:, 0], weight, s, stored, rows.frozen)[:, None])  # [m, 1, out]
        else:
            products.append(torch.matmul(xs, weight[s].mT if transposed else weight[s]))
    mixing = rows.mixing(name, weight)
    if mixing is None:
        out = products[0]
    else:
        stacked = products[0] if len(products) == 1 else torch.cat(products)
        flat = stacked.reshape(stacked.shape[0], -1)
        out = (mixing @ flat.float()).to(x.dtype).view(len(rows), *stacked.shape[1:])
    return out if bias is None else out + bias


class BankedLinear(nn.Module):
    """nn.Linear (transposed=True, weight [out, in]) or transformers' Conv1D (weight [in, out]) over the bank."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, transposed: bool):
        super().__init__()
        self.weight_bank, self.bias_bank, self.transposed = weight, bias, transposed
        self.names: dict[str, str] = {}  # parameter names of the banks, set by _build (a Mix is keyed by them)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _rows(x.shape[0])
        flat = x.reshape(len(rows), -1, x.shape[-1])
        bias = None if self.bias_bank is None else _per_row(self.bias_bank, rows, 3, self.names.get("bias", ""))
        out = _matmul(flat, self.weight_bank, bias, rows, self.transposed, self.names.get("weight", ""))
        return out.view(*x.shape[:-1], out.shape[-1])


class BankedEmbedding(nn.Module):
    """nn.Embedding over the bank; with ``scale`` (a 0-d tensor), Gemma 3's scaled embedding, which multiplies
    the looked-up vectors by sqrt(hidden size) in the weight's dtype."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor | None = None):
        super().__init__()
        self.weight_bank, self.scale = weight, scale
        self.names: dict[str, str] = {}

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # Position ids may come as one row [1, T] shared by all variants; the row index broadcasts over them.
        rows = _rows(ids.shape[0], shared=True)
        if rows.mixed:
            vectors = self._mixed(ids.expand(len(rows), *ids.shape[1:]), rows)
        else:
            vectors = self.weight_bank[rows.index.view(-1, *[1] * (ids.dim() - 1)), ids]
        return vectors if self.scale is None else vectors * self.scale.to(vectors.dtype)

    def _mixed(self, ids: torch.Tensor, rows: Rows) -> torch.Tensor:
        bank, name = self.weight_bank, self.names.get("weight", "")
        looked_up = [bank[s][ids.index_select(0, members)] for s, members, _ in rows.groups(name, bank)]
        mixing = rows.mixing(name, bank)
        if mixing is None:
            return looked_up[0]
        stacked = torch.cat(looked_up)
        return (mixing @ stacked.reshape(stacked.shape[0], -1).float()).to(bank.dtype).view(
            len(rows), *stacked.shape[1:])


class BankedLayerNorm(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, normalized_shape, eps: float):
        super().__init__()
        self.weight_bank, self.bias_bank, self.normalized_shape, self.eps = weight, bias, normalized_shape, eps
        self.names: dict[str, str] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused layer_norm per row, as nn.LayerNorm computes it: normalising first and scaling after would
        # round twice more, and in bfloat16 that alone changed greedy answers.
        rows = _rows(x.shape[0])
        weight = _per_row(self.weight_bank, rows, 2, self.names.get("weight", ""))
        bias = None if self.bias_bank is None else _per_row(self.bias_bank, rows, 2, self.names.get("bias", ""))
        return torch.stack([F.layer_norm(x[r], self.normalized_shape, weight[r], None if bias is None else bias[r],
                                         self.eps) for r in range(len(rows))])


class BankedRMSNorm(nn.Module):
    """LlamaRMSNorm's forward, step for step, with each row's weight; with ``gemma``, Gemma3RMSNorm's, which
    scales by (1 + weight) and rounds to the input's dtype only after scaling."""

    def __init__(self, weight: torch.Tensor, eps: float, gemma: bool = False):
        super().__init__()
        self.weight_bank, self.eps, self.gemma = weight, eps, gemma
        self.names: dict[str, str] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _rows(x.shape[0])
        weight = _per_row(self.weight_bank, rows, x.dim(), self.names.get("weight", ""))
        if self.gemma:
            hidden = x.float()
            hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.eps)
            return (hidden * (1.0 + weight.float())).type_as(x)
        input_dtype = x.dtype
        hidden = x.to(torch.float32)
        variance = hidden.pow(2).mean(-1, keepdim=True)
        hidden = hidden * torch.rsqrt(variance + self.eps)
        return weight * hidden.to(input_dtype)


def _embedding(module: nn.Embedding, bank: dict[str, torch.Tensor]) -> nn.Module:
    if module.max_norm is not None:  # its forward renormalises the weight in place
        raise UnsupportedModel("nn.Embedding with max_norm")
    return BankedEmbedding(bank["weight"], getattr(module, "embed_scale", None))


def _layer_norm(module: nn.LayerNorm, bank: dict[str, torch.Tensor]) -> nn.Module:
    return BankedLayerNorm(bank["weight"], bank.get("bias"), module.normalized_shape, module.eps)


# Exact module types only: a subclass may compute something else with the same parameters.
BANKED: dict[type, Callable[[nn.Module, dict[str, torch.Tensor]], nn.Module]] = {
    nn.Linear: lambda m, bank: BankedLinear(bank["weight"], bank.get("bias"), transposed=True),
    Conv1D: lambda m, bank: BankedLinear(bank["weight"], bank.get("bias"), transposed=False),
    nn.Embedding: _embedding,
    Gemma3TextScaledWordEmbedding: _embedding,
    nn.LayerNorm: _layer_norm,
    LlamaRMSNorm: lambda m, bank: BankedRMSNorm(bank["weight"], m.variance_epsilon),
    Gemma3RMSNorm: lambda m, bank: BankedRMSNorm(bank["weight"], m.eps, gemma=True),
}

_models: weakref.WeakKeyDictionary[WeightBank, PreTrainedModel | str] = weakref.WeakKeyDictionary()
_models_lock = threading.Lock()


def batched_model(bank: WeightBank) -> PreTrainedModel:
    """The bank's model with banked layers, built once per bank; raises UnsupportedModel saying which module."""
    with _models_lock:
        if bank not in _models:
            try:
                _models[bank] = _build(bank)
            except UnsupportedModel as err:
                _models[bank] = str(err)
        found = _models[bank]
    if isinstance(found, str):
        raise UnsupportedModel(found)
    return found


def _build(bank: WeightBank) -> PreTrainedModel:
    devices = sorted({str(t.device) for t in bank.tensors.values()})
    if len(devices) > 1:
        # Rows select their slices with one index tensor and one batch runs layer after layer on one device.
        raise UnsupportedModel(f"the model is spread over {', '.join(devices)} (device_map); batched decoding "
                               "needs every weight on one device")
    template = bank.template
    names = {id(p): n for n, p in template.named_parameters()}
    # Share, never copy, the template's parameters and buffers while copying its structure; the parameterised
    # submodules are then replaced, so the batched model holds no parameter of its own.
    memo = {id(p): p for p in template.parameters()}
    memo.update({id(b): b for b in template.buffers()})
    model = copy.deepcopy(template, memo).eval()
    for path, module in list(model.named_modules()):
        own = dict(module.named_parameters(recurse=False))
        if not own:
            continue
        make = BANKED.get(type(module))
        if make is None or not path:
            raise UnsupportedModel(f"{path or 'the model itself'} ({type(module).__name__}) holds parameters "
                                   f"{sorted(own)} and has no banked version in serving/batched.py")
        try:
            banked = make(module, {attr: bank.tensors[names[id(p)]] for attr, p in own.items()})
        except UnsupportedModel as err:
            raise UnsupportedModel(f"{path}: {err}") from None
        banked.names = {attr: names[id(p)] for attr, p in own.items()}
        model.set_submodule(path, banked)
    return model


class RecipeModel:
    """One recipe (a bank slice or a Mix) as a Hugging Face-like causal LM, for scoring: the batched model with
    every row of each call reading that recipe."""

    training = False

    def __init__(self, bank: WeightBank, recipe: Recipe):
        self._model, self.recipe, self.device = batched_model(bank), recipe, bank.device
        self.config = self._model.config

    def eval(self) -> RecipeModel:
        return self

    def train(self, mode: bool = True) -> RecipeModel:
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, logits_to_keep=0,
                **kwargs):
        with selected_rows(Rows([self.recipe] * input_ids.shape[0], self.device, uniform=True)):
            return self._model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep,
                               **kwargs)

    __call__ = forward
