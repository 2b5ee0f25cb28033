"""The page in parts (the text in both languages is words.py, at the bottom). Each part is a module with a class
that builds its components where app.py calls it, handlers of named parameters that return outputs by
component, and its events (``wire``): controls.py, compare.py, question_set.py, measure.py, diagnostics.py,
export.py, vote.py; what they share is context.py's. Without Gradio: the rendered titles, footers, diagnostics and
curves (views.py), shared links (links.py) and background work with a per-visitor Stop (tasks.py)."""
