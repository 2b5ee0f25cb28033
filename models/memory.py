"""The memory plan: what the weights will take on each device, against what the device has, decided at start.

A model set holds, on every device its weights sit on (one, or several under a device map):
- the bank's base and two parents: three model copies, always;
- room to run: the interpreter's later growth, and one request's six columns of key/value cache at the model's
  full context (more visitors at once add theirs on top, which is why it is kept apart from the weights);
- the pool: ``--pool`` slices for materialised merges (TIES, DARE, ...), a model copy each, written when first
  used (serving/pool.py);
- on a CPU in float32, the oneDNN-packed copies of the parents' slices that many rows read at once
  (PACKED below; serving/batched.py reads them), made when several visitors first decode together.
The bank, the room to run and one pool slice must fit, or the start is refused with what to do. Then the packed
copies, which speed every step of several visitors' answers, if they fit; then the pool grows towards
``--pool`` as far as the memory allows, since a further slice only spares a re-merge while visitors hold
different sparsified settings at once. The pool never grows past the plan at run time: a request whose slice
is not held takes the least recently used one, or waits for one.

Plain functions of sizes and figures: tests plan against a device made to look small.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

GIB = 2**30
RUNTIME_BYTES = GIB // 2  # the interpreter's growth after start: Gradio's sessions, tokenizers, scratch
CACHE_ROWS = 6  # one request's columns, each a row of key/value cache
# When the batched forward (serving/batched.py) reads a parent's CPU float32 slice through a oneDNN-packed copy:
# at least this many rows at once and a weight of at least this many bytes (the figures are there).
PACKED = ((4, 64 * 2**20), (6, 2**20))  # (rows at least, bytes at least)


class MemoryPlanError(ValueError):
    """The model set cannot be served in this device's memory: says what it needs, what there is, what to do."""


@dataclass(frozen=True)
class DevicePlan:
    """One device's share of the plan (bytes)."""
    device: str
    available: int  # what the device had free at start
    slice_bytes: int  # one model copy's weights on this device
    runtime: int  # room to run (cache, activations, the interpreter's growth)
    packed_per_slice: int = 0  # oneDNN-packed copy of one parent slice (CPU, float32), 0 where none is made

    @property
    def bank(self) -> int:
        return 3 * self.slice_bytes

    @property
    def packed(self) -> int:
        return 3 * self.packed_per_slice  # base and both parents may each be read by many rows

    def needs(self, pool: int, packed: bool) -> int:
        return self.bank + self.runtime + pool * self.slice_bytes + (self.packed if packed else 0)


@dataclass(frozen=True)
class Plan:
    devices: tuple[DevicePlan, ...]
    pool_asked: int
    pool: int  # slices planned: at most pool_asked
    packed: bool  # whether the packed copies are planned (else none is made)
    notes: tuple[str, ...] = field(default=())
    resident: int = 0  # what this process held before loading (already counted as used, not in the plan)

    def total(self, device: DevicePlan) -> int:
        return device.needs(self.pool, self.packed)

    def summary(self) -> str:
        """The plan, one line a part, in GiB (what --check prints)."""
        lines = []
        for d in self.devices:
            packed = ("none on this device" if not d.packed_per_slice else
                      f"{d.packed / GIB:.2f} GiB" if self.packed else f"off ({d.packed / GIB:.2f} GiB did not fit)")
            lines += [
                f"memory plan   {d.device}: {d.available / GIB:.2f} GiB available",
                f"  bank        base + 2 parents {d.bank / GIB:.2f} GiB ({d.slice_bytes / GIB:.2f} GiB a copy)",
                f"  runtime     {d.runtime / GIB:.2f} GiB (one request's {CACHE_ROWS} columns of cache at full "
                f"context, and the interpreter's growth)",
                f"  pool        {self.pool} of {self.pool_asked} slices asked, "
                f"{self.pool * d.slice_bytes / GIB:.2f} GiB when all are written",
                f"  packed      {packed}",
                f"  total       {self.total(d) / GIB:.2f} GiB of {d.available / GIB:.2f} GiB: "
                f"{'fits' if self.total(d) <= d.available else 'does not fit'}",
            ]
        if self.resident:
            lines.append(f"  resident    {self.resident / GIB:.2f} GiB held by this process before loading, "
                         f"outside the plan")
        return "\n".join(lines + [f"  note        {n}" for n in self.notes])


def plan(devices: list[DevicePlan], pool: int, resident: int = 0) -> Plan:
    """The largest pool up to ``pool`` (and the packed copies, if they fit beside one slice) that fits every
    device; MemoryPlanError when not even one slice fits."""
    if pool < 1:
        raise MemoryPlanError(f"--pool {pool}: the pool needs at least one slice for TIES")
    short = [d for d in devices if d.needs(1, packed=False) > d.available]
    if short:
        d = short[0]
        raise MemoryPlanError(
            f"not enough memory on {d.device}: the bank (base + 2 parents) takes {d.bank / GIB:.2f} GiB, room to "
            f"run {d.runtime / GIB:.2f} GiB and one pool slice for TIES {d.slice_bytes / GIB:.2f} GiB, "
            f"{d.needs(1, False) / GIB:.2f} GiB in all, and {d.available / GIB:.2f} GiB is available. Load the "
            f"models in bfloat16 (--dtype bfloat16, half the memory), free memory on this machine, or use a "
            f"bigger one (or spread the model with --device-map auto on several GPUs)")
    packed = all(d.needs(1, packed=True) <= d.available for d in devices)
    fits = max(n for n in range(1, pool + 1) if all(d.needs(n, packed) <= d.available for d in devices))
    notes = []
    if not packed and any(d.packed_per_slice for d in devices):
        notes.append("no room for the packed copies of the parents: several visitors at once decode more slowly")
    if fits < pool:
        notes.append(f"pool sized down from {pool} to {fits} slices to fit this machine's memory: more distinct "
                     f"TIES (or DARE ...) settings at once re-merge a slice or wait for one. For more: "
                     f"--dtype bfloat16, or a bigger machine")
    return Plan(tuple(devices), pool, fits, packed, tuple(notes), resident)


def resident_bytes(status: str = "/proc/self/status") -> int:
    """This process's resident memory now (0 where /proc is not there)."""
    try:
        for line in Path(status).read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def cache_bytes(config, element_size: int, rows: int = CACHE_ROWS) -> int:
    """Key/value cache of ``rows`` rows at the model's full context."""
    text = getattr(config, "get_text_config", lambda: config)()
    layers = getattr(text, "num_hidden_layers", None) or getattr(text, "n_layer", 0)
    hidden = getattr(text, "hidden_size", None) or getattr(text, "n_embd", 0)
    heads = getattr(text, "num_attention_heads", None) or getattr(text, "n_head", 1)
    head_dim = getattr(text, "head_dim", None) or hidden // max(heads, 1)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    return rows * context_length(config) * layers * 2 * kv_heads * head_dim * element_size


def context_length(config, default: int = 1024) -> int:
    """The longest sequence a model's config allows (the field's name differs by family)."""
    text = getattr(config, "get_text_config", lambda: config)()
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length"):
        value = getattr(text, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def available_bytes(device: str, meminfo: str = "/proc/meminfo", cgroup: str = "/sys/fs/cgroup") -> int:
    """What a device has free now: on a CPU the smaller of MemAvailable and what the cgroup still allows; on a
    CUDA device its free memory."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.mem_get_info(torch.device(device))[0]
    found = _meminfo_available(Path(meminfo))
    room = _cgroup_room(Path(cgroup))
    candidates = [x for x in (found, room) if x is not None]
    if not candidates:  # neither Linux figure: what the machine has in all
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(candidates)


def _meminfo_available(path: Path) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room(root: Path) -> int | None:
    """The cgroup's limit less its usage (v2, then v1); None without a limit."""
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            limit = (root / limit_file).read_text().strip()
            usage = int((root / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 2**60:  # v1 writes a huge number for none
            return None
        return max(0, int(limit) - usage)
    return None


def device_plans(sizes: Mapping[str, int], packed_sizes: Mapping[str, int], runtime: Mapping[str, int],
                 available: Mapping[str, int]) -> list[DevicePlan]:
    """One DevicePlan per device the weights sit on."""
    return [DevicePlan(d, available[d], sizes[d], runtime.get(d, 0), packed_sizes.get(d, 0)) for d in sizes]
