"""The Diagnostics tab: the merge engine's figures of this visitor's latest answer (SLERP's fallback share and
angles, TIES' kept and conflicting signs, distances to the parents) and SLERP's angle per layer, shown after
every answer. What they say is page/views.py's."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from page import views
from page.context import PageContext
from words import language, say


class DiagnosticsPart:
    """The tab's components (created here, inside the page's Tabs) and its handler."""

    def __init__(self, ctx: PageContext):
        with gr.Tab(ctx.i18n("diagnostics")):
            self.text = gr.Markdown(elem_id="diagnostics")
            self.angle_plot = gr.LinePlot(x="layer", y="angle", visible=False, elem_id="angle_plot")

    def show_diagnostics(self, reports: dict, request: gr.Request) -> dict:
        """The latest answer's merge figures, and SLERP's angle per layer when it has them."""
        lang = language(request)
        angles = pd.DataFrame(views.angle_rows(reports or {}), columns=["layer", "angle"])
        last = int(angles["layer"].max()) if len(angles) else 1
        return {self.text: views.diagnostics_markdown(reports or {}, lang),
                self.angle_plot: gr.LinePlot(angles, x_title=say(lang, "axis_layer"), y_title=say(lang, "axis_angle"),
                                             x_lim=[0, last], visible=len(angles) > 0)}

    def wire(self, answer_events: list, reports) -> None:
        """After every event that answers the question."""
        for event in answer_events:
            event.then(self.show_diagnostics, reports, [self.text, self.angle_plot], api_visibility="private")
