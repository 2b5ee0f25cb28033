"""The weight bank: every variant of one model, held once.

For each parameter name one tensor ``[V, *shape]`` on the model's device: slice 0 the base, 1 Model 1, 2 Model 2,
then the slices that materialised merges are written into (serving/pool.py). The merge engine writes them in place
through ``slice()``; per-variant Hugging Face modules (``module()``) and the batched forward (serving/batched.py)
read the same memory. Merged slices are left unwritten until their first merge: on a CPU their memory is not
even touched (the allocator maps it lazily), so an unused slice costs nothing.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping, MutableMapping, Sequence

import torch
from torch import nn
from transformers import PreTrainedModel


class WeightBank:
    def __init__(self, template: PreTrainedModel, variants: Sequence[str], tensors: dict[str, torch.Tensor],
                 frozen: int = 0):
        self.template = template  # the base variant's module; its parameters are views of slice 0
        self.variants = list(variants)
        self.tensors = tensors
        self.frozen = frozen  # the first slices (the parents) are never written after build()
        # Each slice's version: bumped when a merge rewrites it (serving/pool.py), so that what the batched
        # forward found about a slice (which slices are bitwise equal) is found anew.
        self.versions = [0] * len(self.variants)
        self._modules: dict[str, PreTrainedModel] = {variants[0]: template}
        self._modules_lock = threading.Lock()  # module() is called from several request threads

    @classmethod
    def build(cls, template: PreTrainedModel, parents: Mapping[str, Mapping[str, torch.Tensor]],
              merged: Sequence[str], fill: bool = True) -> WeightBank:
        """Bank ``parents`` (base first, then Model 1, Model 2) and ``merged`` slices that start as the base, or
        unwritten (``fill=False``: whoever reads them merges into them first).

        State dict keys are the template's parameter names as ``template.named_parameters()`` gives them (a tied
        weight once). Afterwards the template's parameters are views of the base slice, so the bank is the only
        copy of the weights. Tensors are removed from parents that are mutable mappings as soon as they are
        copied, so a caller who hands over its state dicts frees them while the bank fills.
        """
        variants = [*parents, *merged]
        if not parents:
            raise ValueError("WeightBank.build: no parents given; pass {'base': ..., 'model1': ..., 'model2': ...}")
        if len(set(variants)) != len(variants):
            raise ValueError(f"WeightBank.build: variant names must be unique, got {variants}")
        tensors = {}
        for name, owned in _owners(template).items():
            param = template.get_parameter(name)
            if param.device.type == "meta":
                raise ValueError(f"WeightBank.build: template parameter {name} is on the meta device; "
                                 "load the base model's weights before banking it")
            bank = torch.empty((len(variants), *param.shape), dtype=param.dtype, device=param.device)
            for i, (parent, state) in enumerate(parents.items()):
                bank[i].copy_(_parent_tensor(state, parent, name, param.shape))
                if isinstance(state, MutableMapping):
                    del state[name]
            if fill:
                bank[len(parents):] = bank[0]
            view = nn.Parameter(bank[0], requires_grad=False)
            for module, attr in owned:
                setattr(module, attr, view)
            tensors[name] = bank
        template.eval()  # the bank serves answers: no dropout in any variant copied from the template
        return cls(template, variants, tensors, frozen=len(parents))

    def index(self, variant: str) -> int:
        if variant not in self.variants:
            raise KeyError(f"variant {variant!r} is not in the weight bank; it holds {self.variants}")
        return self.variants.index(variant)

    def rewritten(self, variant: str) -> None:
        """A merge has written this variant's slice: its version changes."""
        self.versions[self.index(variant)] += 1

    def slice(self, variant: str) -> dict[str, torch.Tensor]:
        """Writable views of one variant's weights, by parameter name."""
        i = self.index(variant)
        return {name: bank[i] for name, bank in self.tensors.items()}

    def module(self, variant: str) -> PreTrainedModel:
        """A Hugging Face model of one variant whose parameters are views of its bank slice (no copy)."""
        i = self.index(variant)
        with self._modules_lock:
            if variant not in self._modules:
                self._modules[variant] = self._view_module(i)
            return self._modules[variant]

    def _view_module(self, i: int) -> PreTrainedModel:
        # deepcopy copies the template's structure and settings; the memo hands it our views instead of copies of
        # the parameters, and the template's own buffers (rotary frequencies), which no variant changes.
        named = dict(self.template.named_parameters())
        memo = {id(p): nn.Parameter(self.tensors[n][i], requires_grad=False) for n, p in named.items()}
        memo.update({id(b): b for b in self.template.buffers()})
        return copy.deepcopy(self.template, memo)

    @property
    def device(self) -> torch.device:
        return next(iter(self.tensors.values())).device

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    @property
    def slice_nbytes(self) -> int:
        """The bytes of one variant."""
        return sum(t[0].numel() * t.element_size() for t in self.tensors.values())


def _owners(template: nn.Module) -> dict[str, list[tuple[nn.Module, str]]]:
    """Where each parameter lives, by name: a tied parameter has two owners (the embedding and the head).

    Only names are returned, no parameter, so that build() can free each one as soon as its bank is filled.
    """
    names = {id(p): n for n, p in template.named_parameters()}
    owners: dict[str, list[tuple[nn.Module, str]]] = {}
    for module in template.modules():
        for attr, param in module._parameters.items():
            if param is not None:
                owners.setdefault(names[id(param)], []).append((module, attr))
    return owners


def _parent_tensor(state: Mapping[str, torch.Tensor], parent: str, name: str, shape: torch.Size) -> torch.Tensor:
    if name not in state:
        raise KeyError(f"WeightBank.build: parent {parent!r} has no tensor {name!r}; its state dict must use the "
                       "template's parameter names (template.named_parameters())")
    tensor = state[name]
    if tensor.shape != shape:
        raise ValueError(f"WeightBank.build: parent {parent!r} tensor {name!r} has shape {tuple(tensor.shape)}, the "
                         f"template has {tuple(shape)}; check the checkpoints with models/compat.py")
    return tensor
