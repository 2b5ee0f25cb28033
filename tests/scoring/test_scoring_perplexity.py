import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from scoring.perplexity import answer_nll, answer_nll_many, perplexity
from tests.tiny_models import word_level_gpt2 as tiny_model

SENTENCES = [
    "Boğaz köprüsü denizden 64 metre yüksekliğe sahiptir .",
    "Türkiye'nin başkenti Ankara'dır .",
    "Soru : İstanbul hangi iki kıtadadır ? Cevap : Avrupa ve Asya .",
    "Çiçekler ilkbaharda açar , ağaçlar yeşerir .",
]
# Answers of different lengths, so a batch pads its shorter rows.
PROMPTS = ["Soru : Boğaz köprüsü kaç metre ? Cevap :", "Soru : başkenti ?", "Çiçekler", "Soru :"]
ANSWERS = ["denizden 64 metre yüksekliğe sahiptir .", "Ankara'dır", "ilkbaharda açar , ağaçlar yeşerir .", "Avrupa ve Asya"]
ANSWER_WORDS = [6, 1, 6, 3]  # the word-level tokenizer gives one token per word


@pytest.fixture(scope="module")
def tokenizer():
    word_level = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    word_level.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    return PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="[PAD]", unk_token="[UNK]")


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(tokenizer, seed=0)


def hand_nll(model, tokenizer, prompt, answer):
    """One row at a time, no batching: -sum log p(answer token | everything before it)."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = prompt_ids + tokenizer(answer, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    nll = -sum(log_probs[t - 1, ids[t]].item() for t in range(len(prompt_ids), len(ids)))
    return nll, len(ids) - len(prompt_ids)


def assert_same(scored, expected):
    assert [count for _, count in scored] == [count for _, count in expected]
    for (nll, _), (want, _) in zip(scored, expected):
        assert nll == pytest.approx(want, rel=1e-5)


def test_answer_nll_matches_a_hand_loop_over_log_softmax(model, tokenizer):
    scored = answer_nll(model, tokenizer, PROMPTS, ANSWERS, batch_size=4)
    assert [count for _, count in scored] == ANSWER_WORDS
    assert_same(scored, [hand_nll(model, tokenizer, p, a) for p, a in zip(PROMPTS, ANSWERS)])
    # A random model over this vocabulary is near uniform: about log(vocab) nats a token.
    assert scored[0][0] / scored[0][1] == pytest.approx(math.log(len(tokenizer)), rel=0.3)


def test_batched_equals_unbatched(model, tokenizer):
    one_by_one = answer_nll(model, tokenizer, PROMPTS, ANSWERS, batch_size=1)
    assert_same(answer_nll(model, tokenizer, PROMPTS, ANSWERS, batch_size=3), one_by_one)
    assert_same(answer_nll(model, tokenizer, PROMPTS, ANSWERS, batch_size=8), one_by_one)


def test_padding_does_not_change_a_row(model, tokenizer):
    alone = answer_nll(model, tokenizer, PROMPTS[1:2], ANSWERS[1:2])
    # Next to row 0 (8 + 6 tokens), row 1 (4 + 1 tokens) carries 9 pad tokens.
    padded = answer_nll(model, tokenizer, PROMPTS[:2], ANSWERS[:2])[1:]
    assert_same(padded, alone)


def test_dropout_is_off_while_scoring_and_training_mode_is_restored(tokenizer):
    model = tiny_model(tokenizer, seed=0)  # GPT2Config has dropout 0.1
    expected = [hand_nll(model, tokenizer, p, a) for p, a in zip(PROMPTS, ANSWERS)]
    model.train()
    assert_same(answer_nll(model, tokenizer, PROMPTS, ANSWERS), expected)
    assert model.training


def test_perplexity_is_exp_of_nll_per_answer_token(model, tokenizer):
    rows = [hand_nll(model, tokenizer, p, a) for p, a in zip(PROMPTS, ANSWERS)]
    total_nll = sum(nll for nll, _ in rows)
    assert perplexity(model, tokenizer, PROMPTS, ANSWERS, batch_size=2) == pytest.approx(math.exp(total_nll / 16), rel=1e-5)


def test_answer_nll_many_scores_each_model(model, tokenizer):
    other = tiny_model(tokenizer, seed=1)
    scored = answer_nll_many({"base": model, "soup": other}, tokenizer, PROMPTS, ANSWERS)
    assert list(scored) == ["base", "soup"]
    assert_same(scored["base"], [hand_nll(model, tokenizer, p, a) for p, a in zip(PROMPTS, ANSWERS)])
    assert_same(scored["soup"], [hand_nll(other, tokenizer, p, a) for p, a in zip(PROMPTS, ANSWERS)])
    assert scored["base"][0][0] != pytest.approx(scored["soup"][0][0], rel=1e-3)


def test_empty_answer_scores_zero_tokens(model, tokenizer):
    assert answer_nll(model, tokenizer, ["Soru :"], [""]) == [(0.0, 0)]
    with pytest.raises(ValueError, match="no tokens"):
        perplexity(model, tokenizer, ["Soru :"], [""])


def test_errors_name_the_row(model, tokenizer):
    with pytest.raises(ValueError, match="prompt 1 has no tokens"):
        answer_nll(model, tokenizer, ["Soru :", ""], ["Ankara'dır", "Ankara'dır"])
    long_answer = " ".join(["metre"] * 40)
    with pytest.raises(ValueError, match="row 0 is 2 prompt \\+ 40 answer tokens, over the model's 32 positions"):
        answer_nll(model, tokenizer, ["Soru :"], [long_answer])
    with pytest.raises(ValueError, match="2 prompts but 1 answers"):
        answer_nll(model, tokenizer, PROMPTS[:2], ANSWERS[:1])


class FullLogitsOnly(torch.nn.Module):
    """A causal LM whose forward has no `logits_to_keep`: scoring must slice the full logits itself."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config, self.device = inner, inner.config, inner.device

    def forward(self, input_ids, attention_mask=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_models_without_logits_to_keep_score_alike(model, tokenizer):
    kept = answer_nll(model, tokenizer, PROMPTS, ANSWERS, batch_size=3)
    assert_same(answer_nll(FullLogitsOnly(model), tokenizer, PROMPTS, ANSWERS, batch_size=3), kept)
