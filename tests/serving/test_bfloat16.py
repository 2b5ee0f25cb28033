"""bfloat16 as a Space serves it, held to a float32 merge of the same bfloat16 parents on the CPU: merges across
chunk boundaries, merges into the bank, banked and merge-free decoding, the decoding loop. Each test runs on the
CPU here and again on a CUDA device when there is one (tests/bf16_reference.py says how close each must come)."""

import pytest
import torch

import merging.chunks
import merging.selection
from merging import MergeSpec, merge_model
from serving import threads
from serving.batched import Rows, batched_model, selected_rows
from serving.decoding_loop import DecodingLoop, Job
from serving.generation import GenerationSettings, generate
from tests.bf16_reference import (
    DEVICES,
    Family,
    Tally,
    assert_banked_rows_compute_as_their_modules,
    assert_greedy_within_noise,
    assert_rounded_once,
    float32_noise,
    forward,
    merge_into,
)
from tests.merge_specs import SPECS
from tests.tiny_models import PROMPT, tensor_family as family

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# A tensor just over one chunk of its device (merging/chunks.py), so that every chunked loop crosses a boundary.
OVER_ONE_CHUNK = {"cpu": (520, 510), "cuda": (4097, 4096)}
CHUNKED = {  # the methods that walk chunks, each with its parameters
    "linear": {"weight": 0.3}, "slerp": {"t": 0.3}, "nuslerp": {"weight": 0.6},
    "task_arithmetic": {"weight": 0.7}, "ties": {"weight": 0.6, "density": 0.3},
    "breadcrumbs": {"weight": 0.5, "density": 0.8, "gamma": 0.05}, "model_stock": {},
}
GREEDY = GenerationSettings(max_new_tokens=32, greedy=True)
LONG_PROMPT = [7, 3, 55, 21, 9, 14, 60, 2, 33, 41, 12, 5, 17, 42, 8, 99, 3, 70, 26, 1]
# How much further from the float32 logits than the bfloat16 materialised merge a merge-free row may be (root
# mean square over a prompt's logits): measured 0.45-3.5x over 8 seeds of four models and four merges.
NOISE_RATIO = 6.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("method", list(CHUNKED))
def test_merges_across_chunk_boundaries_are_the_float32_merge_in_one_chunk(method, dtype, device, monkeypatch):
    name = "model.layers.0.mlp.up_proj.weight"
    spec = MergeSpec(method, CHUNKED[method])
    parents = [t.to(dtype) for t in family(OVER_ONE_CHUNK[device], seed=1)]
    on_device = [{name: t.to(device)} for t in parents]
    merged = {name: torch.full_like(on_device[0][name], float("nan"))}  # what a merge leaves unwritten shows
    merge_model(merged, on_device[0], on_device[1:], spec, 1)

    for module in (merging.chunks, merging.selection):  # the reference: float32, in one chunk
        monkeypatch.setattr(module, "CPU_CHUNK", parents[0].numel())
    reference = [{name: t.float()} for t in parents]
    expected = {name: torch.empty_like(reference[0][name])}
    merge_model(expected, reference[0], reference[1:], spec, 1)

    actual, exact = merged[name].cpu(), expected[name]
    assert not actual.isnan().any()
    if dtype == torch.float32:
        torch.testing.assert_close(actual, exact, rtol=1e-5, atol=1e-5)
    else:
        tally = Tally()
        terms = 2 * sum(t.double().abs() for t in parents)  # no coefficient here exceeds 2
        assert_rounded_once(actual, exact, f"{method} on {device}", tally, "merged", terms)
        tally.assert_few(f"{method} on {device}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("label", ["soup", "slerp, schedules and filters", "task arithmetic"])
@pytest.mark.parametrize("arch", ["gpt2", "gemma3"])
def test_bfloat16_merges_into_the_bank_round_the_float32_merge_once(arch, label, device):
    spec = MergeSpec.from_dict(SPECS[label])
    parents = Family(arch, spec, device)
    merge_into(parents.bank, "soup", spec, parents.layers)
    tally = Tally()
    for name, merged in parents.bank.slice("soup").items():
        assert_rounded_once(merged, parents.exact(name), name, tally, "merged", parents.terms(name))
    tally.assert_few(f"{arch}, {label} on {device}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ["gpt2", "gemma3", "llama-tied", "llama-untied"])
def test_banked_bfloat16_rows_compute_as_transformers_modules_of_their_slices(arch, device):
    assert_banked_rows_compute_as_their_modules(Family(arch, MergeSpec.from_dict(SPECS["soup"]), device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bfloat16", "float32"])
@pytest.mark.parametrize("arch", ["gpt2", "gemma3", "llama-untied"])
def test_banked_and_merge_free_rows_decode_within_their_dtypes_noise(arch, dtype, device):
    """A parent's slice, the merge materialised in the bank and the same merge merge-free, in one batch: their
    logits and 32 greedy tokens against float32 on the CPU. In bfloat16 this catches what is grossly wrong (a
    coefficient 20% off fails, 5% passes: rounded activations hide less); in float32 on a device, 0.3%."""
    spec = MergeSpec.from_dict(SPECS["slerp"])
    parents = Family(arch, spec, device, dtype)
    bank, reference = parents.bank, parents.reference
    merge_into(bank, "soup", spec, parents.layers)
    columns = {"model1": bank.index("model1"), "soup": bank.index("soup"), "soup~": parents.mix}
    float32 = {"model1": reference.module("model1"), "soup": reference.module("soup"),
               "soup~": reference.module("soup")}
    # The noise of the dtype itself: transformers' own module of the reference merge (rounded once), on the device.
    own = {"model1": bank.module("model1"), "soup": bank.module("ties"), "soup~": bank.module("ties")}

    with selected_rows(Rows(list(columns.values()), device, frozen=bank.frozen)), torch.no_grad():
        batch = batched_model(bank)(torch.tensor([LONG_PROMPT] * 3, device=device)).logits.float().cpu()
    for row, column in enumerate(columns):
        exact = forward(float32[column], LONG_PROMPT)
        noise = max((forward(own[column], LONG_PROMPT, device) - exact).pow(2).mean().sqrt().item(),
                    float32_noise(exact))
        error = (batch[row] - exact).pow(2).mean().sqrt().item()
        assert error <= NOISE_RATIO * noise, (column, error, noise)

    answers = generate(bank, list(columns), PROMPT, GREEDY, {}, recipes=columns)
    for column, answer in answers.items():
        assert len(answer.token_ids) == GREEDY.max_new_tokens
        assert_greedy_within_noise(answer.token_ids, PROMPT, float32[column], own[column], device,
                                   f"{arch} {column} on {device} in {dtype}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bfloat16", "float32"])
def test_the_decoding_loop_answers_requests_joining_a_running_batch_within_noise(dtype, device, monkeypatch):
    """The server's loop on the device: two requests, the second joining while the first decodes, with a
    merge-free row in each; every column's tokens against float32 on the CPU."""
    monkeypatch.setattr(threads, "CORES", 1)  # the loop's thread on every core: 10x slower on a busy 2-core machine
    spec = MergeSpec.from_dict(SPECS["slerp"])
    parents = Family("llama-tied", spec, device, dtype)
    bank, reference = parents.bank, parents.reference
    loop = DecodingLoop(bank)
    asks = [({"model1": 1, "slerp~": parents.mix}, PROMPT, 24),
            ({"slerp~": parents.mix, "model2": 2}, LONG_PROMPT[:11], 12)]
    jobs = [loop.submit(Job(columns, prompt, GenerationSettings(max_new_tokens=tokens, greedy=True), {}))
            for columns, prompt, tokens in asks]
    float32 = {"model1": reference.module("model1"), "model2": reference.module("model2"),
               "slerp~": reference.module("soup")}
    own = {"model1": bank.module("model1"), "model2": bank.module("model2"), "slerp~": bank.module("ties")}
    for job, (columns, prompt, tokens) in zip(jobs, asks):
        assert job.done.wait(timeout=120) and job.error is None
        for column in columns:
            assert len(job.results[column].token_ids) == tokens
            assert_greedy_within_noise(job.results[column].token_ids, prompt, float32[column], own[column], device,
                                       f"{column} of {prompt[:3]}... on {device} in {dtype}")
    assert loop.rows == 0
