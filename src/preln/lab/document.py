"""The reports as data: a document is a list of blocks (headings, paragraphs, tables, figures)
whose text is plain strings and marked spans (code, strong). Two renderers read the same blocks:
``to_markdown`` escapes every character Markdown would read as markup (so E||x||^2 stays in its
table cell and ``*`` stays a star), ``to_html`` escapes with ``html.escape`` and embeds the figures
as data URIs in one self-contained page. Neither parses the other's output.

Also the cells that several reports print: mean, sample standard deviation, ``mean ± sd``."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Span:
    """A run of text set in one style."""

    text: str
    style: Literal["code", "strong"]


def code(text: object) -> Span:
    return Span(str(text), "code")


def strong(text: object) -> Span:
    return Span(str(text), "strong")


# A text: a plain string, one span, or a sequence of both (concatenated).
Text = str | Span | Sequence[str | Span]


@dataclass(frozen=True)
class Heading:
    text: Text
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: Text
    lead: bool = False
    """The report's verdict line: set apart in HTML."""


Tone = Literal["yes", "no", "undecided", ""]
"""A row's colour in HTML, by the verdict it carries ("": none); Markdown has no colours."""


@dataclass(frozen=True)
class Table:
    head: Sequence[Text]
    rows: Sequence[Sequence[Text]]
    tones: Sequence[Tone] = ()
    """Per row (or none at all)."""

    def __post_init__(self) -> None:
        for row in self.rows:  # a short or long row would shift every cell after it
            if len(row) != len(self.head):
                raise ValueError(f"table row has {len(row)} cells, its header {len(self.head)}: {row!r}")
        if self.tones and len(self.tones) != len(self.rows):
            raise ValueError(f"{len(self.tones)} tones for {len(self.rows)} rows")


@dataclass(frozen=True)
class Figure:
    """An image by file name (or a path relative to the report); ``to_html`` embeds it."""

    src: str
    alt: str = ""


Block = Heading | Para | Table | Figure


def _strong_core(p: str | Span) -> list[str | Span]:
    """A strong span's leading and trailing non-alphanumerics (spaces, punctuation) set outside it:
    ``**`` next to a letter or digit always opens and closes (CommonMark's flanking rules), whatever
    stands beside the span. A span with nothing alphanumeric is plain text."""
    if not isinstance(p, Span) or p.style != "strong":
        return [p]
    t = p.text
    i = next((k for k, c in enumerate(t) if c.isalnum()), len(t))
    j = next((k for k in range(len(t), i, -1) if t[k - 1].isalnum()), i)
    return [t[:i], Span(t[i:j], "strong"), t[j:]] if j > i else [t]


def parts(text: Text) -> list[str | Span]:
    """The text's pieces, as both renderers set them: neighbours of one style merged (two code
    spans side by side would read as one longer fence in Markdown), strong spans trimmed to their
    alphanumeric core."""
    out: list[str | Span] = []
    for p in (q for piece in ([text] if isinstance(text, str | Span) else text) for q in _strong_core(piece)):
        prev = out[-1] if out else None
        if isinstance(p, str) and isinstance(prev, str):
            out[-1] = prev + p
        elif isinstance(p, Span) and isinstance(prev, Span) and prev.style == p.style:
            out[-1] = Span(prev.text + p.text, p.style)
        elif p != "":
            out.append(p)
    return out


def plain(text: Text) -> str:
    """The text without its styles."""
    return "".join(p if isinstance(p, str) else p.text for p in parts(text))


# ---- Markdown ---------------------------------------------------------------------------------

# Markup that Markdown reads anywhere in a line, escaped only where it would be read so that the
# Markdown stays readable ("0.67 [0.60, 0.80]", "<= 1.5"): every character that opens markup by
# itself, "_" outside a word (intraword "_" is never emphasis), "]" where a link or a reference
# would follow, "<" where a tag or an autolink would, "&" where an entity would, "~" where it could
# close a strikethrough (GitHub's: "~34" after a space cannot).
_INLINE = re.compile(
    r"[\\`*|#]|(?<=\S)~|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])|\](?=[(\[:])|<(?=[A-Za-z/!?])|&(?=[#0-9A-Za-z])"
)
_LINE_START = re.compile(r"^([-+=>]|\d+(?=[.)]))")  # list items, setext underlines, quotes


def _md_plain(s: str, line_start: bool) -> str:
    s = _INLINE.sub(lambda m: "\\" + m.group(0), " ".join(s.split("\n")))
    if line_start:
        s = s.lstrip()  # four spaces would start a code block
        m = _LINE_START.match(s)
        if m:  # "- x" -> "\- x", "1. x" -> "1\. x"
            at = m.end() if m.group(1).isdigit() else 0
            s = s[:at] + "\\" + s[at:]
    return s


def _md_code(s: str, cell: bool) -> str:
    """A code span whose fence is longer than any run of backticks inside (CommonMark 6.1). In a
    table cell ``|`` is escaped: GFM splits cells before inline parsing and unescapes ``\\|`` there,
    inside code too; elsewhere a backslash in code is literal."""
    s = " ".join(s.split("\n"))
    s = s.replace("|", "\\|") if cell else s
    fence = "`" * (max((len(r) for r in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s.startswith(("`", " ")) or s.endswith(("`", " ")) else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def _md(text: Text, line_start: bool = False, cell: bool = False) -> str:
    out = []
    for i, p in enumerate(parts(text)):
        if isinstance(p, str):
            out.append(_md_plain(p, line_start and i == 0))
        elif p.style == "code":
            out.append(_md_code(p.text, cell))
        else:
            out.append(f"**{_md_plain(p.text, False)}**")
    return "".join(out)


def _md_block(b: Block) -> str:
    if isinstance(b, Heading):
        return "#" * b.level + " " + _md(b.text)
    if isinstance(b, Para):
        return _md(b.text, line_start=True)
    if isinstance(b, Figure):
        src = f"<{b.src}>" if re.search(r"[\s()<>]", b.src) else b.src
        return f"![{_md_plain(b.alt, False)}]({src})"
    rows = [b.head, ["---"] * len(b.head), *b.rows]
    return "\n".join(
        "| " + " | ".join(c if r is rows[1] else (_md(c, cell=True) or " ") for c in r) + " |" for r in rows
    )


def to_markdown(blocks: Sequence[Block]) -> str:
    return "\n\n".join(_md_block(b) for b in blocks) + "\n"


# ---- HTML -------------------------------------------------------------------------------------

_STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:auto;padding:0 1em}"
    "td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}th{background:#f4f4f4}"
    "table{border-collapse:collapse;margin:0.5em 0}img{max-width:100%}code{background:#f4f4f4}"
    "tr.v-yes td{background:#e6f4e6}tr.v-no td{background:#fbe3e3}tr.v-undecided td{background:#fff6d9}"
    "p.verdict{font-size:1.15em;padding:0.4em 0.6em;background:#f4f4f4;border-left:4px solid #888}"
)


def _html(text: Text) -> str:
    out = []
    for p in parts(text):
        if isinstance(p, str):
            out.append(html.escape(p))
        else:
            tag = "code" if p.style == "code" else "strong"
            out.append(f"<{tag}>{html.escape(p.text)}</{tag}>")
    return "".join(out)


def _html_block(b: Block, images: dict[str, Path]) -> str:
    if isinstance(b, Heading):
        return f"<h{b.level}>{_html(b.text)}</h{b.level}>"
    if isinstance(b, Para):
        return f'<p class="verdict">{_html(b.text)}</p>' if b.lead else f"<p>{_html(b.text)}</p>"
    if isinstance(b, Figure):
        if b.src not in images:  # a figure that was not drawn: say so instead of a broken image
            return f"<p>(figure {html.escape(b.src)} missing)</p>"
        data = base64.b64encode(images[b.src].read_bytes()).decode()
        return f'<p><img src="data:image/png;base64,{data}" alt="{html.escape(b.alt)}"></p>'
    head = "<tr>" + "".join(f"<th>{_html(c)}</th>" for c in b.head) + "</tr>"
    tones = b.tones or [""] * len(b.rows)
    body = "\n".join(
        (f'<tr class="v-{t}">' if t else "<tr>") + "".join(f"<td>{_html(c)}</td>" for c in r) + "</tr>"
        for r, t in zip(b.rows, tones)
    )
    return f"<table>\n<thead>\n{head}\n</thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def to_html(blocks: Sequence[Block], images: dict[str, Path], title: str = "preln report") -> str:
    """One self-contained page; figures whose ``src`` is in ``images`` are embedded."""
    body = "\n".join(_html_block(b, images) for b in blocks)
    return (
        f"<!doctype html><html lang='en'><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style>\n<body>\n{body}\n</body></html>\n"
    )


# ---- cells ------------------------------------------------------------------------------------


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
