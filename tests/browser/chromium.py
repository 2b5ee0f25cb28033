"""What both browser tests share: where Chromium and the screenshots are, waiting on the page, and the check that
a page shows none of the other language's words."""

import shutil
import time

from tests.browser.running_app import ROOT

ARTIFACTS = ROOT / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def wait_until(predicate, timeout=180, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def foreign_fragments(lang: str) -> list[str]:
    """Pieces of the other language's page text that never occur in this language's: none may be on the page."""
    from models import presets
    from words import TEXT

    other = "en" if lang == "tr" else "tr"
    preset = presets.load("default", environ={})
    own_extra = [preset.title_en, preset.model1_label_en, preset.model2_label_en] if lang == "en" else [
        preset.title, preset.model1_label, preset.model2_label]
    other_extra = [preset.title, preset.model1_label, preset.model2_label] if lang == "en" else [
        preset.title_en, preset.model1_label_en, preset.model2_label_en]
    own = " ".join([*TEXT[lang].values(), *own_extra])
    pieces = []
    for value in [*TEXT[other].values(), *other_extra]:
        for piece in value.replace("}", "{").split("{")[::2]:
            piece = piece.strip(" ·:%()/.,;-–—⚠️⏳`*")
            if len(piece) >= 5 and piece not in own:
                pieces.append(piece)
    return pieces


def assert_in_language(page, lang: str):
    text = page.locator("body").inner_text()
    found = [piece for piece in foreign_fragments(lang) if piece in text]
    assert not found, f"the {lang} page shows the other language's text: {found}"
