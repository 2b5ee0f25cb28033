"""What the safetensors cache saves at start-up: loading the offline default's base from the GGUF file
(de-quantising every tensor) against loading the cached checkpoint, in one run.

    python -m bench.startup
"""

import json
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from models import gguf_cache
from models.presets import load


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    source = load("default", environ={}).base
    folder = gguf_cache.checkpoint_dir(source)  # built once, outside the timings
    gguf = gguf_cache.locate(source)
    from_gguf = timed(lambda: (AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name),
                               AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)))
    from_cache = timed(lambda: (AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)))
    print(json.dumps({"bench": "startup", "threads": torch.get_num_threads(), "gguf_s": round(from_gguf, 2),
                      "cache_s": round(from_cache, 2), "speedup": round(from_gguf / from_cache, 1)}))


if __name__ == "__main__":
    main()
