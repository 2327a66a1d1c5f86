"""The README and docs/ name only what exists: every `preln` subcommand, config preset, study and
docs page they mention (a renamed preset or command fails here, not in a reader's terminal)."""

import re

import pytest

from preln.cli import parser

from .conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands() -> set[str]:
    ap = parser()
    sub = next(a for a in ap._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    return set(sub.choices)


def _shell_lines(text: str) -> list[str]:
    """The lines of the page's ```bash blocks."""
    return [ln for block in re.findall(r"```bash\n(.*?)```", text, re.S) for ln in block.splitlines()]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_pages_name_only_commands_presets_studies_and_pages_that_exist(page):
    text = page.read_text()
    commands = _commands()
    for line in (ln.split(" #")[0] for ln in _shell_lines(text)):
        for cmd in re.findall(r"(?:^|[\s/]|-m )preln (\w[\w-]*)", line):
            if cmd.startswith("-"):
                continue
            assert cmd in commands, (page.name, line)
    for cfg in set(re.findall(r"configs/([\w.-]+)\.toml", text)):
        assert (ROOT / "src" / "preln" / "configs" / f"{cfg}.toml").is_file(), (page.name, cfg)
    for studies in re.findall(r"--studies ([\w,.-]+)", text):
        for s in studies.split(","):
            assert (ROOT / "src" / "preln" / "studies" / f"{s}.toml").is_file(), (page.name, s)
    for link in re.findall(r"\]\((docs/[\w.-]+\.md|[\w.-]+\.md)\)", text):
        where = ROOT / link if link.startswith("docs/") else page.parent / link
        assert where.is_file(), (page.name, link)


def test_the_readme_is_short_and_starts_with_a_quickstart():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert text.index("## Quickstart") < text.index("## The main job") < text.index("## Tests")
