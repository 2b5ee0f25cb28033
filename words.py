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
        "follows_density": "0 ya da boş: TIES yoğunluğunu izler",
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
        "download": "İndir", "export_button": "mergekit yapılandırmasını yaz",
        # Column titles
        "title_schedule": "katman planı", "title_density": "yoğunluk", "title_extra": "ek birleşim",
        # Footers
        "tokens": "{n} token", "rate": "{rate:.1f} token/s", "reused": "önbellekten (değişmedi)",
        "merge_free": "birleştirme yok (katsayılarla)", "merge_ms": "birleştirme {ms:.0f} ms",
        "merge_same": "birleştirme yok (aynı ayar)", "stopped": "durduruldu", "done": "bitti",
        "length": "token sınırında kesildi",
        "pending_merging": "⏳ birleştiriliyor; diğer sütunlar başladı",
        "pending_progress": "⏳ birleştiriliyor: {merged}/{total} tensör birleştirildi; diğer sütunlar başladı",
        "pending_waiting": "⏳ boş birleştirme yuvası bekleniyor",
        # The memory plan's pool: a new setting took the slot of an older one
        "pool_replaced": "havuzun en eski ayarının yuvasına ({slots} yuvadan biri)",
        "turkish_words": "Türkçe sözcük %{share:.0f} ({valid}/{n})", "no_own_words": "sorudan yeni sözcük yok",
        "rejected": "tanınmayan: {words}",
        "repeated": "tekrar %{share:.0f}",
        # The Scores table and the plots
        "col_column": "Sütun", "col_perplexity": "perplexity", "col_chrf": "chrF", "col_bleu": "BLEU",
        "col_rouge_l": "ROUGE-L", "col_exact_match": "tam eşleşme", "col_token_f1": "token F1",
        "col_turkish_words": "Türkçe sözcük %", "col_repeated_3grams": "tekrarlanan 3-gram %",
        "axis_value": "değer", "axis_share": "pay (%)", "axis_layer": "katman", "axis_angle": "açı (°)",
        "progress_perplexity": "perplexity: {column}", "progress_answers": "cevaplar: satır {i}/{n}",
        "progress_point": "{parameter}: nokta {i}/{n}",
        "download_too_big": "İndirilemeyecek kadar büyük ({mb:.0f} MB; bu kurulumun sınırı {limit} MB): klasör "
                            "sunucuda duruyor.",
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
        "loading": "⏳ Modeller yükleniyor; sorunuz yüklenir yüklenmez cevaplanacak.",
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
        # The blind vote (page/vote.py)
        "vote": "Kör oylama", "vote_question_ph": "Bir soru yazın ya da örnek çekin",
        "vote_intro": "Sayfanın iki sütunu, şu anki ayarlarıyla, rastgele seçilir ve sorunuzu adları gizli olarak "
                      "**A** ve **B** diye cevaplar. Hangisi daha iyi? Oyunuzdan sonra adları ve ayarları gösterilir.",
        "vote_example": "Örnek soru çek", "vote_battle": "Karşılaştır", "vote_A": "A daha iyi",
        "vote_B": "B daha iyi", "vote_tie": "Berabere", "vote_both_bad": "İkisi de kötü",
        "vote_next": "Sonraki karşılaştırma (yeni örnek soru)", "vote_board_title": "#### Sıralama (Bradley–Terry)",
        "vote_heatmap_title": "Satırdaki varyantın sütundakine karşı kazanma oranı (beraberlik ve ikisi de kötü: "
                              "yarım galibiyet)",
        "vote_copy_link": "Oylama bağlantısını kopyala", "vote_link": "Bu ayarlarla oylama bağlantısı",
        "vote_export": "Oyları indir (CSV)", "vote_writing": "⏳ Cevaplar yazılıyor…",
        "vote_ready": "Cevaplar hazır: hangisi daha iyi?", "vote_thanks": "Oyunuz kaydedildi.",
        "vote_your_choice": "Oyunuz: **{choice}**", "vote_spec": "birleştirme tanımı (mergekit)",
        "vote_greedy": "açgözlü (greedy)",
        "vote_sampled": "örnekleme (sıcaklık {temperature}, top-p {top_p})",
        "vote_settings": "Üretim: {greedy}, en fazla {tokens} token, tekrar cezası {penalty}, tohum {seed} · "
                         "model seti: {models}",
        "board_variant": "varyant", "board_score": "skor", "board_ci_low": "%95 alt", "board_ci_high": "%95 üst",
        "board_votes": "oy", "board_wins": "galibiyet", "board_ties": "berabere", "board_both_bad": "ikisi de kötü",
        "board_losses": "yenilgi", "board_row_vs_column": "satır \\ sütun",
        "col_bench_accuracy": "TurkMorfBench doğruluğu (%)", "col_bench_real": "gerçek gövde (%)",
        "col_bench_nonce": "uydurma gövde (%)", "col_bench_error": "en sık kazanan çeldirici",
        "bench_error_cell": "{kind} ({n} kez)", "col_bucket": "kova", "progress_bench": "TurkMorfBench: madde {i}/{n}",
        "bench_stopped": "TurkMorfBench durduruldu: ölçülen {n} madde.",
        "bench_buckets": "**Kovaya göre doğruluk (%)**, {n} madde:",
        "sweep_best_bench": "En iyi {parameter} = **{value:.3f}** (TurkMorfBench doğruluğu %{score:.1f}); Model 1: "
                            "%{m1:.1f}, Model 2: %{m2:.1f}",
        "bench_credit": "TurkMorfBench: eCloud Tech. (veri CC BY 4.0, kod Apache-2.0; PyPI `turkmorfbench` 3.8.0), "
                        "paketin kendi ölçüm kuralıyla: altın ile çeldiriciler arasında log-olasılıkla zorunlu seçim.",
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
        "follows_density": "0 or empty: follows the TIES density",
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
        "download": "Download", "export_button": "Write the mergekit config",
        "title_schedule": "layer schedule", "title_density": "density", "title_extra": "extra merge",
        "tokens": "{n} tokens", "rate": "{rate:.1f} tokens/s", "reused": "from the cache (unchanged)",
        "merge_free": "no merge (coefficients)", "merge_ms": "merged in {ms:.0f} ms",
        "merge_same": "no merge (same setting)", "stopped": "stopped", "done": "done",
        "length": "cut at the token limit",
        "pending_merging": "⏳ merging; the other columns have started",
        "pending_progress": "⏳ merging: {merged} of {total} tensors merged; the other columns have started",
        "pending_waiting": "⏳ waiting for a free merge slot",
        # The memory plan's pool: a new setting took the slot of an older one
        "pool_replaced": "into the slot of the pool's least recently used setting (one of {slots})",
        "turkish_words": "Turkish words {share:.0f}% ({valid}/{n})", "no_own_words": "no words beyond the question's",
        "rejected": "not recognised: {words}",
        "repeated": "repeated {share:.0f}%",
        "col_column": "Column", "col_perplexity": "perplexity", "col_chrf": "chrF", "col_bleu": "BLEU",
        "col_rouge_l": "ROUGE-L", "col_exact_match": "exact match", "col_token_f1": "token F1",
        "col_turkish_words": "Turkish words %", "col_repeated_3grams": "repeated 3-grams %",
        "axis_value": "value", "axis_share": "share (%)", "axis_layer": "layer", "axis_angle": "angle (°)",
        "progress_perplexity": "perplexity: {column}", "progress_answers": "greedy answers: row {i}/{n}",
        "progress_point": "{parameter}: point {i}/{n}",
        "download_too_big": "Too large to download ({mb:.0f} MB; this deployment's limit is {limit} MB): the folder "
                            "stays on the server.",
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
        "loading": "⏳ The models are loading; your question is answered as soon as they are in.",
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
        # The blind vote (page/vote.py)
        "vote": "Blind vote", "vote_question_ph": "Type a question or draw an example",
        "vote_intro": "Two of the page's columns, at its current settings, are drawn at random and answer your "
                      "question as **A** and **B**, with no names. Which is better? Names and settings are shown "
                      "after your vote.",
        "vote_example": "Draw an example", "vote_battle": "Compare", "vote_A": "A is better",
        "vote_B": "B is better", "vote_tie": "Tie", "vote_both_bad": "Both are bad",
        "vote_next": "Next battle (a new example question)", "vote_board_title": "#### Leaderboard (Bradley–Terry)",
        "vote_heatmap_title": "How often the row's variant beat the column's (a tie or both bad: half a win)",
        "vote_copy_link": "Copy the judging link", "vote_link": "A judging link with these settings",
        "vote_export": "Download the votes (CSV)", "vote_writing": "⏳ Writing the answers…",
        "vote_ready": "Both answers are in: which is better?", "vote_thanks": "Your vote is stored.",
        "vote_your_choice": "Your vote: **{choice}**", "vote_spec": "merge spec (mergekit)", "vote_greedy": "greedy",
        "vote_sampled": "sampling (temperature {temperature}, top-p {top_p})",
        "vote_settings": "Generation: {greedy}, at most {tokens} tokens, repetition penalty {penalty}, seed {seed} · "
                         "model set: {models}",
        "board_variant": "variant", "board_score": "score", "board_ci_low": "95% low", "board_ci_high": "95% high",
        "board_votes": "votes", "board_wins": "wins", "board_ties": "ties", "board_both_bad": "both bad",
        "board_losses": "losses", "board_row_vs_column": "row \\ column",
        "col_bench_accuracy": "TurkMorfBench accuracy (%)", "col_bench_real": "real stems (%)",
        "col_bench_nonce": "nonce stems (%)", "col_bench_error": "distractor that wins most often",
        "bench_error_cell": "{kind} ({n} times)", "col_bucket": "bucket", "progress_bench": "TurkMorfBench: item {i}/{n}",
        "bench_stopped": "TurkMorfBench stopped: {n} items measured.",
        "bench_buckets": "**Accuracy per bucket (%)**, {n} items:",
        "sweep_best_bench": "Best {parameter} = **{value:.3f}** (TurkMorfBench accuracy {score:.1f}%); Model 1: "
                            "{m1:.1f}%, Model 2: {m2:.1f}%",
        "bench_credit": "TurkMorfBench by eCloud Tech. (data CC BY 4.0, code Apache-2.0; PyPI `turkmorfbench` 3.8.0), "
                        "by the package's own rule: a forced choice between the gold form and distractors by "
                        "log-probability.",
    },
}


# Why a request was refused (errors.py: Refusal), and the controls' names as those messages use them.
REFUSALS: dict[str, dict[str, str]] = {
    "tr": {
        "name_soup_w1": "soup w1", "name_soup_w2": "soup w2", "name_slerp_t": "SLERP t",
        "name_ties_density": "TIES yoğunluğu", "name_ties_w1": "TIES ağırlığı (Model 1)",
        "name_ties_w2": "TIES ağırlığı (Model 2)", "name_ties_density1": "TIES yoğunluğu (Model 1)",
        "name_ties_density2": "TIES yoğunluğu (Model 2)", "name_ties_lambda": "lambda",
        "name_slerp_attn_schedule": "SLERP dikkat planı", "name_slerp_mlp_schedule": "SLERP MLP planı",
        "name_extra_method": "ek yöntem", "name_extra_density": "ek yoğunluk",
        "name_max_new_tokens": "en fazla yeni token", "name_temperature": "sıcaklık", "name_top_p": "top-p",
        "name_repetition_penalty": "tekrar cezası", "name_seed": "tohum (seed)", "name_points": "nokta sayısı",
        "err_number": "{name}: bir sayı bekleniyordu, gelen {value!r}",
        "err_finite": "{name}: {value!r} sonlu bir sayı değil",
        "err_range": "{name}: {x:g} izin verilen {bracket}{lo:g}, {hi:g}] aralığının dışında",
        "err_whole": "{name}: bir tam sayı bekleniyordu, gelen {value!r}",
        "err_schedule_syntax": "{name}: {text!r} [0, 0.5, 1] gibi bir liste değil",
        "err_schedule_length": "{name}: [0, 0.5, 1] gibi 1 ile 64 arasında sayıdan oluşan bir liste bekleniyordu, "
                               "gelen {text!r}",
        "err_soup_zero": "soup ağırlıkları: w1 ve w2'nin ikisi de 0; en az bir modele 0'dan büyük bir ağırlık verin",
        "err_ties_zero": "TIES ağırlıkları: ikisi de 0; en az bir modele 0'dan büyük bir ağırlık verin",
        "err_extra_method": "ek yöntem: {method!r} şunlardan biri değil: {choices}",
        "err_question_type": "soru: metin bekleniyordu, gelen {kind}",
        "err_question_empty": "Soru boş: üretmeden önce bir soru yazın.",
        "err_question_chars": "soru: {n} karakter, bu kurulumun {limit} karakterlik sınırını aşıyor; daha kısa bir "
                              "soru sorun",
        "err_question_tokens": "soru: {n} token, bu kurulumun {limit} tokenlik sınırını aşıyor; daha kısa bir soru "
                               "sorun",
        "err_no_chat_template": "istem biçimi 'chat_template' seçildi ama tokenizer'ın sohbet şablonu yok; "
                                "--prompt-format plain_qa (ya da auto) kullanın veya hazır ayarda prompt_format "
                                "belirleyin",
        "err_unknown_format": "bilinmeyen istem biçimi {name!r}; şunlardan biri bekleniyordu: {choices}",
        "err_no_room": "max_new_tokens={n}, {context} tokenlik bağlamda isteme yer bırakmıyor; en fazla yeni token "
                       "sayısını düşürün.",
        "err_no_column": "{variant}: böyle bir birleşim sütunu yok; önce bir ek yöntem seçin",
        "err_cannot_score": "{columns} skorlanamaz: önce bir ek yöntem seçin",
        "err_not_sweepable": "tarama: {parameter!r} harman'ın tarayabildiği bir parametre değil; şunlardan birini "
                             "seçin: {choices}",
        "err_sweep_extra": "tarama: extra_density ek sütuna ait; önce bir ek yöntem seçin",
        "err_ties_density_conflict": "TIES yoğunluğu {density:g}, iki modelin kendi yoğunlukları ise {d1:g} ve "
                                     "{d2:g}: hangisi geçerli belli değil. Model başına yoğunluklardan birini 0 "
                                     "yapın (TIES yoğunluğunu izler) ya da TIES yoğunluğunu varsayılanına "
                                     "({default:g}) getirin",
        "err_sweep_few": "{lo:g} ile {hi:g} arasında bir tarama en az 2 nokta ister, gelen {n}",
        "err_sweep_many": "{n} noktalık bir tarama {cap} sınırını aşıyor: her nokta bir birleştirme ve bir held-out "
                          "değerlendirmesidir; en fazla {cap} nokta isteyin",
        "err_heldout_unknown": "held-out dosyası {path!r} bu kurulumun sunduklarından değil: {choices}",
        "err_rows": "satır sayısı: {n} izin verilen [2, {limit}] aralığının dışında",
        "err_bench_items": "TurkMorfBench madde sayısı: {n} izin verilen [1, {limit}] aralığının dışında; 1 ile "
                           "{limit} arasında bir sayı seçin",
        "err_bench_missing": "TurkMorfBench paketi bu sunucuda kurulu değil; sahibi `pip install "
                             "turkmorfbench==3.8.0` ile (requirements.txt) kurup uygulamayı yeniden başlatmalı",
        "err_too_many": "bu ziyaretçinin zaten {limit} isteği çalışıyor; birinin bitmesini bekleyin ya da durdurun",
        "err_hub_token": "{repo!r} deposuna göndermek bir Hub token'ı ister ve bu kurulumda yok (sahibi HF_TOKEN "
                         "ayarlar); yalnızca yerel kaydetmek için Hub deposunu boş bırakın",
        "err_hub_repo": "Hub deposu {repo!r} geçerli bir depo kimliği (sahip/ad) değil: {detail}",
        "err_save_name": "kayıt adı {name!r}: harf ya da rakamla başlayan 1-100 harf, rakam, '.', '_' veya '-' "
                         "kullanın (klasör adı olur)",
        "err_save_outside": "kayıt adı {name!r} izin verilen {root} klasörünün dışını gösteriyor; hiçbir şey "
                            "yazılmadı",
        "err_save_exists": "{target} zaten var ve boş değil; başka bir ad seçin (hiçbir şeyin üzerine yazılmadı)",
        "err_save_quota": "bu kurulum en fazla {limit} kayıtlı birleşim tutar ve {root} {n} tane tutuyor; sahibi "
                          "bazılarını silebilir ya da --max-saves değerini artırabilir",
        "err_push": "{folder} klasörüne kaydedildi, ama Hub deposu {repo!r} için gönderim başarısız oldu: {detail}. "
                    "Klasör duruyor; daha sonra `hf upload {repo} {folder}` ile gönderin",
        # The blind vote's refusals
        "err_vote_choice": "oy {choice!r} geçerli değil: {choices} seçeneklerinden biri olmalı (hiçbir şey kaydedilmedi)",
        "err_vote_unknown": "{battle!r} numaralı bir karşılaştırma yok ya da süresi doldu (oylanmayan karşılaştırmalar "
                            "{minutes} dakika sonra unutulur); yeni bir karşılaştırma başlatın",
        "err_vote_other_session": "{battle!r} karşılaştırması başka bir oturuma gösterildi; yalnızca kendi "
                                  "karşılaştırmanıza oy verebilirsiniz",
        "err_vote_twice": "{battle!r} karşılaştırmasına zaten oy verildi; her karşılaştırmaya bir oy. Sonraki "
                          "karşılaştırmaya geçin",
        "err_vote_unfinished": "{battle!r} karşılaştırmasının cevapları henüz bitmedi; ikisi de bitince oy verin",
        "err_vote_rate": "bir ziyaretçi dakikada en fazla {limit} oy verebilir; {seconds} saniye sonra yeniden deneyin",
        "err_vote_no_question": "karşılaştırma için bir soru yazın ya da örnek çekin",
        "err_battle_columns": "bir karşılaştırma için en az iki sütun gerekir",
        "err_store_open": "oy deposu {path} açılamadı: {detail}; --votes ile başka bir dosya verin",
        "err_store_schema": "oy deposu {path} şema sürümü {found}, bu sunucu en fazla {known} okuyabilir; harman'ı "
                            "güncelleyin ya da --votes ile başka bir dosya verin",
    },
    "en": {
        "name_soup_w1": "soup w1", "name_soup_w2": "soup w2", "name_slerp_t": "SLERP t",
        "name_ties_density": "TIES density", "name_ties_w1": "TIES weight (Model 1)",
        "name_ties_w2": "TIES weight (Model 2)", "name_ties_density1": "TIES density (Model 1)",
        "name_ties_density2": "TIES density (Model 2)", "name_ties_lambda": "lambda",
        "name_slerp_attn_schedule": "SLERP attention schedule", "name_slerp_mlp_schedule": "SLERP MLP schedule",
        "name_extra_method": "extra method", "name_extra_density": "extra density",
        "name_max_new_tokens": "max new tokens", "name_temperature": "temperature", "name_top_p": "top-p",
        "name_repetition_penalty": "repetition penalty", "name_seed": "seed", "name_points": "points",
        "err_number": "{name}: expected a number, got {value!r}",
        "err_finite": "{name}: {value!r} is not a finite number",
        "err_range": "{name}: {x:g} is outside the allowed range {bracket}{lo:g}, {hi:g}]",
        "err_whole": "{name}: expected a whole number, got {value!r}",
        "err_schedule_syntax": "{name}: {text!r} is not a list like [0, 0.5, 1]",
        "err_schedule_length": "{name}: expected a list of 1 to 64 numbers like [0, 0.5, 1], got {text!r}",
        "err_soup_zero": "soup weights: w1 and w2 are both 0; give at least one model a weight above 0",
        "err_ties_zero": "TIES weights: both are 0; give at least one model a weight above 0",
        "err_extra_method": "extra method: {method!r} is not one of {choices}",
        "err_question_type": "question: expected text, got {kind}",
        "err_question_empty": "The question is empty: type a question before generating.",
        "err_question_chars": "question: {n} characters is over this deployment's limit of {limit}; ask a shorter "
                              "question",
        "err_question_tokens": "question: {n} tokens is over this deployment's limit of {limit}; ask a shorter "
                               "question",
        "err_no_chat_template": "prompt format 'chat_template' was chosen but the tokenizer has no chat template; "
                                "use --prompt-format plain_qa (or auto), or set prompt_format in the preset",
        "err_unknown_format": "unknown prompt format {name!r}; expected one of {choices}",
        "err_no_room": "max_new_tokens={n} leaves no room for the prompt in a context of {context} tokens; lower max "
                       "new tokens.",
        "err_no_column": "{variant}: no such merged column; choose an extra method first",
        "err_cannot_score": "cannot score {columns}: choose an extra method first",
        "err_not_sweepable": "sweep: {parameter!r} is not a parameter harman can sweep; choose one of {choices}",
        "err_sweep_extra": "sweep: extra_density belongs to the extra column; choose an extra method first",
        "err_ties_density_conflict": "the TIES density is {density:g} but the two models' own densities are {d1:g} "
                                     "and {d2:g}: which one holds is unclear. Set one per-model density to 0 (it "
                                     "then follows the TIES density) or the TIES density back to its default "
                                     "({default:g})",
        "err_sweep_few": "a sweep from {lo:g} to {hi:g} needs at least 2 points, got n={n}",
        "err_sweep_many": "a sweep of n={n} points is over the cap of {cap}: each point is a merge plus a held-out "
                          "evaluation; ask for at most {cap} points",
        "err_heldout_unknown": "held-out file {path!r} is not one this deployment offers: {choices}",
        "err_rows": "rows: {n} is outside the allowed range [2, {limit}]",
        "err_bench_items": "TurkMorfBench items: {n} is outside the allowed range [1, {limit}]; choose a number "
                           "from 1 to {limit}",
        "err_bench_missing": "the TurkMorfBench package is not installed on this server; the owner should install "
                             "it with `pip install turkmorfbench==3.8.0` (requirements.txt) and restart the app",
        "err_too_many": "this visitor already has {limit} requests running; wait for one to finish or stop it",
        "err_hub_token": "pushing to {repo!r} needs a Hub token, and this deployment has none configured (the owner "
                         "sets HF_TOKEN); leave the Hub repo empty to save locally only",
        "err_hub_repo": "Hub repo {repo!r} is not a valid repo id (owner/name): {detail}",
        "err_save_name": "save name {name!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or "
                         "digit (it becomes a folder name)",
        "err_save_outside": "save name {name!r} points outside the allowed directory {root}; nothing was written",
        "err_save_exists": "{target} already exists and is not empty; choose another name (nothing was overwritten)",
        "err_save_quota": "this deployment keeps at most {limit} saved merges and {root} holds {n}; the owner can "
                          "remove some or raise --max-saves",
        "err_push": "saved at {folder}, but pushing it to the Hub repo {repo!r} failed: {detail}. The folder is kept; "
                    "push it later with `hf upload {repo} {folder}`",
        # The blind vote's refusals
        "err_vote_choice": "vote {choice!r} is not valid: it must be one of {choices} (nothing was stored)",
        "err_vote_unknown": "there is no battle {battle!r}, or it expired (battles not voted on are forgotten after "
                            "{minutes} minutes); start a new battle",
        "err_vote_other_session": "battle {battle!r} was served to another session; you can vote only on your own "
                                  "battles",
        "err_vote_twice": "battle {battle!r} already has its vote; one vote per battle. Go on to the next battle",
        "err_vote_unfinished": "the answers of battle {battle!r} have not finished; vote when both are complete",
        "err_vote_rate": "a visitor may cast at most {limit} votes a minute; try again in {seconds} seconds",
        "err_vote_no_question": "type a question for the battle, or draw an example",
        "err_battle_columns": "a battle needs at least two columns",
        "err_store_open": "the vote store {path} could not be opened: {detail}; give another file with --votes",
        "err_store_schema": "the vote store {path} has schema version {found}, and this server reads up to {known}; "
                            "update harman or give another file with --votes",
    },
}
for _lang in LANGUAGES:
    TEXT[_lang].update(REFUSALS[_lang])


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


# The question set (page/question_set.py, serving/question_set.py): the seed's results table, live.
QUESTION_SET: dict[str, dict[str, str]] = {
    "tr": {
        "set_title": "Soru seti: her sütun birkaç soruyu birden cevaplar",
        "set_questions": "Sorular (her satıra bir soru; boş satırlar atlanır)",
        "set_add_example": "Örnek soru ekle", "set_heldout": "Ayrılmış (held-out) veriden",
        "set_heldout_n": "Soru sayısı", "set_add_heldout": "Ayrılmış sorulardan ekle",
        "set_answer": "Seti cevapla", "set_copy_link": "Setin bağlantısını kopyala",
        "set_downloads": "İndir (Markdown, CSV)", "set_question": "Soru",
        "set_same": "= {column}", "set_same_title": "{column} sütunuyla aynı cevap",
        "set_cells": "{done}/{total} hücre", "set_stopped": "Durduruldu: {done}/{total} hücre yazıldı.",
        "set_identical": "{n}/{total} cevap önceki bir sütunla aynı",
        "set_summary_none": "henüz biten cevap yok",
        "set_link_too_many": "⚠️ Bu bağlantıdaki sette {n} soru var; bu kurulum bir sette en fazla {limit} soru "
                             "cevaplıyor. Fazlasını silip «Seti cevapla»ya basın.",
        "err_set_empty": "soru seti boş: her satıra bir soru yazın",
        "err_set_many": "soru seti: {n} soru, bu kurulumun set başına {limit} soruluk sınırını aşıyor; soruları "
                        "azaltın",
        "err_set_line_chars": "soru seti, satır {line}: {n} karakter, bu kurulumun {limit} karakterlik sınırını "
                              "aşıyor; bu soruyu kısaltın",
        "err_set_line_tokens": "soru seti, satır {line}: {n} token, bu kurulumun {limit} tokenlik sınırını aşıyor; "
                               "bu soruyu kısaltın",
        "err_set_line_type": "soru seti, satır {line}: metin bekleniyordu, gelen {kind}",
    },
    "en": {
        "set_title": "Question set: every column answers several questions at once",
        "set_questions": "Questions (one per line; empty lines are skipped)",
        "set_add_example": "Add an example question", "set_heldout": "From held-out data",
        "set_heldout_n": "Questions", "set_add_heldout": "Add held-out questions",
        "set_answer": "Answer the set", "set_copy_link": "Copy the set's link",
        "set_downloads": "Download (Markdown, CSV)", "set_question": "Question",
        "set_same": "= {column}", "set_same_title": "the same answer as {column}",
        "set_cells": "{done}/{total} cells", "set_stopped": "Stopped: {done}/{total} cells written.",
        "set_identical": "{n}/{total} answers repeat an earlier column's",
        "set_summary_none": "no finished answer yet",
        "set_link_too_many": "⚠️ This link's set has {n} questions; this deployment answers at most {limit} in a "
                             "set. Remove the extra ones and press “Answer the set”.",
        "err_set_empty": "question set: it is empty; write one question per line",
        "err_set_many": "question set: {n} questions is over this deployment's limit of {limit} per set; ask fewer",
        "err_set_line_chars": "question set, line {line}: {n} characters is over this deployment's limit of "
                              "{limit}; shorten this question",
        "err_set_line_tokens": "question set, line {line}: {n} tokens is over this deployment's limit of {limit}; "
                               "shorten this question",
        "err_set_line_type": "question set, line {line}: expected text, got {kind}",
    },
}
for _lang in LANGUAGES:
    TEXT[_lang].update(QUESTION_SET[_lang])
