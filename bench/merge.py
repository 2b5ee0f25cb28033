"""How fast harman merges a whole model, against a floor and against mergekit, in one run.

    python -m bench.merge                           # Gemma 3 270M shapes (the default), float32, CPU, all methods
    python -m bench.merge --shapes gpt2-large --device cuda --dtype bfloat16
    python -m bench.merge --methods linear slerp ties --no-mergekit

Random weights with the model's shapes: a base and two fine-tunes (base plus 10%
noise), merged into a fourth set of tensors in place. The floor is one
torch.add(a, b, out=c) over every tensor, timed in turn with each method's
merges; mergekit's own tensor functions (merge_tensors, float32) run on the same
tensors when mergekit is installed. Each time is the fastest of --repeats rounds
(mergekit's too), which evens out other load on a shared machine; x_floor is
the median of per-round ratios, each merge against the floor passes around it.

`ms` is a re-merge with new parameters, the app's case: the parents' per-tensor
statistics (norms, dot products) are already known. `cold_ms` measures them too,
as mergekit does on every run: x_faster_than_mergekit is mergekit's time over
`cold_ms` (like with like), x_faster_than_mergekit_warm over `ms`.
Prints one JSON line per method.
"""

import argparse
import json
import statistics
import time

import torch

from merging import MergeSpec, merge_model

SHAPES = {
    # SmolLM2-135M: hidden 576, intermediate 1536, 30 layers, 9 heads (3 for keys and values), tied embeddings
    "smollm2-135m": dict(arch="llama", hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, vocab=49152),
    # Gemma 3 270M, the offline default: 256-wide heads, q/k norms, four norms per layer, a 262k-token vocabulary
    "gemma3-270m": dict(arch="gemma3", hidden=640, intermediate=2048, layers=18, heads=4, kv_heads=1, head_dim=256,
                        vocab=262144),
    # turkish-gpt2-large
    "gpt2-large": dict(arch="gpt2", hidden=1280, layers=36, vocab=50257, positions=1024),
}

# Parameters as the app's sliders might leave them.
SPECS = {
    "linear": {"merge_method": "linear", "models": [{"parameters": {"weight": 0.3}}, {"parameters": {"weight": 0.7}}]},
    "slerp": {"merge_method": "slerp", "parameters": {"t": 0.3}},
    "nuslerp": {"merge_method": "nuslerp", "parameters": {"weight": [0.4, 0.6]}},
    "task_arithmetic": {"merge_method": "task_arithmetic", "parameters": {"weight": 0.5}},
    "ties": {"merge_method": "ties", "parameters": {"weight": 0.5, "density": 0.5}},
    "dare_linear": {"merge_method": "dare_linear", "parameters": {"weight": 0.5, "density": 0.5}, "seed": 0},
    "dare_ties": {"merge_method": "dare_ties", "parameters": {"weight": 0.5, "density": 0.5}, "seed": 0},
    "breadcrumbs": {"merge_method": "breadcrumbs", "parameters": {"weight": 0.5, "density": 0.5}},
    "breadcrumbs_ties": {"merge_method": "breadcrumbs_ties", "parameters": {"weight": 0.5, "density": 0.5}},
    "della": {"merge_method": "della", "parameters": {"weight": 0.5, "density": 0.5, "epsilon": 0.1}, "seed": 0},
    "della_linear": {"merge_method": "della_linear", "parameters": {"weight": 0.5, "density": 0.5, "epsilon": 0.1},
                     "seed": 0},
    "model_stock": {"merge_method": "model_stock"},
}


def tensor_shapes(shapes: str) -> dict[str, tuple[int, ...]]:
    s = SHAPES[shapes]
    h, layers = s["hidden"], s["layers"]
    if s["arch"] in ("llama", "gemma3"):
        head = s.get("head_dim", h // s["heads"])
        q, kv = s["heads"] * head, s["kv_heads"] * head
        layer = {"input_layernorm.weight": (h,), "self_attn.q_proj.weight": (q, h), "self_attn.k_proj.weight": (kv, h),
                 "self_attn.v_proj.weight": (kv, h), "self_attn.o_proj.weight": (h, q),
                 "post_attention_layernorm.weight": (h,), "mlp.gate_proj.weight": (s["intermediate"], h),
                 "mlp.up_proj.weight": (s["intermediate"], h), "mlp.down_proj.weight": (h, s["intermediate"])}
        if s["arch"] == "gemma3":
            layer.update({"self_attn.q_norm.weight": (head,), "self_attn.k_norm.weight": (head,),
                          "pre_feedforward_layernorm.weight": (h,), "post_feedforward_layernorm.weight": (h,)})
        names = {"model.embed_tokens.weight": (s["vocab"], h)}
        names.update({f"model.layers.{i}.{k}": v for i in range(layers) for k, v in layer.items()})
        names["model.norm.weight"] = (h,)
        return names
    layer = {"ln_1.weight": (h,), "ln_1.bias": (h,), "attn.c_attn.weight": (h, 3 * h), "attn.c_attn.bias": (3 * h,),
             "attn.c_proj.weight": (h, h), "attn.c_proj.bias": (h,), "ln_2.weight": (h,), "ln_2.bias": (h,),
             "mlp.c_fc.weight": (h, 4 * h), "mlp.c_fc.bias": (4 * h,), "mlp.c_proj.weight": (4 * h, h),
             "mlp.c_proj.bias": (h,)}
    names = {"transformer.wte.weight": (s["vocab"], h), "transformer.wpe.weight": (s["positions"], h)}
    names.update({f"transformer.h.{i}.{k}": v for i in range(layers) for k, v in layer.items()})
    names.update({"transformer.ln_f.weight": (h,), "transformer.ln_f.bias": (h,)})
    return names


def build(shapes: str, device: str, dtype: torch.dtype):
    generator = torch.Generator(device=device).manual_seed(0)
    base, first, second, dest = {}, {}, {}, {}
    for name, shape in tensor_shapes(shapes).items():
        weight = torch.randn(shape, generator=generator, device=device) * 0.02
        base[name] = weight.to(dtype)
        first[name] = (weight + torch.randn(shape, generator=generator, device=device) * 0.002).to(dtype)
        second[name] = (weight + torch.randn(shape, generator=generator, device=device) * 0.002).to(dtype)
        dest[name] = torch.empty(shape, dtype=dtype, device=device)
    return base, [first, second], dest


def timed(run, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


def floor(base, models, dest):
    for name, out in dest.items():
        torch.add(models[0][name], models[1][name], out=out)


def mergekit_merge(method: str, base, models, dest, parameters: dict):
    from mergekit.merge_methods import merge_tensors

    for name in dest:
        if method in ("linear", "slerp"):
            inputs, base_index = [models[0][name], models[1][name]], 0 if method == "slerp" else None
        else:
            inputs, base_index = [base[name], models[0][name], models[1][name]], 0
        merge_tensors(inputs, method, parameters=parameters, base_index=base_index, dtype=torch.float32)


def mergekit_parameters(spec: dict) -> dict:
    """The same parameters as merge_tensors takes them (per-model values as lists)."""
    parameters = dict(spec.get("parameters", {}))
    per_model = [entry.get("parameters", {}) for entry in spec.get("models", [])]
    for key in {k for p in per_model for k in p}:
        parameters[key] = [p[key] for p in per_model]
    return parameters


def measure(method: str, base, models, dest, args, have_mergekit: bool) -> dict:
    """Rounds of floor, re-merge, floor and cold merge in turn, so that all see the same load; the fastest of each.

    On a shared machine the memory bandwidth the floor measures moves by 2x within a minute, so the ratio is taken
    per round, each re-merge against the mean of the floor passes just before and after it, and the median of
    those is reported (x_floor); x_floor_of_fastest divides the fastest re-merge by the fastest floor.
    """
    spec = MergeSpec.from_dict(SPECS[method])
    layers = SHAPES[args.shapes]["layers"]
    parents = {}
    merge_model(dest, base, models, spec, layers, parents=parents)  # measures the parents once
    floors, merges, cold, mergekit = [], [], [], []
    parameters = mergekit_parameters(SPECS[method])
    floors.append(timed(lambda: floor(base, models, dest), args.device))
    for _ in range(args.repeats):
        merges.append(timed(lambda: merge_model(dest, base, models, spec, layers, parents=parents), args.device))
        floors.append(timed(lambda: floor(base, models, dest), args.device))
        cold.append(timed(lambda: merge_model(dest, base, models, spec, layers), args.device))
        if have_mergekit:  # mergekit keeps nothing between merges: each of its runs is cold
            mergekit.append(timed(lambda: mergekit_merge(method, base, models, dest, parameters), args.device))
    ratios = [m / ((before + after) / 2) for m, before, after in zip(merges, floors, floors[1:])]
    floor_ms, ms, cold_ms = min(floors), min(merges), min(cold)
    mergekit_ms = min(mergekit) if mergekit else None
    return {
        "method": method, "shapes": args.shapes, "parameters": sum(t.numel() for t in dest.values()),
        "device": args.device, "dtype": args.dtype, "threads": torch.get_num_threads(),
        "ms": round(ms, 1), "cold_ms": round(cold_ms, 1), "floor_ms": round(floor_ms, 1),
        "x_floor": round(statistics.median(ratios), 2), "x_floor_of_fastest": round(ms / floor_ms, 2),
        "mergekit_ms": round(mergekit_ms, 1) if mergekit_ms is not None else None,
        # Like with like: harman's cold merge (the parents measured afresh) against mergekit's, fastest of each;
        # the warm re-merge (parents' figures kept, as a slider's release) beside it.
        "x_faster_than_mergekit": round(mergekit_ms / cold_ms, 1) if mergekit_ms is not None else None,
        "x_faster_than_mergekit_warm": round(mergekit_ms / ms, 1) if mergekit_ms is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", choices=SHAPES, default="gemma3-270m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--methods", nargs="+", choices=SPECS, default=list(SPECS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch's intra-op threads (default: torch's choice)")
    parser.add_argument("--no-mergekit", action="store_true", help="skip timing mergekit's functions")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import mergekit.merge_methods  # noqa: F401  (bench only: never imported by merging/)

        have_mergekit = not args.no_mergekit
    except ImportError:
        have_mergekit = False

    base, models, dest = build(args.shapes, args.device, getattr(torch, args.dtype))
    floor(base, models, dest)  # first touch of the destination's pages
    for method in args.methods:
        print(json.dumps(measure(method, base, models, dest, args, have_mergekit)), flush=True)


if __name__ == "__main__":
    main()
