"""Held-out sets in the seed's TSV formats.

Two formats, told apart by the header (UTF-8, tab-separated, one row a line):
  qa            soru (question), insan (human answer), makine (machine answer)
  instructions  talimat (instruction), giris (input, may be empty), cikti (output)

Quotes are ordinary characters: the seed writes answers such as
"Dijital İletişimin Gücü: ..." with their quotes, and those belong to the
reference. So a field cannot hold a tab or a newline.

Errors give the file, the line (the header is line 1) and the column.
"""

from dataclasses import dataclass
from pathlib import Path

# Column roles per format: (question, input, reference, short reference).
# giris may be empty (the seed leaves it blank when an instruction needs no input);
# so may makine, which only ever serves as a secondary reference.
_COLUMNS = {
    "qa": ("soru", None, "insan", "makine"),
    "instructions": ("talimat", "giris", "cikti", None),
}
_REQUIRED = {"soru", "insan", "talimat", "cikti"}


class HeldoutError(ValueError):
    pass


@dataclass(frozen=True)
class HeldoutRow:
    question: str
    giris: str
    reference: str
    # qa: the makine column. In the seed it is another system's answer and can
    # disagree with insan, so score against reference and treat this as a hint.
    short_reference: str = ""


@dataclass(frozen=True)
class HeldoutSet:
    path: Path
    format: str  # "qa" or "instructions"
    rows: list[HeldoutRow]


def load_heldout(path: str | Path, limit: int | None = None) -> HeldoutSet:
    """Read a held-out TSV; with limit, only its first `limit` data rows."""
    path = Path(path)
    if limit is not None and limit < 1:
        raise HeldoutError(f"{path}: limit={limit}; pass a positive number of rows, or None for all")
    # utf-8-sig: spreadsheet programs often start a UTF-8 file with a byte-order mark.
    with path.open(encoding="utf-8-sig") as lines:
        header_line = next(lines, "")
        header = [name.strip() for name in header_line.rstrip("\r\n").split("\t")]
        fmt = _detect_format(path, header)
        rows = []
        for line_no, line in enumerate(lines, start=2):
            if limit is not None and len(rows) == limit:
                break
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            rows.append(_parse_row(path, line_no, header, line.split("\t"), fmt))
    if not rows:
        raise HeldoutError(f"{path}: no data rows under the header; add at least one row")
    return HeldoutSet(path=path, format=fmt, rows=rows)


def _detect_format(path: Path, header: list[str]) -> str:
    for fmt, columns in _COLUMNS.items():
        if {c for c in columns if c} <= set(header):
            return fmt
    # Name the missing columns of the format the header resembles most.
    fmt = max(_COLUMNS, key=lambda f: len(set(_COLUMNS[f]) & set(header)))
    missing = [c for c in _COLUMNS[fmt] if c and c not in header]
    raise HeldoutError(
        f"{path}: line 1 (header) has columns {header}; missing {missing}. "
        "Expected tab-separated 'soru insan makine' (qa) or 'talimat giris cikti' (instructions)"
    )


def _parse_row(path: Path, line_no: int, header: list[str], fields: list[str], fmt: str) -> HeldoutRow:
    if len(fields) != len(header):
        raise HeldoutError(
            f"{path}: line {line_no} has {len(fields)} tab-separated fields, the header has {len(header)}; "
            "check for a missing or extra tab in that line"
        )
    record = dict(zip(header, fields))
    for column in _COLUMNS[fmt]:
        if column in _REQUIRED and not record[column].strip():
            raise HeldoutError(f"{path}: line {line_no}, column '{column}' is empty; fill it in or delete the row")
    question, giris, reference, short_reference = (record[c].strip() if c else "" for c in _COLUMNS[fmt])
    return HeldoutRow(question, giris, reference, short_reference)
