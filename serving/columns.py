"""The page's columns, in the order it shows them: the two fine-tunes, the merged columns every request has, each
with the merge method it shows (its record: merging/methods.py), and the extra column, whose method the visitor
chooses (merging.EXTRA_METHODS). Everything that lists the columns (the page, the API, the benchmarks) reads them
here."""

PARENTS = ("model1", "model2")
# The merged columns every request has, and the method each shows, by mergekit name.
COLUMN_METHODS = {"soup": "linear", "slerp": "slerp", "ties": "ties"}
MERGED = tuple(COLUMN_METHODS)
EXTRA = "extra"  # shown only when the request chooses its method
FIXED = (*PARENTS, *MERGED)  # the columns of every request
COLUMNS = (*FIXED, EXTRA)


def request_columns(extra_method: str) -> tuple[str, ...]:
    """The columns a request with this extra-column choice shows ("": none)."""
    return COLUMNS if extra_method else FIXED
