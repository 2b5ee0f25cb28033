"""A reference-free Turkish check for one generated answer.

Two numbers, neither needing a reference answer:

- turkish_word_share: the share of the answer's own words (those not repeated
  from the question) that the Turkish morphological analyser accepts. A model
  that drifts into another language, invents words ("ikiçi", "köylerek") or
  breaks vowel harmony ("okulleri") scores lower.
- repeated_trigram_share: the share of the answer's word 3-grams that already
  occurred earlier in the answer; a model stuck in a loop scores high.

The analyser is zeyrek (a pure-Python port of Zemberek-NLP's rule-based
morphological analyser and lexicon). It is loaded lazily, once per process, on
the first word looked up (or by load()), under a lock; loading takes about 2 s
(about 1 s of it is importing nltk, which zeyrek imports). Word look-ups are
cached, so an answer whose words were seen before costs under a millisecond;
a word never seen costs about 0.25 ms (a 160-word answer of new words, about
35 ms, once).

zeyrek's own MorphAnalyzer.analyze is not used: it tokenises with nltk's punkt
data, which does not ship with nltk and cannot be downloaded where the app runs;
it formats a log line for every search step (about three quarters of its time);
and it mutates phonetic-attribute sets that are shared with the lexicon and with
an lru_cache. _search below walks the same morphotactic graph through the
analyser's own objects, without logging, on copies of those sets, and stops at
the first full analysis, since only "is there one" matters here. It relies on
zeyrek internals, which is why the requirement is pinned to one version.
"""

import functools
import re
import threading
import unicodedata
from dataclasses import dataclass

from scoring.metrics import turkish_lower

__all__ = ["TurkishCheck", "check", "is_turkish_word", "load", "repeated_trigram_share", "turkish_word_share"]

# Apostrophe look-alikes that models and keyboards produce, all read as "'".
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'", "´": "'", "′": "'"})
# A word: letters and digits of any script, with apostrophe-joined parts ("Ankara'dır").
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
# What, between two words, makes the second one start a sentence (or a list item).
_SENTENCE_BREAK = re.compile(r"[.!?…:\n]")
_DIGIT = re.compile(r"\d")
# â, î, û are optional in Turkish spelling (kâğıt/kağıt); the lexicon has them without.
_CIRCUMFLEX = str.maketrans({"â": "a", "î": "i", "û": "u"})
# Longer than any real word (the famous long ones are about 45 letters); not analysed.
_MAX_WORD = 64

_load_lock = threading.Lock()
_search_lock = threading.Lock()
_analyser = None


def load():
    """Load the analyser now (idempotent, thread-safe); returns it.

    Calling it from a background thread at start-up takes the ~2 s off the first
    answer's check. Everything else here calls it on first use.
    """
    global _analyser
    if _analyser is None:
        with _load_lock:
            if _analyser is None:
                import zeyrek  # imports nltk; about 1 s

                _analyser = zeyrek.MorphAnalyzer().analyzer  # lexicon and graph; about 1 s
    return _analyser


_NOT_A_WORD, _NAME, _WORD = 0, 1, 2


def _search(analyser, word: str, candidates) -> bool:
    """Whether some path from the stem candidates consumes all of word and may end there."""
    from zeyrek.attributes import PhoneticAttribute, calculate_phonetic_attributes
    from zeyrek.morphotactics import SearchPath, SurfaceTransition, generate_surface

    cannot_terminate = PhoneticAttribute.CannotTerminate
    paths = [SearchPath.initial(c, word[len(c.surface):]) for c in candidates]
    while paths:
        if len(paths) > 30:
            paths = analyser.prune_cyclic_paths(paths)
        advanced = []
        for path in paths:
            tail = path.tail
            if not tail and path.is_terminal and cannot_terminate not in path.phonetic_attributes:
                return True
            # RuleBasedAnalyzer.advance, minus the logging and the shared-set mutation.
            for transition in path.current_state.outgoing:
                if not tail and transition.has_surface_form:
                    continue
                surface = generate_surface(transition, path.phonetic_attributes)
                if not tail.startswith(surface) or not transition.can_pass(path):
                    continue
                if not transition.has_surface_form:
                    advanced.append(path.copy(SurfaceTransition("", transition), path.phonetic_attributes))
                    continue
                if tail == surface:
                    attributes = set(path.phonetic_attributes)
                else:
                    attributes = set(calculate_phonetic_attributes(surface, tuple(path.phonetic_attributes)))
                attributes.discard(cannot_terminate)
                kind = transition.last_template_token.type_
                if kind == "LAST_VOICED":
                    attributes.add(PhoneticAttribute.ExpectsConsonant)
                elif kind == "LAST_NOT_VOICED":
                    attributes.add(PhoneticAttribute.ExpectsVowel)
                    attributes.add(cannot_terminate)
                advanced.append(path.copy(SurfaceTransition(surface, transition), attributes))
        paths = advanced
    return False


def _analyse(word: str) -> int:
    """_WORD if word (lower-case, no apostrophes) has an analysis from a common root (or an
    abbreviation), _NAME if only from proper-noun roots, else _NOT_A_WORD."""
    from zeyrek.attributes import SecondaryPos

    analyser = load()
    with _search_lock:
        candidates = analyser.stem_transitions.prefix_matches(word)
        names = [c for c in candidates if c.dict_item.secondary_pos == SecondaryPos.ProperNoun]
        common = [c for c in candidates if c.dict_item.secondary_pos != SecondaryPos.ProperNoun]
        if _search(analyser, word, common):
            return _WORD
        return _NAME if _search(analyser, word, names) else _NOT_A_WORD


def _key(token: str) -> str:
    """The form words are compared and looked up in: Turkish lower case, circumflex folded."""
    return turkish_lower(token).translate(_CIRCUMFLEX)


@functools.lru_cache(maxsize=200_000)
def _known(key: str) -> int:
    word = key.replace("'", "")
    return _analyse(word) if 0 < len(word) <= _MAX_WORD else _NOT_A_WORD


def is_turkish_word(word: str) -> bool:
    """Whether the analyser accepts word, case-insensitively (Turkish casing), as written.

    An apostrophe is read as Turkish writes it, before the suffixes of a proper
    noun: "Ankara'dır" is looked up as "ankaradır". A word that parses only from
    a proper-noun root must be capitalised: "Ankara'dır" is a word, "ankara'dır"
    is not, and neither is "hello", which the lexicon's corpus-collected names
    hold as "Hello".
    """
    word = _normalise(word)
    level = _known(_key(word))
    return level == _WORD or (level == _NAME and word[:1].isupper())


def _normalise(text: str) -> str:
    # NFC composes a decomposed "İ"; "i" + U+0307 is what str.lower makes of "İ".
    return unicodedata.normalize("NFC", text).translate(_APOSTROPHES).replace("i\u0307", "i")


def _tokens(text: str) -> list[tuple[str, bool]]:
    """(word, starts a sentence) for each word of text, numbers included, in order."""
    text = _normalise(text)
    out = []
    end = 0
    for m in _TOKEN.finditer(text):
        starts = end == 0 or _SENTENCE_BREAK.search(text, end, m.start()) is not None
        out.append((m.group(), starts))
        end = m.end()
    return out


def _judge(token: str, sentence_start: bool) -> bool | None:
    """True (a Turkish word), False (not one), or None (an unknown name: not counted)."""
    level = _known(_key(token))
    capital = token[0].isupper()
    if level == _WORD or (level == _NAME and capital):
        return True
    stem = token.split("'", 1)[0]
    if len(stem) >= 2 and stem.isupper():
        return None  # an acronym the lexicon lacks ("KZRT", "KZRT'nin")
    if not capital:
        return False
    if "'" in token:
        # A capital before an apostrophe is Turkish spelling for "name + suffix". If the
        # name is a known word, the suffix is what failed ("Ankara'xyz"); else it is a name.
        return False if _known(_key(stem)) else None
    return False if sentence_start else None


def _own_words(answer: str, question: str) -> list[tuple[str, bool]]:
    asked = {_key(t) for t, _ in _tokens(question)}
    return [(t, s) for t, s in _tokens(answer) if not _DIGIT.search(t) and _key(t) not in asked]


@dataclass(frozen=True)
class TurkishCheck:
    word_share: float | None  # turkish_word_share: 0-1, None when no word was checked
    repeated_share: float  # repeated_trigram_share: 0-1
    words_checked: int  # the answer's own words judged valid or not (the word_share denominator)
    # The words judged not Turkish, each once, in order of first use: what a reader checks the share against
    # (a model's "Alaska'dir" breaks vowel harmony; an unknown name at a sentence start is counted here too).
    rejected: tuple[str, ...] = ()


@functools.lru_cache(maxsize=1024)  # a finished column's footer is redrawn at every update of the others
def check(answer: str, question: str = "") -> TurkishCheck:
    """turkish_word_share and repeated_trigram_share of one answer, and how many words were judged."""
    judged = [(t, v) for t, s in _own_words(answer, question) if (v := _judge(t, s)) is not None]
    share = sum(v for _, v in judged) / len(judged) if judged else None
    rejected = tuple(dict.fromkeys(t for t, v in judged if not v))
    return TurkishCheck(share, repeated_trigram_share(answer), len(judged), rejected)


def pooled(checks: list[TurkishCheck]) -> TurkishCheck:
    """The check of a set of answers: the word share pooled over every word judged (a two-word answer weighs
    less than a fifty-word one), the repeated share averaged over answers (NaN for no answers)."""
    checked = sum(c.words_checked for c in checks)
    valid = sum(c.word_share * c.words_checked for c in checks if c.word_share is not None)
    repeated = sum(c.repeated_share for c in checks) / len(checks) if checks else float("nan")
    rejected = tuple(dict.fromkeys(word for c in checks for word in c.rejected))
    return TurkishCheck(valid / checked if checked else None, repeated, checked, rejected)


def turkish_word_share(answer: str, question: str = "") -> float | None:
    """Share (0-1) of the answer's own words that are valid Turkish words; None if it adds none.

    Words: runs of letters and digits, joined across an apostrophe (' or ’), so
    "Ankara'dır" and "Türkiye'nin" are one word each, judged as name + suffix.
    Punctuation splits and is dropped. A word with a digit ("1923", "3,5",
    "%40", "1980'de") is a number and is not counted at all.

    Own words: a word of the answer that also occurs in the question (compared
    in Turkish lower case, "İ"→"i" and "I"→"ı", circumflex ignored) is left out,
    so that echoing the question neither helps nor hurts. Every occurrence of
    the remaining words counts.

    Valid: the morphological analyser (zeyrek: Zemberek's lexicon and
    morphotactics) finds an analysis of the word in Turkish lower case with
    apostrophes removed, so "IĞDIR", "ılık", "İstanbul", "Ankara'dır" are valid
    and "İĞDİR" ("iğdir") is not. Case matters in one way only: a word that
    parses only from a proper-noun root must be capitalised. The lexicon's
    names include some 27,000 collected from a corpus, many of them English
    words ("Machine", "Hello", "World"); "hello" and "ankara'dır" in lower case
    are therefore invalid, "Google'ın" and "Ankara'dır" valid.

    Names the lexicon lacks are not counted (neither valid nor invalid): a
    capitalised word that does not start a sentence (start of the answer, or
    after . ! ? … : or a line break), an all-capitals acronym anywhere, and a
    capitalised word before an apostrophe ("Zorlutuna'nın") unless that name
    is itself a known word, in which case the suffix after it is what failed
    ("Ankara'xyz" is invalid). A capitalised unknown word that starts a
    sentence is counted invalid, as it would be in lower case: a capital there
    says nothing about names. None is also returned when every own word was
    such a name.

    Known limits: the analyser accepts any morphologically well-formed
    composition, including ones nobody would write ("Bazılım" = bazı+lı+m), and
    an English word that happens to be a Turkish form passes.
    """
    return check(answer, question).word_share


def repeated_trigram_share(answer: str) -> float:
    """Share (0-1) of the answer's word 3-grams that already occurred earlier in it.

    Words are as in turkish_word_share, numbers included, compared in Turkish
    lower case. 0.0 for fewer than 3 words. Earlier occurrences may overlap, so
    a loop of period p over n words scores (n - p - 2) / (n - 2).
    """
    words = [_key(t) for t, _ in _tokens(answer)]
    grams = list(zip(words, words[1:], words[2:]))
    if not grams:
        return 0.0
    seen = set()
    repeats = 0
    for gram in grams:
        if gram in seen:
            repeats += 1
        else:
            seen.add(gram)
    return repeats / len(grams)
