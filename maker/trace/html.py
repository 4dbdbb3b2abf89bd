"""The pieces the HTML reports share: their style sheet, numbers as people read them, and tables.

The run report (``maker trace report``) and the evaluation report (``maker eval --report``) both build
on these, so the two look alike.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from html import escape
from typing import Any

__all__ = ["CSS", "num", "money", "facts_table", "table"]

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;
color:#1d232a;background:#fff}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #d8dee4;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0}th,td{border:1px solid #d8dee4;padding:.25rem .6rem;text-align:left;
vertical-align:top}th{background:#f3f5f7}td.n{text-align:right;font-variant-numeric:tabular-nums}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:1rem}
figure{margin:0;border:1px solid #d8dee4;padding:.5rem}figure svg{width:100%;height:auto}
figcaption{font-size:.9rem;color:#57606a}pre{background:#f6f8fa;padding:.5rem;overflow-x:auto;white-space:pre-wrap;
margin:.2rem 0;font-size:.85rem}section.step{border-top:2px solid #d8dee4;margin-top:1.5rem}.muted{color:#57606a}
.flag{color:#b42318}
"""


def num(x: Any) -> str:
    """A number as a person reads it: thousands separators, about four significant digits, '–' when unknown."""
    if x is None:
        return "–"
    if isinstance(x, bool) or not isinstance(x, int | float):
        return escape(str(x))
    if isinstance(x, float) and not x.is_integer():
        a = abs(x)
        return f"{x:,.0f}" if a >= 1000 else f"{x:.4g}" if a >= 1e-3 else f"{x:.3g}"
    return f"{int(x):,}"


def money(x: float | None) -> str:
    """Dollars as a person reads them: ``$3,512.40``, ``$0.1767``, ``$0.000123`` (a sum under a cent keeps three
    significant digits), 'unknown' when the price is; the exact sum, to the micro-dollar, in the tooltip."""
    if x is None:
        return "unknown"
    if x >= 10:
        shown = f"${x:,.2f}"
    elif x <= 0 or x >= 0.01:
        shown = f"${x:,.4f}"
    else:
        shown = f"${x:.{max(4, 2 - math.floor(math.log10(x)))}f}"
    return f'<span title="${x:,.6f}">{shown}</span>'


def facts_table(rows: list[list[str]]) -> str:
    """A two-column table of label and value (HTML already)."""
    return "<table>" + "".join(f"<tr><th>{a}</th><td>{b}</td></tr>" for a, b in rows) + "</table>"


def table(head: list[str], rows: list[list[str]], numeric: Collection[int] = ()) -> str:
    """An HTML table; cells are HTML already (escape trace strings before passing them)."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"
