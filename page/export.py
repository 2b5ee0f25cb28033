"""The Export tab: a column's merge as the mergekit-yaml config that reproduces it, and saved as a Hugging Face
checkpoint in the owner's save directory (with the visitor's scores on its card, a zip to download when small
enough, and a push to the Hub when the owner allows it). The writing is models/saving.py's."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from models import saving
from page import views
from page.context import PageContext, endpoint
from serving.columns import EXTRA, MERGED
from serving.requests import RequestError, merge_specs
from words import language, say


class ExportPart:
    """The tab's components (created here, inside the page's Tabs) and its handlers."""

    def __init__(self, ctx: PageContext, scores):
        self.ctx, self.scores = ctx, scores  # scores: the measure part's State of this visitor's latest scores
        i18n = ctx.i18n
        with gr.Tab(i18n("export")):
            with gr.Row():
                self.variant = gr.Dropdown([(views.METHOD_NAMES.get(n, n), n) for n in (*MERGED, EXTRA)],
                                           value="slerp", label=i18n("export_variant"))
                self.export_btn = gr.Button(i18n("export_button"), elem_id="export")
            self.recipe = gr.Code(language="yaml", label=i18n("mergekit_config"), elem_id="recipe")
            with gr.Row():
                self.save_name = gr.Textbox(label=i18n("save_name"), elem_id="save_name")
                self.hub_repo = gr.Textbox(label=i18n("hub_repo"), placeholder="user/harman-slerp",
                                           visible=bool(ctx.limits.hub_token), elem_id="hub_repo")
                self.save_btn = gr.Button(i18n("save"), elem_id="save")
            self.save_status = gr.Markdown(elem_id="save_status")
            self.save_file = gr.File(label=i18n("download"), visible=False, elem_id="save_file")

    def export_mergekit(self, variant: str, c, request: gr.Request) -> dict:
        """The mergekit-yaml config that reproduces this column's merge exactly."""
        try:
            specs = merge_specs(c)
            if variant not in specs:
                raise RequestError("err_no_column", variant=variant)
            return {self.recipe: saving.recipe_yaml(self.ctx.loading.get().model_set, specs[variant])}
        except ValueError as err:
            raise self.ctx.refused(err, language(request)) from None

    def save_merged(self, variant: str, name: str, hub_repo: str, scores: dict, c, request: gr.Request) -> dict:
        """Write this column's merge as a Hugging Face checkpoint folder in the allowed directory (with the
        visitor's scores of that column on its card); with a Hub repo given (and a token configured by the
        owner), push it there too."""
        limits, lang, repo = self.ctx.limits, language(request), (hub_repo or "").strip()
        comparison = self.ctx.loading.get()
        model_set = comparison.model_set
        try:
            if repo:
                saving.check_hub_repo(repo, limits.hub_token)
            saving.check_quota(Path(limits.save_dir), limits.max_saves)
            specs = merge_specs(c)
            if variant not in specs:
                raise RequestError("err_no_column", variant=variant)
            recipe_text = saving.recipe_yaml(model_set, specs[variant])
            with comparison.holding({variant: specs[variant]}, materialise=True) as held:
                folder = saving.save_variant(model_set, held.variants[variant], Path(limits.save_dir), name,
                                             recipe_text, scores=(scores or {}).get(variant), label=variant)
        except ValueError as err:
            raise self.ctx.refused(err, lang) from None
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        download = None
        status = say(lang, "saved", folder=folder, mb=size / 2**20)
        if size <= limits.download_mb * 2**20:
            download = str(saving.archive(folder, Path(limits.save_dir) / ".downloads", limits.keep_archives))
        else:
            status += " · " + say(lang, "download_too_big", mb=size / 2**20, limit=limits.download_mb)
        if repo:
            try:
                status += " · " + say(lang, "pushed", url=saving.push_to_hub(folder, repo, limits.hub_token))
            except saving.PushError as err:
                status += f" · ⚠️ {err.text(lang)}"
        return {self.save_status: status, self.save_file: gr.File(download, visible=download is not None)}

    def wire(self) -> None:
        inputs = self.ctx.control_list()
        self.export_btn.click(endpoint(self.export_mergekit, ("variant",)), [self.variant, *inputs], self.recipe,
                              api_name="export_mergekit")
        self.save_btn.click(endpoint(self.save_merged, ("variant", "name", "hub_repo", "scores")),
                            [self.variant, self.save_name, self.hub_repo, self.scores, *inputs],
                            [self.save_status, self.save_file], api_name="save_merged")
