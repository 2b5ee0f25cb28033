"""The house's layers (docs/architecture.md): a module imports only from its own layer or below, and never another
module's private names. Read from the source with ast, so a lazy import inside a function counts too."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["words", "errors", "merging", "prompts", "models", "serving", "training", "scoring", "page", "app"]
RANK = {"words": 0, "errors": 1, "merging": 2, "prompts": 2, "models": 3, "serving": 4, "training": 4,
        "scoring": 5, "page": 6, "app": 7}


def project_modules():
    for name in LAYERS:
        folder = ROOT / name
        yield from (sorted(folder.rglob("*.py")) if folder.is_dir() else [ROOT / f"{name}.py"])


def imports(path: Path):
    """(imported top-level package, imported module, names) for every import of the project in a file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0], node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.split(".")[0], a.name, []


def test_no_module_imports_up_the_layers():
    upward = []
    for path in project_modules():
        own = path.relative_to(ROOT).parts[0].removesuffix(".py")
        for top, module, _ in imports(path):
            if top in RANK and RANK[top] > RANK[own]:
                upward.append(f"{path.relative_to(ROOT)} imports {module}")
    assert upward == []


def test_the_bottom_layer_imports_nothing_of_the_project_but_words():
    assert [m for top, m, _ in imports(ROOT / "words.py") if top in RANK] == []
    assert {top for top, _, _ in imports(ROOT / "errors.py") if top in RANK} <= {"words"}


def test_no_module_imports_another_modules_private_names():
    private = []
    for path in project_modules():
        for top, module, names in imports(path):
            if top in RANK:
                private += [f"{path.relative_to(ROOT)}: {module}.{n}" for n in names
                            if n.startswith("_") and not n.startswith("__")]
    assert private == []
