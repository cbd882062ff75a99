"""Writing results: JSON (environment + config + rows), CSV (rows with the environment's key columns), text tables."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

# Environment fields repeated on every CSV row, so a CSV alone still says where it was measured.
CSV_ENV_FIELDS = ("device", "torch", "triton", "commit", "threads")


def write_results(prefix: Path, env: dict, config: dict, rows: Sequence[dict]) -> list[Path]:
    """Write `<prefix>.json` and `<prefix>.csv`; returns the paths written."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = prefix.with_suffix(".json"), prefix.with_suffix(".csv")
    json_path.write_text(json.dumps({"environment": env, "config": config, "rows": list(rows)}, indent=1,
                                    default=str) + "\n")
    fields = list(CSV_ENV_FIELDS)
    for row in rows:
        fields += [key for key in row if key not in fields]
    with csv_path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({**{key: env.get(key) for key in CSV_ENV_FIELDS}, **row})
    return [json_path, csv_path]


def fmt(value: object, digits: int = 3) -> str:
    """A table cell: floats to `digits` significant digits, None and NaN as '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 10 ** digits or abs(value) < 1e-3:
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    return str(value)


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """A plain-text table with right-aligned columns (Markdown-compatible pipes)."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.rjust(w) for h, w in zip(headers, widths)) + " |",
             "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"]
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    return "\n".join(lines)
