"""The HTML report renders in a real browser (headless Chromium, Debian's `chromium` package) with
every figure decoded. Skipped where no Chromium is installed, unless PRELN_REQUIRE_BROWSER=1
(set by .ci/run, which installs it)."""

import os
import re
import shutil
import subprocess

import pytest

from preln.lab import document, report

from .test_lab import _fake_study

PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 100 && i.naturalHeight > 100).length;
  const p = document.createElement('div');
  p.id = 'probe';
  p.textContent = `images=${imgs.length} decoded=${ok} tables=${document.querySelectorAll('table').length}`;
  document.body.appendChild(p);
});
</script>"""


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        if os.environ.get("PRELN_REQUIRE_BROWSER") == "1":
            pytest.fail("PRELN_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    return exe


def test_report_html_renders_with_its_images_in_headless_chromium(tmp_path):
    exe = _chromium()
    post = [([(50, 6.0), (100, 5.0)], "completed"), ([(50, 6.1), (100, 5.1)], "completed")]
    pre = [([(50, 5.0), (100, 4.0)], "completed"), ([(50, 5.2), (100, 4.2)], "completed")]
    _fake_study(tmp_path / "runs" / "study", {"post": post, "pre": pre})
    _, page = report.write_report(tmp_path / "runs")
    html = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|file:|/)""", html), "the report must be self-contained"
    probe = tmp_path / "probe.html"
    probe.write_text(html + PROBE)
    profile = tmp_path / "profile"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    cmd += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    cmd += [f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    m = re.search(r'id="probe">images=(\d+) decoded=(\d+) tables=(\d+)<', dom)
    assert m, f"no probe in the rendered DOM: {dom[-1000:]}"
    images, decoded, tables = map(int, m.groups())
    assert images == decoded == html.count("data:image/png;base64,") >= 1
    assert tables >= 2  # the condition table and the claims table
    shot = tmp_path / "shot.png"
    cmd[cmd.index("--dump-dom")] = f"--screenshot={shot}"
    subprocess.run([*cmd[:-1], "--window-size=1200,900", cmd[-1]], capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one


def test_a_pipe_inside_a_cell_does_not_split_it():
    """E||x||^2 stays in its cell in both renderings: the HTML has as many cells in every row as the
    header, and so has the Markdown as a CommonMark/GFM renderer reads it."""
    from markdown_it import MarkdownIt

    table = document.Table(["claim", "theory", "holds"], [["Lemma 2: E||x_l||^2 = 1.5 d", document.code("a|b"), "yes"]])
    for page in (
        document.to_html([table], {}),
        MarkdownIt("commonmark").enable("table").render(document.to_markdown([table])),
    ):
        rows = re.findall(r"<tr>(.*?)</tr>", page, re.S)
        assert [len(re.findall(r"<t[hd]>", r)) for r in rows] == [3, 3]
        assert "E||x_l||^2 = 1.5 d" in page and "<code>a|b</code>" in page


def test_the_lemma2_rows_have_as_many_cells_as_the_header():
    from preln.lab.analysis_report import summary_blocks

    preds = [
        {
            "claim": "Lemma 2, Post-LN: E||x^{post,5}_l||^2 = 1.5 d",
            "theory": "1.5 d",
            "measured": "1.49",
            "holds": True,
        },
        {"claim": "Lemma 2, Pre-LN: (1 + l/2) d <= E||x_l||^2", "theory": "|bounds|", "measured": "ok", "holds": None},
    ]
    blocks = summary_blocks({"data": "synthetic", "preset": "cpu", "predictions": preds})
    rows = re.findall(r"<tr>(.*?)</tr>", document.to_html(blocks, {}), re.S)
    assert len(rows) == 3 and {len(re.findall(r"<t[hd]>", r)) for r in rows} == {4}
    assert "E||x_l||^2" in rows[2]
