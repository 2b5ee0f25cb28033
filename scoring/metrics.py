"""Text metrics that read Turkish correctly.

Every metric here is case-insensitive, and the case folding is Turkish: "I" is
the capital of "ı" and "İ" the capital of "i". Python's str.lower (and with it
sacrebleu's lowercase=True) turns "I" into "i" and "İ" into "i" plus a
combining dot, so "Istanbul" would match "istanbul" and "İstanbul" would not.
Case is folded because the models differ mostly in sentence-initial
capitals, which is not what a comparison of merges is about; the price is that
chrF and BLEU here are not comparable with published cased sacreBLEU figures.

Scales follow each metric's convention: chrf and bleu are 0-100 (sacrebleu),
rouge_l, exact_match and token_f1 are 0-1.
"""

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from statistics import fmean
from types import SimpleNamespace

import functools

import sacrebleu

# Letters and digits of any script; "_" is in \w but is not part of a word.
_WORD = re.compile(r"[^\W_]+")


def turkish_lower(s: str) -> str:
    # NFC first, so a decomposed "İ" (I + U+0307) is seen as "İ", not as "I".
    s = unicodedata.normalize("NFC", s)
    return s.replace("I", "ı").replace("İ", "i").lower()


def tokenize(s: str) -> list[str]:
    """Words of s, Turkish-lower-cased; everything that is not a letter or digit splits.

    An apostrophe splits too: "Ankara'dır" is ["ankara", "dır"]. Turkish writes
    suffixes of proper nouns after an apostrophe, so the split lets "Ankara"
    match "Ankara'dır" as a word, while the suffix still counts as a token.
    """
    return _WORD.findall(turkish_lower(s))


def _as_refs(refs: str | Sequence[str]) -> list[str]:
    # A bare string would otherwise be read as a list of one-character references.
    return [refs] if isinstance(refs, str) else list(refs)


def chrf(hyp: str, refs: str | Sequence[str]) -> float:
    """Sentence chrF (sacrebleu defaults: character 6-grams, beta 2), 0-100."""
    lowered = [turkish_lower(r) for r in _as_refs(refs)]
    return sacrebleu.sentence_chrf(turkish_lower(hyp), lowered).score


def bleu(hyp: str, refs: str | Sequence[str]) -> float:
    """Sentence BLEU, 0-100, with sacrebleu's defaults for a sentence.

    That is the 13a tokenizer (which keeps "ankara'dır" as one token),
    'exp' smoothing and effective order, so a short answer is not zeroed just
    for having no matching 4-gram.
    """
    lowered = [turkish_lower(r) for r in _as_refs(refs)]
    return sacrebleu.sentence_bleu(turkish_lower(hyp), lowered).score


@functools.cache
def _rouge_l():
    # rouge-score's default tokenizer keeps only [a-z0-9], so "şiş" and "iş" both
    # become ["i"]; ours keeps every letter. Imported when first scored: rouge-score
    # pulls in nltk and scipy, two seconds of every start otherwise.
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=SimpleNamespace(tokenize=tokenize))


def rouge_l(hyp: str, ref: str) -> float:
    """ROUGE-L F-measure (longest common subsequence of tokenize() words), 0-1."""
    return _rouge_l().score(ref, hyp)["rougeL"].fmeasure


def exact_match(hyp: str, ref: str) -> float:
    """1.0 when hyp and ref have the same words (case, spacing and punctuation ignored)."""
    return float(tokenize(hyp) == tokenize(ref))


def token_f1(hyp: str, ref: str) -> float:
    """SQuAD-style F1 over the multiset of tokenize() words, 0-1."""
    hyp_tokens, ref_tokens = tokenize(hyp), tokenize(ref)
    if not hyp_tokens or not ref_tokens:
        # SQuAD's rule: two empty answers agree, one empty answer scores nothing.
        return float(hyp_tokens == ref_tokens)
    common = sum((Counter(hyp_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(hyp_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def score_texts(hyps: Sequence[str], refs: Sequence[str], qa: bool) -> dict[str, float]:
    """Scores of a set of answers, one reference per answer.

    bleu is corpus BLEU (n-gram counts pooled over rows); the others are the
    mean of the per-row scores. exact_match and token_f1 only for QA (qa=True).
    """
    if len(hyps) != len(refs):
        raise ValueError(f"score_texts: {len(hyps)} answers but {len(refs)} references; pass one reference per answer")
    if not hyps:
        raise ValueError("score_texts: no answers to score; pass at least one answer and its reference")
    lowered_hyps = [turkish_lower(h) for h in hyps]
    lowered_refs = [turkish_lower(r) for r in refs]
    scores = {
        "chrf": fmean(chrf(h, r) for h, r in zip(hyps, refs)),
        "bleu": sacrebleu.corpus_bleu(lowered_hyps, [lowered_refs]).score,
        "rouge_l": fmean(rouge_l(h, r) for h, r in zip(hyps, refs)),
    }
    if qa:
        scores["exact_match"] = fmean(exact_match(h, r) for h, r in zip(hyps, refs))
        scores["token_f1"] = fmean(token_f1(h, r) for h, r in zip(hyps, refs))
    return scores
