"""Walking flat tensors chunk by chunk.

Merge math that needs several steps per element runs chunk by chunk, so every step
after the first reads from cache rather than memory, and scratch space is a few
chunks instead of a few copies of the largest tensor.
"""

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

# 1 MiB of float32 per buffer: the handful a kernel uses at once stays in cache.
CPU_CHUNK = 1 << 18
# GPUs stream from HBM either way; large chunks keep kernel launches few.
CUDA_CHUNK = 1 << 24


def chunk_size(device: torch.device) -> int:
    return CPU_CHUNK if device.type == "cpu" else CUDA_CHUNK


def spans(numel: int, device: torch.device, size: int | None = None) -> Iterator[slice]:
    size = size or chunk_size(device)
    for start in range(0, numel, size):
        yield slice(start, min(start + size, numel))


def scratch(numel: int, device: torch.device, count: int = 1) -> list[torch.Tensor]:
    """`count` float32 buffers big enough for one chunk of a `numel`-element tensor."""
    size = min(numel, chunk_size(device))
    return [torch.empty(size, dtype=torch.float32, device=device) for _ in range(count)]


_whole = {"buffer": None, "lock": threading.Lock()}


@contextmanager
def whole_scratch(numel: int, device: torch.device) -> Iterator[torch.Tensor]:
    """float32 scratch for a whole tensor, held for the block.

    On CPU one buffer, grown to the largest tensor asked for, serves merge after merge: a fresh allocation of an
    embedding-sized buffer comes from the kernel as untouched pages, and faulting them in cost ~25 ms at every
    TIES merge of the default model. A merge that finds it in use (another thread merging) gets its own. GPUs
    reuse memory through torch's caching allocator already.
    """
    if device.type != "cpu" or not _whole["lock"].acquire(blocking=False):
        yield torch.empty(numel, dtype=torch.float32, device=device)
        return
    try:
        if _whole["buffer"] is None or _whole["buffer"].numel() < numel:
            _whole["buffer"] = None  # let the old one go before the new one is made
            _whole["buffer"] = torch.empty(numel, dtype=torch.float32)
        yield _whole["buffer"][:numel]
    finally:
        _whole["lock"].release()


def flat(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1)


def total(parts: list[torch.Tensor]) -> float:
    """The sum of per-chunk sums, in float64, with one synchronisation on a GPU."""
    if len(parts) == 1:
        return float(parts[0].item())
    return torch.stack(parts).double().sum().item() if parts else 0.0


def as_float32(chunk: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
    """The chunk itself when it is float32 already, else a float32 copy in `buffer`."""
    if chunk.dtype == torch.float32:
        return chunk
    return buffer[: chunk.numel()].copy_(chunk)


def weighted_sum_into(out: torch.Tensor, tensors: Sequence[torch.Tensor], coefficients: Sequence[float]) -> None:
    """out = sum_i coefficients_i * tensors_i, in float32."""
    if all(t.dtype == torch.float32 for t in (out, *tensors)):
        # Two or three streaming passes beat chunking here: nothing to convert, and
        # few operations to pay a chunk's overhead for.
        torch.mul(tensors[0], coefficients[0], out=out)
        for tensor, coefficient in zip(tensors[1:], coefficients[1:]):
            out.add_(tensor, alpha=coefficient)
        return
    target = out.view(-1)
    sources = [flat(t) for t in tensors]
    buffers = scratch(target.numel(), target.device, 2)
    for span in spans(target.numel(), target.device):
        work = target[span] if out.dtype == torch.float32 else buffers[1][: span.stop - span.start]
        torch.mul(as_float32(sources[0][span], buffers[0]), coefficients[0], out=work)
        for source, coefficient in zip(sources[1:], coefficients[1:]):
            work.add_(as_float32(source[span], buffers[0]), alpha=coefficient)
        if work.data_ptr() != target[span].data_ptr():
            target[span].copy_(work)


def task_vector_sum_into(
    out: torch.Tensor, base: torch.Tensor, tensors: Sequence[torch.Tensor], coefficients: Sequence[float]
) -> None:
    """out = base + sum_i coefficients_i * (tensors_i - base), in float32, chunk by
    chunk: exactly the base where the task vectors are zero."""
    target, origin = out.view(-1), flat(base)
    sources = [flat(t) for t in tensors]
    base_copy, model_copy, delta, total = scratch(target.numel(), target.device, 4)
    for span in spans(target.numel(), target.device):
        length = span.stop - span.start
        b, work = as_float32(origin[span], base_copy), total[:length]
        for i, (source, coefficient) in enumerate(zip(sources, coefficients)):
            d = torch.sub(as_float32(source[span], model_copy), b, out=delta[:length])
            if i == 0:
                torch.mul(d, coefficient, out=work)
            else:
                work.add_(d, alpha=coefficient)
        if out.dtype == torch.float32:
            torch.add(b, work, out=target[span])
        else:
            target[span].copy_(work.add_(b))
