"""Start-up of the offline default, in one run:

- cold: the first start's conversion (assemble the GGUF chunks, check them, de-quantise, write the safetensors
  cache) into an empty cache folder;
- cache: loading the base from the cache, as every later start does;
- warm start: ``python app.py`` with the cache in place, from launch to the first answered page request (the
  page is built from the preset and served first), and on to the models being in (the base, both adapters
  folded in, the weight bank: the summary app.py prints), after which a question is answered.

    python -m bench.startup [--preset default]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from unittest import mock

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from models import gguf_cache
from models.presets import load

ROOT = Path(__file__).resolve().parent.parent


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def cold_conversion(source: str) -> float:
    with tempfile.TemporaryDirectory() as empty, mock.patch.dict(os.environ, HARMAN_CACHE=empty):
        return timed(lambda: gguf_cache.checkpoint_dir(source))


def warm_start(preset: str) -> tuple[float, float]:
    """Seconds from launch to a served page, and to the models being in."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, "app.py", "--preset", preset, "--port", str(port)], cwd=ROOT,
                                stdout=out, stderr=subprocess.DEVNULL)
        served = None
        try:
            while time.perf_counter() - started < 300:
                if proc.poll() is not None:
                    raise RuntimeError(f"app.py exited with {proc.returncode}")
                if served is None:
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                        served = time.perf_counter() - started
                    except OSError:
                        pass
                out.seek(0)
                if "loaded in" in out.read():  # the model set's summary
                    return served or time.perf_counter() - started, time.perf_counter() - started
                time.sleep(0.1)
            raise RuntimeError("app.py did not serve its page and load its models within 300 s")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default")
    args = parser.parse_args(argv)
    source = load(args.preset, environ={}).base
    folder = gguf_cache.checkpoint_dir(source)  # the real cache, built once outside the timings
    cold = cold_conversion(source)
    from_cache = timed(lambda: (AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)))
    served, models_in = warm_start(args.preset)
    print(json.dumps({"bench": "startup", "preset": args.preset, "threads": torch.get_num_threads(),
                      "cold_conversion_s": round(cold, 2), "cache_load_s": round(from_cache, 2),
                      "speedup": round(cold / from_cache, 1), "warm_start_to_page_s": round(served, 2),
                      "warm_start_to_models_s": round(models_in, 2)}))


if __name__ == "__main__":
    main()
