"""Markdown tables and text as the reports write them, and the same rendered as one
self-contained HTML page (figures embedded as data URIs). Table cells escape ``|`` so that text
such as E||x||^2 stays in its cell."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path


def cell(text: str) -> str:
    """Text for a Markdown table cell: a ``|`` in it (E||x||^2) is escaped, not a cell boundary."""
    return str(text).replace("|", "\\|")


def split_row(line: str) -> list[str]:
    """The cells of a Markdown table row, ``\\|`` unescaped."""
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def _inline(text: str) -> str:
    """Markdown's **bold** and `code` in escaped text."""
    out, parts = [], html.escape(text).split("**")
    for i, p in enumerate(parts):
        segs = p.split("`")
        p = "".join(f"<code>{s}</code>" if j % 2 else s for j, s in enumerate(segs))
        out.append(f"<b>{p}</b>" if i % 2 else p)
    return "".join(out)


def to_html(md: str, images: dict[str, Path]) -> str:
    """The Markdown subset the reports use (headings, paragraphs, tables, images, **bold**, `code`)."""
    body, in_table = [], False
    for line in md.splitlines():
        is_row = line.startswith("|")
        if in_table and not is_row:
            body.append("</table>")
        if is_row and not in_table:
            body.append("<table>")
        in_table = is_row
        if is_row:
            if not set(line) <= set("|- "):  # skip the |---| separator
                body.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in split_row(line)) + "</tr>")
        elif line.startswith("![") and "](" in line:
            src = line.split("](", 1)[1].rstrip(")")
            if src in images:
                data = base64.b64encode(images[src].read_bytes()).decode()
                body.append(f'<p><img alt="{html.escape(src)}" src="data:image/png;base64,{data}"></p>')
            else:
                body.append(f"<p>(figure {html.escape(src)} missing)</p>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    if in_table:
        body.append("</table>")
    return (
        "<!doctype html><meta charset='utf-8'><title>preln report</title>"
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}td{border:1px solid #ccc;padding:3px}"
        "table{border-collapse:collapse}img{max-width:100%}</style>\n" + "\n".join(body) + "\n"
    )
