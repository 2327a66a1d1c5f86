"""Markdown tables and text as the reports write them, and the same rendered as one
self-contained HTML page by a maintained CommonMark renderer (markdown-it-py; figures embedded as
data URIs). Table cells escape ``|`` so that text such as E||x||^2 stays in its cell."""

from __future__ import annotations

import base64
from pathlib import Path

from markdown_it import MarkdownIt


def cell(text: str) -> str:
    """Text for a Markdown table cell: a ``|`` in it (E||x||^2) is escaped, not a cell boundary."""
    return str(text).replace("|", "\\|")


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def sd(xs: list[float]) -> float:
    """Sample standard deviation; 0 for fewer than two values."""
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5


def mean_std(xs: list[float], digits: int = 2) -> str:
    """A table cell: ``m ± sd`` over seeds (``m`` for one value, ``-`` for none)."""
    if not xs:
        return "-"
    return f"{mean(xs):.{digits}f} ± {sd(xs):.{digits}f}" if len(xs) > 1 else f"{mean(xs):.{digits}f}"


def to_html(md: str, images: dict[str, Path]) -> str:
    """The report's Markdown as one self-contained HTML page, rendered by markdown-it-py
    (CommonMark + GFM tables, raw HTML off, so every text is escaped); figures whose file name is in
    ``images`` are embedded as data URIs, others say they are missing."""
    mdit = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = mdit.parse(md)
    for tok in tokens:
        for child in tok.children or []:
            if child.type != "image":
                continue
            src = str(child.attrGet("src"))
            if src in images:
                child.attrSet("src", "data:image/png;base64," + base64.b64encode(images[src].read_bytes()).decode())
            else:  # a figure that was not drawn: say so instead of a broken image
                child.type, child.tag, child.content, child.children = "text", "", f"(figure {src} missing)", None
    return (
        "<!doctype html><meta charset='utf-8'><title>preln report</title>"
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}td,th{border:1px solid #ccc;padding:3px}"
        "table{border-collapse:collapse}img{max-width:100%}</style>\n" + mdit.renderer.render(tokens, mdit.options, {})
    )
