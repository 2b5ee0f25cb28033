import pytest
from rouge_score import rouge_scorer

from scoring.metrics import bleu, chrf, exact_match, rouge_l, score_texts, token_f1, tokenize, turkish_lower


def test_turkish_lower_maps_dotted_and_dotless_i():
    assert turkish_lower("IŞIK İNCE") == "ışık ince"
    # str.lower gives "i" + U+0307 (two characters) for "İ"; ours gives one plain "i".
    assert turkish_lower("İ") == "i"
    # A decomposed İ (I + combining dot above) is still İ.
    assert turkish_lower("I\u0307stanbul") == "istanbul"
    assert turkish_lower("ÇĞÖŞÜ ÂÎÛ") == "çğöşü âîû"


def test_tokenize_keeps_turkish_letters_and_splits_on_apostrophes_and_punctuation():
    assert tokenize("Ankara'dır.") == ["ankara", "dır"]
    assert tokenize("Çiçek, ŞARKI; ağaç! 64 metre_yükseklik") == ["çiçek", "şarkı", "ağaç", "64", "metre", "yükseklik"]
    assert tokenize("Hâlâ kâğıt") == ["hâlâ", "kâğıt"]


def test_exact_match_follows_turkish_case_rules():
    assert exact_match("İstanbul", "istanbul") == 1.0
    # "I" lowers to "ı": "ıstanbul" is not "istanbul".
    assert exact_match("Istanbul", "istanbul") == 0.0
    assert exact_match("  64   metre! ", "64 metre") == 1.0
    assert exact_match("64 metre", "65 metre") == 0.0


def test_token_f1_by_hand():
    # hyp: ankara türkiye nin başkentidir (4); ref: türkiye nin başkenti ankara dır (5)
    # common: ankara, türkiye, nin = 3 -> P = 3/4, R = 3/5, F1 = 2 * (9/20) / (27/20) = 2/3
    assert token_f1("Ankara Türkiye'nin başkentidir", "Türkiye'nin başkenti Ankara'dır") == pytest.approx(2 / 3)
    # Repeats count once per match: hyp bir bir iki (3), ref bir üç (2), common 1
    # -> P = 1/3, R = 1/2, F1 = 2 * (1/6) / (5/6) = 2/5
    assert token_f1("bir bir iki", "bir üç") == pytest.approx(0.4)
    assert token_f1("", "") == 1.0
    assert token_f1("", "bir") == 0.0
    assert token_f1("iki", "bir") == 0.0


def test_rouge_l_by_hand_on_turkish_words():
    # hyp: çiçek bugün ağaçta açtı (4); ref: güzel çiçek ağaçta açtı şimdi (5)
    # LCS = çiçek ağaçta açtı = 3 -> P = 3/4, R = 3/5, F = 2 * (9/20) / (27/20) = 2/3
    assert rouge_l("Çiçek bugün ağaçta açtı", "Güzel çiçek ağaçta açtı şimdi") == pytest.approx(2 / 3)
    # Order matters for LCS: reversed 3 words share a subsequence of 1 -> F = 1/3
    assert rouge_l("şiş ağaç gün", "gün ağaç şiş") == pytest.approx(1 / 3)


def test_rouge_score_default_tokenizer_deletes_turkish_letters():
    # Why rouge_l brings its own tokenizer: the default keeps [a-z0-9] only, so
    # "şiş" (skewer) and "iş" (work) both become ["i"] and count as identical.
    default = rouge_scorer.RougeScorer(["rougeL"])
    assert default.score("iş", "şiş")["rougeL"].fmeasure == 1.0
    assert rouge_l("şiş", "iş") == 0.0
    # A word made only of Turkish letters vanishes altogether.
    assert default.score("ışığı", "ışığı")["rougeL"].fmeasure == 0.0
    assert rouge_l("ışığı", "ışığı") == 1.0


def test_chrf_identical_is_100_and_disjoint_is_0():
    assert chrf("Boğaz köprüsü 64 metredir.", ["Boğaz köprüsü 64 metredir."]) == pytest.approx(100.0)
    # Case is folded the Turkish way on both sides.
    assert chrf("İSTANBUL", "istanbul") == pytest.approx(100.0)
    # ışık / gece share no character.
    assert chrf("ışık", "gece") == 0.0


def test_sentence_bleu_by_hand():
    assert bleu("Kedi bahçede top oynuyor", "kedi bahçede top oynuyor") == pytest.approx(100.0)
    # hyp kedi bahçede top oynuyor / ref kedi bahçede top uyuyor: matches
    # 1-grams 3/4, 2-grams 2/3, 3-grams 1/2, 4-grams 0/1; 'exp' smoothing makes
    # the first zero count 1/(2 * 1) = 1/2. Same length, so no brevity penalty:
    # BLEU = (3/4 * 2/3 * 1/2 * 1/2) ** (1/4) = (1/8) ** (1/4) = 2 ** (-3/4)
    assert bleu("kedi bahçede top oynuyor", ["kedi bahçede top uyuyor"]) == pytest.approx(100 * 2 ** -0.75)


def test_score_texts_averages_rows_and_pools_bleu():
    hyps = ["İstanbul", "Ankara"]
    refs = ["istanbul", "Muş"]
    # Row 1 identical, row 2 shares no word and no character (ankara / muş).
    scores = score_texts(hyps, refs, qa=True)
    assert set(scores) == {"chrf", "bleu", "rouge_l", "exact_match", "token_f1"}
    assert scores["chrf"] == pytest.approx(50.0)
    assert scores["rouge_l"] == pytest.approx(0.5)
    assert scores["exact_match"] == pytest.approx(0.5)
    assert scores["token_f1"] == pytest.approx(0.5)
    assert set(score_texts(hyps, refs, qa=False)) == {"chrf", "bleu", "rouge_l"}


def test_score_texts_corpus_bleu_pools_ngram_counts():
    hyps = ["kedi bahçede top oynuyor", "bugün hava çok güzel"]
    refs = ["kedi bahçede top uyuyor", "bugün hava çok güzel"]
    # Pooled matches: 1-grams (3+4)/8, 2-grams (2+3)/6, 3-grams (1+2)/4, 4-grams (0+1)/2;
    # no zero count, so no smoothing: BLEU = (7/8 * 5/6 * 3/4 * 1/2) ** (1/4) = (105/384) ** (1/4)
    assert score_texts(hyps, refs, qa=False)["bleu"] == pytest.approx(100 * (105 / 384) ** 0.25)


def test_score_texts_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 answers but 1 references"):
        score_texts(["a", "b"], ["a"], qa=False)
