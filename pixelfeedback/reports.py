"""Report formats shared by every tool: number formatting, CSV tables, JSON numbers.

One formatter per purpose, so that a number reads the same in a CSV, a Markdown table and a
terminal line: ``fmt`` for text (``n/a`` when undefined), ``percent`` for fractions shown
as %, ``csv_cell`` for CSV cells (empty when undefined), ``json_number`` for JSON (which has
no NaN; pixelfeedback.runfolder makes whole records JSON-safe).
"""
import csv
import io
import math

import numpy as np

from pixelfeedback import files


def _undefined(value):
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def fmt(value, digits=4, signed=False):
    """``value`` with ``digits`` decimals (``+`` shown when ``signed``), ``n/a`` when undefined."""
    if _undefined(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def percent(value, digits=2):
    """A fraction shown in percent (0.6225 -> '62.25'), ``n/a`` when undefined."""
    return "n/a" if _undefined(value) else f"{100 * value:.{digits}f}"


def share(value):
    """A fraction as a whole per cent ('59%'), ``n/a`` when undefined."""
    return "n/a" if _undefined(value) or math.isinf(value) else f"{value:.0%}"


def csv_cell(value):
    """A CSV cell: floats with 4 decimals, empty for None and NaN."""
    if _undefined(value):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4f}"
    return str(value)


def csv_text(rows, columns):
    """Dict rows as CSV text with a header line (cells by ``csv_cell``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(column)) for column in columns])
    return out.getvalue()


def write_csv(path, rows, columns):
    """Write dict rows as a CSV file (atomically); returns the path."""
    files.write_text(path, csv_text(rows, columns))
    return path


def json_number(value):
    """A float for JSON: NaN becomes null."""
    value = float(value)
    return None if math.isnan(value) else value
