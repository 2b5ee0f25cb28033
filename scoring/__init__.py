"""Scoring merged variants on held-out data: Turkish text metrics (metrics), held-out
TSV sets (heldout), answer perplexity (perplexity) and merge-setting searches (sweep).

Import the module you need; metrics and sweep do not pull in torch.
"""
