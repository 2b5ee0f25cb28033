"""What the visitor reads and sets on the page, without Gradio (the text in both languages is words.py, at the
bottom): the rendered titles, footers, diagnostics and curves (views.py), shared links (links.py) and the
background-task helper for scores and sweeps (tasks.py). app.py builds the components from serving/controls.py
and wires them to these."""
