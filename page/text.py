"""Every text the visitor reads, in Turkish and English: the page's labels (gr.I18n picks them by the browser's
language) and the text the server writes (titles, footers, diagnostics, notes, errors), chosen by the request's
language with ``say``. A key missing from one language is a test failure, not an English fallback.
"""

from __future__ import annotations

LANGUAGES = ("tr", "en")

TEXT: dict[str, dict[str, str]] = {
    "tr": {
        # The page's labels
        "intro": "Bir temel modelin iki ince ayarını ve birleşimlerini yan yana karşılaştırın. Bir soru yazın, "
                 "Enter'a basın; kaydırıcıyı bıraktığınızda yalnızca o birleşim yeniden yapılır.",
        "question": "Soru", "question_ph": "Türkçe bir soru yazın ve Enter'a basın",
        "generate": "Üret", "stop": "Durdur", "examples": "Örnek sorular",
        "merge": "Birleştirme ayarları", "soup_w1": "Soup w1 (Model 1)", "soup_w2": "Soup w2 (Model 2)",
        "slerp_t": "SLERP t (0 = Model 1, 1 = Model 2)", "ties_density": "TIES yoğunluğu",
        "advanced": "Gelişmiş birleştirme ayarları", "ties_w1": "TIES ağırlığı (Model 1)",
        "ties_w2": "TIES ağırlığı (Model 2)", "ties_d1": "TIES yoğunluğu (Model 1)",
        "ties_d2": "TIES yoğunluğu (Model 2)", "lambda": "lambda",
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
        "hub_repo": "Hub deposu (isteğe bağlı, HF_TOKEN ile)", "save": "Birleştirilmiş modeli kaydet",
        "download": "İndir",
        # Column titles
        "title_schedule": "katman planı", "title_density": "yoğunluk", "title_extra": "ek birleşim",
        # Footers
        "tokens": "{n} token", "rate": "{rate:.1f} token/s", "reused": "önbellekten (değişmedi)",
        "merge_free": "birleştirme yok (katsayılarla)", "merge_ms": "birleştirme {ms:.0f} ms",
        "merge_same": "birleştirme yok (aynı ayar)", "stopped": "durduruldu", "done": "bitti",
        "turkish_words": "Türkçe sözcük %{share:.0f}", "repeated": "tekrar %{share:.0f}",
        # Diagnostics, brief and full
        "brief_fallback": "doğrusala düşen tensör %{share:.0f}", "brief_angle": "ortalama açı {angle:.2f}°",
        "brief_kept": "tutulan %{share:.0f}", "brief_conflict": "işaret çatışması %{share:.0f}",
        "brief_agree": "seçilen işarete uyan M1/M2 %{a:.0f}/%{b:.0f}", "brief_distance": "uzaklık M1/M2 {d}",
        "diag_fallback": "tensörlerin %{share:.0f}'i doğrusal ara değerlemeye düştü (|cos| > 0.9995: iki ince ayar "
                         "neredeyse paralel)",
        "diag_kept": "tutulan %{share:.1f}", "diag_conflict": "işaret çatışması %{share:.1f}",
        "diag_agree": "seçilen işaretlere uyan pay (Model 1 / Model 2): %{a:.0f} / %{b:.0f}",
        "diag_distance": "ebeveynlere göreli uzaklık (Model 1 / Model 2): {d}",
        "diag_coefficients": "katsayılarla, birleştirilmiş kopya yok",
        "diag_none": "Henüz birleştirme yapılmadı.",
        # Notes, sweeps, greedy soup, saving, errors
        "dropped": "⚠️ Soru bağlama sığmadı: baştan {n} token kesildi.",
        "waiting": "⏳ Boş birleştirme yuvası bekleniyor: havuzun tüm yuvaları başka cevaplarca kullanılıyor.",
        "sweep_stopped": "Tarama durduruldu.", "sweep_best_marker": "en iyi: {value:.2f}",
        "sweep_best": "En iyi {parameter} = **{value:.3f}** (perplexity {score:.3f}); Model 1: {m1:.3f}, "
                      "Model 2: {m2:.3f}",
        "sweep_partial": " · durduruldu: ölçülen {n} nokta", "series_words": "Türkçe sözcük payı",
        "series_repeated": "tekrarlanan 3-gram payı", "series_parent_words": "{label}: Türkçe sözcük payı",
        "greedy_soup_result": "Greedy soup: {ingredients} → perplexity {score:.3f} (tek başına: {alone})",
        "greedy_soup_stopped": "Greedy soup durduruldu.",
        "saved": "Kaydedildi: `{folder}` ({mb:.1f} MB)", "pushed": "Hub: {url}",
        "error": "İstek reddedildi", "scores_stopped": "Skorlama durduruldu: ölçülen {n} satır.",
    },
    "en": {
        "intro": "Compare a base model's two fine-tunes and their merges side by side. Type a question and press "
                 "Enter; releasing a slider redoes only the merge it governs.",
        "question": "Question", "question_ph": "Type a question (in Turkish) and press Enter",
        "generate": "Generate", "stop": "Stop", "examples": "Example questions",
        "merge": "Merge settings", "soup_w1": "Soup w1 (Model 1)", "soup_w2": "Soup w2 (Model 2)",
        "slerp_t": "SLERP t (0 = Model 1, 1 = Model 2)", "ties_density": "TIES density",
        "advanced": "Advanced merge settings", "ties_w1": "TIES weight (Model 1)", "ties_w2": "TIES weight (Model 2)",
        "ties_d1": "TIES density (Model 1)", "ties_d2": "TIES density (Model 2)", "lambda": "lambda",
        "attn_schedule": "SLERP attention layer schedule, e.g. [0, 0.5, 0.3, 0.7, 1]",
        "mlp_schedule": "SLERP MLP layer schedule, e.g. [1, 0.5, 0.7, 0.3, 0]",
        "extra_method": "Extra merged column (method)", "extra_density": "Extra merge density",
        "generation": "Generation settings", "max_new_tokens": "Max new tokens", "temperature": "Temperature",
        "top_p": "top-p", "repetition_penalty": "Repetition penalty", "greedy": "Greedy decoding",
        "seed": "Seed", "copy_link": "Copy link", "link": "Shareable link", "answer": "Answer",
        "keep": "Measure and keep", "heldout": "Held-out data", "rows": "Rows", "scores": "Scores",
        "score": "Score", "sweep": "Sweep", "sweep_param": "Parameter", "sweep_points": "Points",
        "run_sweep": "Run sweep", "sweep_turkish": "Also plot the Turkish check (answers to the first 8 rows)",
        "apply_best": "Apply the best point", "greedy_soup": "Greedy soup", "diagnostics": "Diagnostics",
        "export": "Export", "export_variant": "Merge", "mergekit_config": "mergekit config",
        "save_name": "Folder name", "hub_repo": "Hub repo (optional, uses HF_TOKEN)", "save": "Save merged model",
        "download": "Download",
        "title_schedule": "layer schedule", "title_density": "density", "title_extra": "extra merge",
        "tokens": "{n} tokens", "rate": "{rate:.1f} tokens/s", "reused": "from the cache (unchanged)",
        "merge_free": "no merge (coefficients)", "merge_ms": "merged in {ms:.0f} ms",
        "merge_same": "no merge (same setting)", "stopped": "stopped", "done": "done",
        "turkish_words": "Turkish words {share:.0f}%", "repeated": "repeated {share:.0f}%",
        "brief_fallback": "tensors falling back to linear {share:.0f}%", "brief_angle": "mean angle {angle:.2f}°",
        "brief_kept": "kept {share:.0f}%", "brief_conflict": "sign conflicts {share:.0f}%",
        "brief_agree": "agreeing with the elected sign M1/M2 {a:.0f}%/{b:.0f}%", "brief_distance": "distance M1/M2 {d}",
        "diag_fallback": "{share:.0f}% of tensors fell back to linear interpolation (|cos| > 0.9995: the two "
                         "fine-tunes are nearly parallel)",
        "diag_kept": "kept {share:.1f}%", "diag_conflict": "sign conflicts {share:.1f}%",
        "diag_agree": "share agreeing with the elected signs (Model 1 / Model 2): {a:.0f}% / {b:.0f}%",
        "diag_distance": "relative distance to the parents (Model 1 / Model 2): {d}",
        "diag_coefficients": "from coefficients, no merged copy",
        "diag_none": "No merge yet.",
        "dropped": "⚠️ The question did not fit the context: {n} tokens were cut from its start.",
        "waiting": "⏳ Waiting for a free merge slot: every slot of the pool is in use by other answers.",
        "sweep_stopped": "Sweep stopped.", "sweep_best_marker": "best: {value:.2f}",
        "sweep_best": "Best {parameter} = **{value:.3f}** (perplexity {score:.3f}); Model 1: {m1:.3f}, "
                      "Model 2: {m2:.3f}",
        "sweep_partial": " · stopped: {n} points measured", "series_words": "Turkish-word share",
        "series_repeated": "repeated 3-gram share", "series_parent_words": "{label}: Turkish-word share",
        "greedy_soup_result": "Greedy soup: {ingredients} → perplexity {score:.3f} (alone: {alone})",
        "greedy_soup_stopped": "Greedy soup stopped.",
        "saved": "Saved: `{folder}` ({mb:.1f} MB)", "pushed": "Hub: {url}",
        "error": "Request refused", "scores_stopped": "Scoring stopped: {n} rows measured.",
    },
}


def say(lang: str, key: str, **values) -> str:
    """The text ``key`` in the visitor's language, filled in."""
    return TEXT[lang if lang in TEXT else "en"][key].format(**values)


def language(request) -> str:
    """The visitor's language from a gr.Request (its Accept-Language header): Turkish or English."""
    headers = getattr(request, "headers", None) or {}
    accepted = headers.get("accept-language", "") if hasattr(headers, "get") else ""
    for part in accepted.split(","):
        code = part.split(";")[0].strip().lower()
        if code.startswith("tr"):
            return "tr"
        if code.startswith("en"):
            return "en"
    return "en"


def labels() -> dict[str, dict[str, str]]:
    """The entries gr.I18n takes."""
    return TEXT
