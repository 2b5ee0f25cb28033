"""Our decoding loop: batched, alone and threaded runs agree, with transformers' generate too; rows stop on
their own; streamers see the answer grow."""

import queue
import threading
from dataclasses import replace

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from serving.generation import GenerationSettings, QueueStreamer, generate
from tests.tiny_models import ARCHS, PROMPT, tiny_bank, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ALL = ("base", "model1", "model2", "soup", "slerp", "ties")
SAMPLING = GenerationSettings(max_new_tokens=24, temperature=0.8, top_p=0.9, repetition_penalty=1.2, seed=7)
GREEDY = GenerationSettings(max_new_tokens=24, greedy=True)


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level, one token per byte, as GPT-2's tokenizer before merges: a character may span tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def tokens(results) -> dict[str, list[int]]:
    return {v: r.token_ids for v, r in results.items()}


@pytest.fixture(scope="module", params=ARCHS)
def arch_bank(request):
    bank, _ = tiny_bank(request.param)
    return request.param, bank


@pytest.mark.parametrize("settings", [GREEDY, SAMPLING], ids=["greedy", "sampled"])
def test_a_variant_answers_the_same_alone_in_a_batch_or_in_a_thread(arch_bank, settings):
    _, bank = arch_bank
    batch = tokens(generate(bank, ALL, PROMPT, settings, {}))
    assert len(set(map(tuple, batch.values()))) == len(ALL)  # every variant answers differently
    assert all(len(ids) == 24 for ids in batch.values())
    threads = tokens(generate(bank, ALL, PROMPT, settings, {}, batched=False))
    assert threads == batch
    for variant in ALL:
        assert tokens(generate(bank, [variant], PROMPT, settings, {}))[variant] == batch[variant]
    subset = tokens(generate(bank, ["ties", "model1"], PROMPT, settings, {}))  # not consecutive, not in order
    assert list(subset) == ["ties", "model1"]
    assert subset == {"ties": batch["ties"], "model1": batch["model1"]}


@pytest.mark.parametrize("arch", ARCHS)
def test_bfloat16_answers_agree_batched_and_alone(arch):
    # bfloat16 rounds coarsely: the batched layers must round where transformers' layers do.
    bank, _ = tiny_bank(arch, tiny_model(arch).to(torch.bfloat16))
    settings = GenerationSettings(max_new_tokens=16, greedy=True)
    batch = tokens(generate(bank, ALL, PROMPT, settings, {}))
    assert tokens(generate(bank, ALL, PROMPT, settings, {}, batched=False)) == batch
    assert len(set(map(tuple, batch.values()))) == len(ALL)


def test_the_seed_decides_the_sample(arch_bank):
    _, bank = arch_bank
    first = tokens(generate(bank, ["soup"], PROMPT, SAMPLING, {}))
    again = tokens(generate(bank, ["soup"], PROMPT, SAMPLING, {}))
    other = tokens(generate(bank, ["soup"], PROMPT, replace(SAMPLING, seed=8), {}))
    assert first == again
    assert first != other


@pytest.mark.parametrize("settings, hf", [
    (GREEDY, dict(do_sample=False)),
    (GenerationSettings(max_new_tokens=24, greedy=True, repetition_penalty=1.3),
     dict(do_sample=False, repetition_penalty=1.3)),
    (SAMPLING, dict(do_sample=True, temperature=0.8, top_p=0.9, top_k=0, repetition_penalty=1.2)),
], ids=["greedy", "penalty", "sampled"])
def test_matches_transformers_generate(arch_bank, settings, hf):
    _, bank = arch_bank
    ours = tokens(generate(bank, ["model2", "slerp"], PROMPT, settings, {}))
    for variant in ("model2", "slerp"):
        torch.manual_seed(settings.seed)  # transformers samples from the global generator
        theirs = bank.module(variant).generate(torch.tensor([PROMPT]), max_new_tokens=24, eos_token_id=None,
                                               pad_token_id=0, **hf)
        assert ours[variant] == theirs[0, len(PROMPT):].tolist(), variant


def test_each_row_stops_at_its_own_eos(arch_bank):
    _, bank = arch_bank
    full = tokens(generate(bank, ALL, PROMPT, GREEDY, {}))
    eos = full["model1"][4]  # a token model1 says early; rows that never say it must run to the end
    assert any(eos not in ids for ids in full.values())
    results = generate(bank, ALL, PROMPT, GenerationSettings(max_new_tokens=24, greedy=True, eos_token_ids=(eos,)),
                       {}, tokenizer=byte_tokenizer())
    for variant, ids in full.items():
        expected = ids[:ids.index(eos) + 1] if eos in ids else ids
        assert results[variant].token_ids == expected, variant
        assert results[variant].finish_reason == ("eos" if eos in ids else "length")
        assert results[variant].text == byte_tokenizer().decode(expected[:-1] if eos in ids else expected)


def test_each_row_stops_before_its_own_stop_string(arch_bank):
    _, bank = arch_bank
    tok = byte_tokenizer()
    full = generate(bank, ALL, PROMPT, GREEDY, {}, tokenizer=tok)
    text = full["slerp"].text
    stop = next(text[i:i + 2] for i in range(3, len(text))
                if "\ufffd" not in text[i:i + 2] and any(text[i:i + 2] not in r.text for r in full.values()))
    results = generate(bank, ALL, PROMPT, GenerationSettings(max_new_tokens=24, greedy=True, stop_strings=(stop,)),
                       {}, tokenizer=tok)
    stopped = 0
    for variant, r in full.items():
        ids = r.token_ids
        cut = next((n for n in range(1, len(ids) + 1) if stop in tok.decode(ids[:n])), None)
        assert results[variant].token_ids == ids[:cut], variant
        if cut is None:
            assert (results[variant].finish_reason, results[variant].text) == ("length", r.text)
        else:
            stopped += 1
            assert results[variant].finish_reason == "stop_string"
            assert results[variant].text == r.text[:r.text.index(stop)]
    assert 0 < stopped < len(ALL)


class StopAfter:
    """A streamer that presses stop once its variant has said `count` tokens."""

    def __init__(self, event: threading.Event, count: int):
        self.event, self.count, self.seen = event, count, 0

    def put(self, token_ids):
        self.seen += len(token_ids)
        if self.seen == self.count:
            self.event.set()

    def end(self, result):
        pass


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "threads"])
def test_stop_event_ends_every_row_within_a_step(arch_bank, batched):
    _, bank = arch_bank
    stop = threading.Event()
    results = generate(bank, ALL, PROMPT, GREEDY, {"soup": StopAfter(stop, 3)}, stop_event=stop, batched=batched)
    assert results["soup"].n_tokens == 3
    if batched:
        assert {r.finish_reason for r in results.values()} == {"stopped"}
        assert [r.n_tokens for r in results.values()] == [3] * len(ALL)
    else:  # each other thread sees the event before its next step, unless it had already finished
        assert all((r.finish_reason, r.n_tokens < 24) in {("stopped", True), ("length", False)}
                   for r in results.values())

    results = generate(bank, ["model1"], PROMPT, GREEDY, {}, stop_event=stop, batched=batched)
    assert (results["model1"].n_tokens, results["model1"].time_to_first_token) == (0, None)


def test_queue_streamers_show_the_answer_growing(arch_bank):
    _, bank = arch_bank
    tok, events = byte_tokenizer(), queue.Queue()
    streamers = {v: QueueStreamer(v, events, tok) for v in ("model1", "ties")}
    results = generate(bank, ["model1", "ties"], PROMPT, GREEDY, streamers, tokenizer=tok)
    seen = {"model1": [], "ties": []}
    while not events.empty():
        variant, kind, *payload = events.get()
        seen[variant].append((kind, *payload))
    for variant, updates in seen.items():
        assert [u[0] for u in updates] == ["token"] * 24 + ["end"]
        assert [u[2] for u in updates[:-1]] == list(range(1, 25))
        assert updates[-1][1] is results[variant]
        assert updates[-2][1] == results[variant].text.rstrip("\ufffd") != ""
        assert all(u[1].startswith(updates[i][1]) for i, u in enumerate(updates[1:-1])), "text only grows"


def test_queue_streamer_holds_back_half_a_character():
    tok, events = byte_tokenizer(), queue.Queue()
    streamer = QueueStreamer("soup", events, tok)
    ids = tok.encode("aç")
    assert len(ids) == 3  # "ç" is two bytes, two tokens
    for i in ids:
        streamer.put([i])
    assert [events.get()[2] for _ in ids] == ["a", "a", "aç"]


def test_results_carry_timings(arch_bank):
    _, bank = arch_bank
    results = generate(bank, ["model2", "soup"], PROMPT, GREEDY, {})
    for r in results.values():
        assert 0 < r.time_to_first_token < r.seconds
        assert r.n_tokens == len(r.token_ids) == 24 and r.text is None


def test_bad_requests_say_what_to_change():
    bank, _ = tiny_bank("gpt2")
    with pytest.raises(ValueError, match="exceeds the model's 64 positions"):
        generate(bank, ["soup"], PROMPT, GenerationSettings(max_new_tokens=60), {})
    with pytest.raises(ValueError, match="need a tokenizer"):
        generate(bank, ["soup"], PROMPT, GenerationSettings(stop_strings=("\n",)), {})
    with pytest.raises(KeyError, match="'extra' is not in the weight bank"):
        generate(bank, ["extra"], PROMPT, GREEDY, {})
    with pytest.raises(ValueError, match="name one variant twice"):
        generate(bank, ["soup", "soup"], PROMPT, GREEDY, {})
    with pytest.raises(ValueError, match=r"temperature=0 .*top_p=1.5"):
        GenerationSettings(temperature=0, top_p=1.5)


@pytest.mark.parametrize("text", ["Türkiye'nin başkenti Ankara'dır. Işık, çay, göz 🌍 ılık.", "  iki  boşluk\nyeni satır"])
def test_the_streamed_text_is_the_whole_answer_decoded_at_every_token(text):
    """The streamer decodes only the new tokens, yet shows what decoding the whole answer shows."""
    from queue import Queue

    from serving.generation import QueueStreamer
    from tests import tiny_models

    tok = tiny_models.tokenizer()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    events = Queue()
    streamer = QueueStreamer("soup", events, tok)
    for i, token in enumerate(ids, start=1):
        streamer.put([token])
        _, _, shown, n = events.get_nowait()
        assert n == i and shown == tok.decode(ids[:i], skip_special_tokens=True).rstrip("\ufffd")


def test_slices_found_equal_are_kept_across_calls_that_pass_them(arch_bank, monkeypatch):
    # What the server's loop keeps per slice version, a caller with unchanging slices may keep across calls:
    # the second call compares no slice again and answers as before.
    _, bank = arch_bank
    same = {}
    first = tokens(generate(bank, ALL, PROMPT, GREEDY, {}, same=same))
    assert same, "the first call records what it compared"
    compared = []
    real_equal = torch.equal
    monkeypatch.setattr(torch, "equal", lambda a, b: compared.append(1) or real_equal(a, b))
    assert tokens(generate(bank, ALL, PROMPT, GREEDY, {}, same=same)) == first
    assert not compared
    assert tokens(generate(bank, ALL, PROMPT, GREEDY, {})) == first and compared  # without it: compared again
