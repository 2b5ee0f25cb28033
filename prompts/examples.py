"""Example questions shown under the question box: kept as data in prompts/examples.yaml."""

from __future__ import annotations

from pathlib import Path

import yaml

EXAMPLES = Path(__file__).parent / "examples.yaml"


def load(path: Path = EXAMPLES) -> list[dict]:
    """The examples in file order: the seed experiment's five questions first, then harman's own."""
    items = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("examples") or []
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict) or not str(item.get("text", "")).strip():
            raise ValueError(f"{path}: example {i} has no 'text'; each example is {{text: ..., kind: ..., source: ...}}")
    return items


def questions(path: Path = EXAMPLES) -> list[str]:
    return [item["text"] for item in load(path)]


def seed_questions(path: Path = EXAMPLES) -> list[str]:
    """The seed experiment's five questions (its results table), in its order."""
    return [item["text"] for item in load(path) if item.get("source") == "seed"]
