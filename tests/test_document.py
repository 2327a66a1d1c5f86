"""The reports' two renderings of one document agree: random texts full of Markdown's special
characters come back unchanged, cell for cell, when an independent CommonMark/GFM renderer
(markdown-it-py) reads our Markdown, and when an HTML parser reads our HTML."""

import random
from html.parser import HTMLParser

import pytest
from markdown_it import MarkdownIt

from preln.lab import document as doc

ALPHABET = "ab c1_*`|\\[]<>&#~!-+=.)(:'\"{}$^\n"


def _random_text(rng: random.Random) -> doc.Text:
    def s() -> str:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 12)))

    items: list = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        if kind < 0.6:
            items.append(s())
        elif kind < 0.8:
            items.append(doc.code(s()))
        else:
            items.append(doc.strong(s()))
    return items


def _norm(t: str) -> str:
    return " ".join(t.split())


def _expected(text: doc.Text) -> tuple[str, list[str], int]:
    """(the visible text, the code spans' texts, the number of strong spans), whitespace folded."""
    spans = [p for p in doc.parts(text) if isinstance(p, doc.Span)]
    return (
        _norm(doc.plain(text)),
        [_norm(p.text) for p in spans if p.style == "code"],
        len(spans) - sum(p.style == "code" for p in spans),
    )


def _markdown_cells(md: str) -> list[tuple[str, str, list[str]]]:
    """(block kind, visible text, code spans) for every heading, paragraph and cell, read by
    markdown-it-py."""
    out, kind = [], ""
    for tok in MarkdownIt("commonmark").enable("table").parse(md):
        if tok.type in ("heading_open", "paragraph_open", "th_open", "td_open"):
            kind = tok.type.split("_")[0]
        if tok.type == "inline":
            text = "".join(c.content for c in tok.children if c.type in ("text", "code_inline", "softbreak"))
            codes = [_norm(c.content) for c in tok.children if c.type == "code_inline"]
            out.append((kind, _norm(text), codes, sum(c.type == "strong_open" for c in tok.children)))
    return out


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[str, str, list[str]]] = []
        self.kind, self.text, self.codes, self.in_code, self.strong = "", None, [], False, 0

    def handle_starttag(self, tag, attrs):
        if tag in ("h1", "h2", "h3", "p", "th", "td"):
            self.kind, self.text, self.codes = {"h1": "heading", "h2": "heading", "h3": "heading"}.get(tag, tag), "", []
            self.kind = "paragraph" if tag == "p" else self.kind
            self.strong = 0
        self.strong += tag == "strong"
        self.in_code = tag == "code" or self.in_code
        if tag == "code":
            self.codes.append("")

    def handle_endtag(self, tag):
        if tag == "code":
            self.in_code = False
        if tag in ("h1", "h2", "h3", "p", "th", "td"):
            self.cells.append((self.kind, _norm(self.text), [_norm(c) for c in self.codes], self.strong))
            self.text = None

    def handle_data(self, data):
        if self.text is not None:
            self.text += data
            if self.in_code:
                self.codes[-1] += data


@pytest.mark.parametrize("seed", range(300))
def test_random_texts_survive_both_renderings(seed):
    rng = random.Random(seed)
    head = [_random_text(rng) for _ in range(3)]
    rows = [[_random_text(rng) for _ in range(3)] for _ in range(2)]
    blocks = [doc.Heading(_random_text(rng)), doc.Para(_random_text(rng)), doc.Table(head, rows)]
    blocks.append(doc.Para(_random_text(rng)))
    expected = [("heading", *_expected(blocks[0].text)), ("paragraph", *_expected(blocks[1].text))]
    expected += [("th", *_expected(c)) for c in head] + [("td", *_expected(c)) for r in rows for c in r]
    expected.append(("paragraph", *_expected(blocks[3].text)))
    md = doc.to_markdown(blocks)
    assert _markdown_cells(md) == expected, md
    parser = _Cells()
    parser.feed(doc.to_html(blocks, {}))
    assert parser.cells == expected


def test_line_starts_that_markdown_would_read_as_blocks_stay_text():
    for text in [
        "- not a list",
        "+ nor this",
        "1. nor a numbered list",
        "2) nor this",
        "> nor a quote",
        "# nor a heading",
    ]:
        text += " " * 2
        md = doc.to_markdown([doc.Para(text)])
        assert _markdown_cells(md) == [("paragraph", _norm(text), [], 0)], md
    assert doc.to_markdown([doc.Para("---")]).strip() == "\\---"


def test_a_row_with_the_wrong_number_of_cells_is_refused():
    with pytest.raises(ValueError, match="2 cells, its header 3"):
        doc.Table(["a", "b", "c"], [["1", "2"]])


def test_figures_are_embedded_or_said_missing(tmp_path):
    png = tmp_path / "f.png"
    png.write_bytes(b"\x89PNG fake")
    page = doc.to_html([doc.Figure("f.png", "a <figure>"), doc.Figure("g.png")], {"f.png": png})
    assert 'alt="a &lt;figure&gt;"' in page and "data:image/png;base64," in page
    assert "(figure g.png missing)" in page
    assert doc.to_markdown([doc.Figure("dir/f.png", "f*")]) == "![f\\*](dir/f.png)\n"


def test_a_strong_span_keeps_its_edges_outside_the_markup():
    assert doc.parts(["a", doc.strong(" (no) "), "b"]) == ["a (", doc.strong("no"), ") b"]
    assert doc.parts(doc.strong("--")) == ["--"]  # nothing to set in bold
    assert doc.to_markdown([doc.Para(["x", doc.strong("(yes)"), "y"])]) == "x(**yes**)y\n"
