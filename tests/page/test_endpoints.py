"""The page's public API as a client sees it: every named endpoint with its parameters (name, component, whether a
client may leave it out) in order and its outputs' components, read from Gradio's API info of the page that
app.build_page builds, against endpoints.json beside this file (written from the code as it was before the page
was split into parts). A change here breaks every client and shared script: regenerate the file on purpose only,
with ``python -m tests.page.test_endpoints``."""

import json
from pathlib import Path

import app
from models import presets
from page.tasks import Loading
from tests import tiny_models

GOLDEN = Path(__file__).with_name("endpoints.json")


def endpoints(root: Path) -> dict:
    """Each named endpoint of a page built on a tiny model set (never loaded: the API is the page's, not the
    models')."""
    dirs = tiny_models.model_set_dirs(root, "gpt2")
    preset = presets.load(str(tiny_models.write_preset(root / "tiny.yaml", dirs)), environ={})
    page, _ = app.build_page(Loading(), ["Türkiye'nin başkenti neresidir?"], app.Limits(), preset=preset)
    info = page.get_api_info()
    return {name: {"parameters": [[p["parameter_name"], p["component"], p["parameter_has_default"]]
                                  for p in endpoint["parameters"]],
                   "returns": [r["component"] for r in endpoint["returns"]]}
            for name, endpoint in sorted(info["named_endpoints"].items())}


def test_every_named_endpoint_keeps_its_parameters_and_outputs(tmp_path):
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    now = endpoints(tmp_path)
    assert sorted(now) == sorted(golden)
    for name in golden:
        assert now[name] == golden[name], name
    # The ones the README and the issue name, in case the file is ever regenerated carelessly.
    assert {"/compare", "/score", "/sweep", "/greedy_soup", "/export_mergekit", "/save_merged"} <= set(now)
    assert len(now["/compare"]["returns"]) == 1 + 3 * len(app.COLUMNS)  # notes, then titles, answers, footers


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        found = endpoints(Path(folder))
    lines = [f' {json.dumps(name)}: {{\n  "parameters": [\n'
             + ",\n".join(f"   {json.dumps(p)}" for p in e["parameters"])
             + f'\n  ],\n  "returns": {json.dumps(e["returns"])}\n }}' for name, e in found.items()]
    GOLDEN.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")  # a parameter a line
    print(f"wrote {GOLDEN}")
