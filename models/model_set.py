"""A model set: the base, Model 1 and Model 2 loaded once, checked, and held with the merged variants in one
weight bank (see models/bank.py and shared/DESIGN.md)."""

from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from models import compat, memory, sources
from models.bank import WeightBank
from models.presets import Preset, PresetError
from prompts import formats

log = logging.getLogger(__name__)

PARENTS = ("base", "model1", "model2")
# Bank slices for materialised merges (serving/pool.py): the page's TIES column and a sparsifying extra column for
# two visitors at once. Soup and SLERP columns need none (merge-free), and an unused slice costs no memory.
POOL_SIZE = 4


def pool_variants(size: int) -> tuple[str, ...]:
    return tuple(f"pool{i}" for i in range(size))


@dataclass
class ModelSet:
    preset: Preset
    tokenizer: object
    bank: WeightBank
    device: str
    dtype: torch.dtype
    architecture: str
    num_layers: int
    max_context: int
    parameters: int
    load_seconds: float
    notes: list[str] = field(default_factory=list)
    plan: memory.Plan | None = None  # the memory plan the pool was sized by (models/memory.py)

    @property
    def sources(self) -> dict[str, str]:
        return {"base": self.preset.base, "model1": self.preset.model1, "model2": self.preset.model2}

    def summary(self) -> str:
        p = self.preset
        lines = [
            f"model set  {p.name}  ({p.source_file})",
            f"  base     {p.base}",
            f"  model1   {p.model1}",
            f"  model2   {p.model2}",
            f"architecture  {self.architecture}, {self.num_layers} layers, {self.parameters / 1e6:.1f}M parameters",
            f"dtype/device  {str(self.dtype).removeprefix('torch.')} on {self.device}",
            f"weight bank   base + 2 parents {3 * self.bank.slice_nbytes / 2**30:.2f} GiB, "
            f"+ {len(self.bank.variants) - 3} pool slices for materialised merges (TIES, DARE, ...) up to "
            f"{(len(self.bank.variants) - 3) * self.bank.slice_nbytes / 2**30:.2f} GiB, written when first used; "
            f"soup, SLERP, task arithmetic, model stock, NuSLERP: no copy",
            *self._packed_line(),
            f"tokenizer     {len(self.tokenizer)} tokens, context {self.max_context}, prompt format {p.prompt_format}",
            f"loaded in     {self.load_seconds:.1f} s",
        ]
        lines += [f"note          {n}" for n in self.notes]
        return "\n".join(lines + ([self.plan.summary()] if self.plan else []))

    def _packed_line(self) -> list[str]:
        """The oneDNN-packed copies a CPU decoding in float32 may add (memory.PACKED, read by serving/batched.py)."""
        if torch.device(self.device).type != "cpu" or self.dtype != torch.float32:
            return []
        sizes = [t[0].numel() * t.element_size() for t in self.bank.tensors.values()]
        parts, counted = [], 0.0  # a tensor gets one copy, under the first rule that covers it
        for rows, least in sorted(memory.PACKED, key=lambda rule: -rule[1]):
            covered = sum(n for n in sizes if n >= least)
            parts.append(f"{(covered - counted) / 2**30:.2f} GiB {'more ' if counted else ''}of tensors of "
                         f"{least / 2**20:.0f} MiB or more read by {rows}+ rows")
            counted = covered
        return [f"packed (CPU)  per parent slice read by many rows at once, made when first needed: "
                + ", ".join(parts)]


def load(preset: Preset, pool: int = POOL_SIZE, available: dict[str, int] | None = None) -> ModelSet:
    """Load, check and bank a model set; raises SourceError or CompatibilityError with what to fix, and
    memory.MemoryPlanError when the bank and one pool slice do not fit. ``available``: each device's free bytes
    (default: measured now, before anything loads)."""
    started = time.time()
    device = sources.resolve_device(preset.device)
    resident = memory.resident_bytes()
    available = dict(available) if available is not None else _available_now(device, preset.device_map)
    options = sources.LoadOptions(
        device=device, dtype=sources.resolve_dtype(preset.dtype, device), allow_pickle=preset.allow_pickle,
        trust_remote_code=preset.trust_remote_code, device_map=preset.device_map,
    )
    roles = {"base": preset.base, "model1": preset.model1, "model2": preset.model2}
    if preset.base.startswith(sources.LORA):
        raise sources.SourceError(f"base {preset.base!r}: the base must be a full checkpoint, not an adapter")

    # The base's tokenizer loads in a thread while the weights load and the adapters fold: Gemma's 262k-token
    # tokenizer.json takes seconds of Python parsing, the weights mostly torch work that lets it run.
    with ThreadPoolExecutor(1, thread_name_prefix="harman-tokenizer") as background:
        base_tokenizer = background.submit(sources.load_tokenizer, preset.base, options)
        template = sources.load_model(preset.base, options)
        configs = {"base": template.config}
        weights = {"base": {n: p.detach() for n, p in template.named_parameters()}}
        tokenizers = {}
        for role in ("model1", "model2"):
            if roles[role].startswith(sources.LORA):
                model = sources.fold_adapter(template, roles[role])
            else:
                model = sources.load_model(roles[role], options)
                tokenizers[role] = sources.load_tokenizer(roles[role], options)
            configs[role] = model.config
            compat.check_architecture(configs, roles)  # fail before loading the next checkpoint
            weights[role] = {n: p.detach() for n, p in model.named_parameters()}
            del model
        tokenizers = {"base": base_tokenizer.result(), **tokenizers}
    for role in ("model1", "model2"):
        tokenizers.setdefault(role, tokenizers["base"])  # an adapter keeps its base's tokenizer
    tokenizers = {r: tokenizers[r] for r in PARENTS}
    plan = compat.plan_vocabulary(tokenizers, roles)
    vocab_names = compat.vocab_parameter_names(template)
    compat.check_tensors({r: {n: t.shape for n, t in w.items()} for r, w in weights.items()}, vocab_names, roles)
    notes = list(plan.notes)
    for name in vocab_names:
        per_role = {r: weights[r][name] for r in PARENTS}
        compat.fill_vocab_rows(per_role, name, plan.size)
        for r in PARENTS:
            weights[r][name] = per_role[r]
    if template.get_input_embeddings().weight.shape[0] != plan.size:
        template.resize_token_embeddings(plan.size)
        notes.append(f"base embeddings grown to the union vocabulary of {plan.size} tokens")
    for message in notes:
        log.info(message)

    tokenizer = tokenizers[plan.tokenizer_from]
    try:
        fmt = formats.resolve(preset.prompt_format, tokenizer)
    except formats.PromptError as err:
        raise PresetError(f"{preset.source_file}: {err}") from None
    if fmt != preset.prompt_format:
        notes.append(f"prompt format {preset.prompt_format} resolved to {fmt} for this tokenizer")
        preset = dataclasses.replace(preset, prompt_format=fmt)

    sized = plan_memory(template, options.dtype, pool, available, resident)
    bank = WeightBank.build(template, {r: weights.pop(r) for r in PARENTS}, pool_variants(sized.pool), fill=False)
    if not sized.packed:
        bank.frozen = 0  # serving/batched.py packs only frozen slices: none, as the plan has no room for them
    config = template.config
    return ModelSet(
        preset=preset,
        tokenizer=tokenizer,
        bank=bank,
        device=device,
        dtype=options.dtype,
        architecture=compat._arch(config),
        num_layers=config.num_hidden_layers,
        max_context=memory.context_length(config),
        parameters=sum(t[0].numel() for t in bank.tensors.values()),
        load_seconds=time.time() - started,
        notes=notes,
        plan=sized,
    )


def _available_now(device: str, device_map: str | None) -> dict[str, int]:
    """Each device's free memory before loading: the CPU, and the GPUs a device map may spread over."""
    found = {"cpu": memory.available_bytes("cpu")}
    if device.startswith("cuda"):
        ids = range(torch.cuda.device_count()) if device_map else [torch.device(device).index or 0]
        found.update({f"cuda:{i}": memory.available_bytes(f"cuda:{i}") for i in ids})
    return found


def plan_memory(template, dtype: torch.dtype, pool: int, available: dict[str, int], resident: int = 0
                ) -> memory.Plan:
    """The memory plan for banking this template's weights (per device they sit on), logged in a line."""
    sizes: dict[str, int] = {}
    packable: dict[str, int] = {}
    least = min(size for _, size in memory.PACKED)
    for p in dict(template.named_parameters()).values():  # a tied weight once, as the bank holds it
        where, n = str(p.device), p.numel() * p.element_size()
        sizes[where] = sizes.get(where, 0) + n
        if p.device.type == "cpu" and dtype == torch.float32 and p.dim() == 2 and n >= least:
            packable[where] = packable.get(where, 0) + n
    total = sum(sizes.values())
    cache = memory.cache_bytes(template.config, torch.tensor([], dtype=dtype).element_size())
    runtime = {d: memory.RUNTIME_BYTES * (d == "cpu") + cache * n // total for d, n in sizes.items()}
    missing = [d for d in sizes if d not in available]
    if missing:
        raise memory.MemoryPlanError(f"no free-memory figure for {', '.join(missing)}, where the weights sit")
    plan = memory.plan(memory.device_plans(sizes, packable, runtime, available), pool, resident)
    packed = "planned" if plan.packed else "off"
    log.info("memory plan: a pool of %d slices (%d asked), packed copies %s; %s", plan.pool, pool,
             packed if packable else "none (only a float32 bank on a CPU has them)",
             "; ".join(f"{d.device} {plan.total(d) / memory.GIB:.2f} of {d.available / memory.GIB:.2f} GiB"
                       for d in plan.devices))
    for note in plan.notes:
        log.warning("memory plan: %s", note)
    return plan
