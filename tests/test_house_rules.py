"""shared/DESIGN.md's house rules that can be read from the source: no function of the project's own code (bench/
and tests/ aside) runs over 100 lines, methods and functions nested in functions included."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OWN = ["app.py", "words.py", "errors.py", "page", "serving", "models", "merging", "scoring", "prompts", "training"]
LONGEST = 100  # lines, from the def (or its first decorator's line: not counted) to the last line of its body


def own_files():
    for name in OWN:
        path = ROOT / name
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def functions(path: Path):
    """(qualified name, first line, lines) of every function and method in a file."""
    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                yield name, child.lineno, child.end_lineno - child.lineno + 1
                yield from visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}{child.name}.")
            else:
                yield from visit(child, prefix)

    yield from visit(ast.parse(path.read_text(encoding="utf-8")), "")


def test_the_reader_counts_nested_functions_and_methods(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def outer():\n    def inner():\n        return 1\n    return inner\n\n\n"
                      "class A:\n    def method(self):\n        if True:\n            pass\n", encoding="utf-8")
    assert list(functions(source)) == [("outer", 1, 4), ("outer.inner", 2, 2), ("A.method", 8, 3)]


def test_no_function_runs_over_100_lines():
    files = list(own_files())
    assert len(files) > 50  # the folders are read, not missed
    long = [f"{path.relative_to(ROOT)}:{line} {name} ({n} lines)"
            for path in files for name, line, n in functions(path) if n > LONGEST]
    assert long == []
