import threading

import pytest

from scoring import turkish
from scoring.turkish import TurkishCheck, check, is_turkish_word, pooled, repeated_trigram_share, turkish_word_share

FLUENT = (
    "Fotosentez, yeşil bitkilerin güneş ışığını kullanarak karbondioksit ve sudan glikoz ile oksijen "
    "ürettiği bir süreçtir. Bu süreç yaprakların hücrelerinde gerçekleşir. Klorofil adlı yeşil pigment, "
    "ışık enerjisini yakalayarak kimyasal enerjiye dönüştürür. Türkiye'de de ağaçlandırma çalışmaları "
    "sürdürülmekte, milyonlarca fidan toprakla buluşturulmaktadır."
)

# Real words, suffixed ones mostly; every one is accepted.
REAL = (
    "evlerimizden kitaplarımızı gidiyorum geleceğim başkente yılında öğrencilerin güzelleştirmek ılık "
    "bilgisayarlar yapılmıştır anlaşılabilir kullanılmaktadır bağımsızlığını kurulmuştur dakik sonuç "
    "tarafından şehirlerinden gökyüzünde cisimlerinden edilmektedir konuşuyorlardı gidemeyeceğimizi "
    "Avrupalılaştıramadıklarımızdan zekâ İstanbul Iğdır Ankara'dır Türkiye'nin Atatürk'ün"
).split()
# Plausible non-words: invented roots, broken vowel harmony, misspellings. Every one is rejected.
FAKE = (
    "ikiçi köylerek okulleri kitaplerin gidiyoruk geliyorumlar evlardan güzelmek söylemişdi gelmiyecek "
    "herkez yalnış kalemlık okuyurum olmuşdur kitaplarmız öğrencilerimizler evlerimizlerden"
).split()


@pytest.mark.parametrize("word", REAL)
def test_real_words_are_accepted(word):
    assert is_turkish_word(word) is True


@pytest.mark.parametrize("word", FAKE)
def test_plausible_non_words_are_rejected(word):
    assert is_turkish_word(word) is False


def test_dotted_and_dotless_i_follow_turkish_casing():
    # "IŞIK" lowers to "ışık"; Python's str.lower would give "işik", not a word.
    assert is_turkish_word("IŞIK") is True
    assert is_turkish_word("işik") is False
    assert is_turkish_word("İŞİK") is False
    assert turkish_word_share("IŞIK ılık İstanbul IĞDIR") == 1.0
    assert turkish_word_share("Sabah işik vardı.") == pytest.approx(2 / 3)
    # A decomposed İ (I + U+0307) and str.lower's "i" + U+0307 are both plain i.
    assert turkish_word_share("I\u0307stanbul'da") == 1.0
    assert "İLK".lower() == "i\u0307lk"
    assert turkish_word_share("İLK".lower()) == 1.0


def test_apostrophe_suffixes_are_name_plus_suffix():
    result = check("Türkiye’nin başkenti Ankara'dır.")
    assert result == TurkishCheck(word_share=1.0, repeated_share=0.0, words_checked=3)
    # A name in lower case is not written Turkish: "ankara'dır" fails, "başkent" passes.
    assert turkish_word_share("başkent ankara'dır") == 0.5
    # A known name with a suffix that is no suffix.
    assert turkish_word_share("Başkent Ankara'xyz") == 0.5


def test_numbers_are_not_counted():
    result = check("1923 yılında %40 ve 3,5 oranında 1980'de")
    assert result.words_checked == 3
    assert result.word_share == 1.0
    assert check("1923, %40 ve 3,5").words_checked == 1
    assert turkish_word_share("1923 %40 3,5 1980'de") is None


def test_words_repeated_from_the_question_are_excluded():
    result = check("Türkiye'nin başkenti Ankara'dır.", "Türkiye’nin başkenti neresidir?")
    assert result.words_checked == 1
    assert result.word_share == 1.0
    # Gibberish echoed from the question neither helps nor hurts.
    assert check("ikiçi köylerek Ankara'dır", "İkiçi köylerek nedir?") == TurkishCheck(1.0, 0.0, 1)
    # The comparison uses Turkish casing: "IĞDIR" is "ığdır" (str.lower would make it "iğdir").
    assert check("ığdır doğudadır", "IĞDIR nerede?") == TurkishCheck(1.0, 0.0, 1)
    assert check("ığdır doğudadır") == TurkishCheck(0.5, 0.0, 2, ("ığdır",))
    # Answer that only repeats the question adds no words.
    assert turkish_word_share("Başkenti neresidir?", "Türkiye'nin başkenti neresidir?") is None


def test_gibberish_scores_low():
    # "Bazılım" parses (bazı+lı+m), "ikiçi" and "köylerek" do not: 5 of 7.
    assert turkish_word_share("Bazılım ve yeni bir şekilde ikiçi köylerek") == pytest.approx(5 / 7)
    assert turkish_word_share("Bazılım ve yeni bir şekilde ikiçi köylerek") < 0.75
    assert turkish_word_share("Bazılım ikiçi köylerek gidiyoruk kitaplerin okulleri") == pytest.approx(1 / 6)


def test_fluent_answer_scores_one():
    result = check(FLUENT, "Fotosentez nedir?")
    assert result.word_share == 1.0
    assert result.words_checked == 38
    assert result.repeated_share == 0.0


def test_names_must_be_capitalised():
    assert is_turkish_word("Ankara") is True
    assert is_turkish_word("ankara") is False
    # "Hello" is among the lexicon's corpus-collected names; as a name it passes.
    assert is_turkish_word("Hello") is True
    assert is_turkish_word("hello") is False


def test_english_in_lower_case_is_not_turkish():
    # The lexicon holds "Machine" and "Great" only as names; "is" is Turkish ("soot").
    assert turkish_word_share("Machine learning is great") == 0.5


def test_unknown_names_are_not_counted():
    # Mid-sentence capitalised unknown: not counted; at a sentence start: counted invalid.
    assert check("Dün Zorlutuna geldi.") == TurkishCheck(1.0, 0.0, 2)
    assert check("Zorlutuna geldi.") == TurkishCheck(0.5, 0.0, 2, ("Zorlutuna",))
    assert check("Geldi. Zorlutuna da geldi.").word_share == pytest.approx(3 / 4)
    # Unknown name + suffix, unknown acronym + suffix: not counted; known names
    # (ASELSAN, Calvin): counted valid; a known name + a non-suffix: counted invalid.
    text = "Bunu Zorlutuna'nın ekibi ve KZRT'nin ASELSAN'ın Calvin döngüsü Ankara'xyz açıkladı"
    assert check(text) == TurkishCheck(7 / 8, 0.0, 8, ("Ankara'xyz",))
    # An unknown acronym is not counted even where a sentence starts.
    assert check("KZRT geldi.") == TurkishCheck(1.0, 0.0, 1)
    assert check("Zorlutuna'nın") == TurkishCheck(None, 0.0, 0)


def test_the_words_not_accepted_are_named_once_in_order():
    # The default's Model 1 answered "Alaska'dir": vowel harmony wants "Alaska'dır". A page that shows
    # "Turkish words 0% (0/1)" must say which word that was.
    result = check("Dünyanın en soğuk yeri Alaska'dir.", "Dünyanın en soğuk yeri neresidir?")
    assert (result.word_share, result.words_checked, result.rejected) == (0.0, 1, ("Alaska'dir",))
    assert check("Dünyanın en soğuk yeri Alaska'dır.", "Dünyanın en soğuk yeri neresidir?").rejected == ()
    looped = check("ikiçi köylerek ve ikiçi okulleri ikiçi")
    assert looped.rejected == ("ikiçi", "köylerek", "okulleri") and looped.words_checked == 6
    assert pooled([check("ikiçi geldi"), check("okulleri ikiçi")]).rejected == ("ikiçi", "okulleri")


def test_empty_answer_is_none():
    assert turkish_word_share("") is None
    assert turkish_word_share("  ... !? ") is None
    assert check("") == TurkishCheck(None, 0.0, 0)


def test_repeated_trigram_share_of_a_loop_is_exact():
    looped = "gök cisimlerinden biri olan gök cisimlerinden biri olan gök cisimlerinden"
    # 10 words, 8 trigrams; the last 4 repeat the first 4.
    assert repeated_trigram_share(looped) == 0.5
    assert repeated_trigram_share("bir iki üç bir iki üç bir iki üç") == pytest.approx(4 / 7)
    # Case and punctuation do not hide a repeat (Turkish casing: "GÖK" is "gök").
    assert repeated_trigram_share("Gök cisimleri, gök GÖK cisimleri gök.") == 0.25


def test_repeated_trigram_share_without_repeats_is_zero():
    assert repeated_trigram_share("") == 0.0
    assert repeated_trigram_share("iki kelime") == 0.0
    assert repeated_trigram_share("gök gök gök") == 0.0
    assert repeated_trigram_share(FLUENT) == 0.0
    # Overlapping repeats count: trigrams (ve ve ve) x 2, the second repeats.
    assert repeated_trigram_share("ve ve ve ve") == 0.5


def test_check_combines_both():
    looped = "gök cisimlerinden biri olan gök cisimlerinden biri olan gök cisimlerinden"
    assert check(looped, "Ay nedir?") == TurkishCheck(1.0, 0.5, 10)


def test_concurrent_cold_checks_agree():
    turkish.load()
    turkish._known.cache_clear()
    results = []

    def run():
        results.append(check(FLUENT + " Bazılım ikiçi köylerek.", "Fotosentez nedir?"))

    threads = [threading.Thread(target=run) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [TurkishCheck(39 / 41, 0.0, 41, ("ikiçi", "köylerek"))] * 5


def test_a_word_seen_before_is_not_analysed_again(monkeypatch):
    # A footer is redrawn at every update of the other columns: words already judged come from the cache, and
    # only a new word walks the analyser's graph (the speed itself is bench material, not a test's).
    first = check(FLUENT)
    analysed = []
    real = turkish._analyse
    monkeypatch.setattr(turkish, "_analyse", lambda word: analysed.append(word) or real(word))
    reordered = " ".join(reversed(FLUENT.split()))  # the same words, another answer: check's own cache misses
    again = check(reordered)
    assert not analysed and again.word_share == first.word_share and again.words_checked == first.words_checked
    check(reordered + " kitaplerin")
    assert analysed == ["kitaplerin"]
