"""The IWSLT14 recipe on a small fixture in the official archive's layout, made here."""

import shutil
import tarfile

import pytest

from preln.cli import main
from preln.data.corpus import CorpusError
from preln.data.prepare import IWSLT14_TEST, clean, prepare_iwslt14, prepare_multi30k

from .conftest import ROOT, require_data

HEADER = [
    "<url>http://www.ted.com/talks/x.html</url>",
    "<keywords>talks, science</keywords>",
    "<talkid>1</talkid>",
]


def make_archive(tmp_path, n=60):
    root = tmp_path / "src" / "de-en"
    root.mkdir(parents=True)
    de = [f"<title>Titel {0}</title>"] + [f"Das ist Satz Nummer {i}, nicht wahr?" for i in range(1, n)]
    en = [f"<title>Title {0}</title>"] + [f"This is sentence number {i}, isn't it?" for i in range(1, n)]
    de[5], en[5] = "Kurz.", "This one is much much longer than its German side, which makes the ratio fail."
    (root / "train.tags.de-en.de").write_text("\n".join(HEADER + de) + "\n")
    (root / "train.tags.de-en.en").write_text("\n".join(HEADER + en) + "\n")
    for k, name in enumerate(IWSLT14_TEST):
        for lang, word in (("de", "Hallo"), ("en", "Hello")):
            segs = "\n".join(f'<seg id="{j}"> {word} {name} {j} – it’s </seg>' for j in range(1, 3))
            (root / f"{name}.de-en.{lang}.xml").write_text(
                f'<?xml version="1.0"?>\n<mteval>\n<doc docid="{k}">\n<talkid>{k}</talkid>\n{segs}\n</doc>\n</mteval>\n'
            )
    archive = tmp_path / "de-en.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="de-en")
    return archive


def test_iwslt14_recipe_on_official_layout(tmp_path):
    out = tmp_path / "iwslt14.tokenized.de-en"
    info = prepare_iwslt14(make_archive(tmp_path), out)
    train_en = (out / "train.en").read_text().splitlines()
    valid_en = (out / "valid.en").read_text().splitlines()
    test_en = (out / "test.en").read_text().splitlines()
    # tags dropped, <title> stripped, the ratio-violating pair cleaned away: 60 - 1 = 59 pairs
    assert info["train_pairs_before_cleaning"] == 60 and len(train_en) + len(valid_en) == 59
    assert len(valid_en) == 59 // 23 and len((out / "valid.de").read_text().splitlines()) == len(valid_en)
    assert train_en[0] == "title 0"
    assert not any("<" in ln for ln in train_en + valid_en + test_en)
    # Moses tokenization (with tokenizer.perl's escaping) and lowercasing
    assert "this is sentence number 1 , isn &apos;t it ?" in train_en
    # every 23rd cleaned line is valid
    assert valid_en[0] == "this is sentence number 23 , isn &apos;t it ?"
    # test: the five sets in fairseq's order, ’ -> ', lowercased
    assert len(test_en) == 10 and test_en[0].startswith("hello iwslt14.ted.dev2010 1")
    assert "tedx.dev2012" in test_en[2] and "&apos;s" in test_en[0]
    assert info["pairs"] == {"train": len(train_en), "valid": len(valid_en), "test": 10}


def test_clean_rules():
    src = ["a b c", "a", " ".join(["w"] * 176), "a b"]
    tgt = ["a b c d", "a b", "w", "a b c"]
    assert clean(src, tgt) == [0, 3]  # ratio 2 dropped, >175 dropped, 1.5 kept


def test_prepare_errors(tmp_path, capsys):
    with pytest.raises(CorpusError, match="no train.tags"):
        (tmp_path / "empty").mkdir()
        prepare_iwslt14(tmp_path / "empty", tmp_path / "out")
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"not an archive")
    assert main(["prepare", "iwslt14", "--source", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "not a readable .tgz" in capsys.readouterr().err


def test_prepare_multi30k_from_a_local_folder(tmp_path):
    src = require_data("multi30k")
    counts = prepare_multi30k(tmp_path / "m", src)
    assert counts["train.de"] == 29000 and counts["test_2016_flickr.en"] == 1000


def test_prepared_iwslt_trains_as_a_parallel_corpus(tmp_path):
    from preln import config
    from preln.fit import train

    out = tmp_path / "iw"
    prepare_iwslt14(make_archive(tmp_path, n=120), out)
    cfg = config.load(
        ROOT / "configs" / "tiny-translation.toml",
        [
            "data.corpus='parallel'",
            f"data.path='{out}'",
            "data.vocab_size=100",
            "train.max_updates=3",
            "train.progress=false",
        ],
    )
    assert train(cfg, tmp_path / "run")["status"] == "completed"


def test_damaged_sources_leave_no_damaged_output(tmp_path, capsys):
    src = require_data("multi30k")
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    data = (bad / "val.en.gz").read_bytes()
    (bad / "val.en.gz").write_bytes(data[: len(data) // 2])  # truncated gzip
    assert main(["prepare", "multi30k", "--source", str(bad), "--out", str(tmp_path / "m")]) == 2
    assert "cannot read" in capsys.readouterr().err and "val.en.gz" not in {p.name for p in (tmp_path / "m").iterdir()}
    good = tmp_path / "good.tgz"
    with tarfile.open(good, "w:gz") as tar:
        tar.add(src / "val.en.gz", arcname="x/val.en.gz")
    (tmp_path / "trunc.tgz").write_bytes(good.read_bytes()[:200])
    assert main(["prepare", "iwslt14", "--source", str(tmp_path / "trunc.tgz"), "--out", str(tmp_path / "o")]) == 2
    assert "not a readable .tgz" in capsys.readouterr().err and not (tmp_path / "o").exists()


def make_wmt14(tmp_path, n=250):
    """The five archives of fairseq's prepare-wmt14en2de.sh, tiny, in their real layout."""
    from preln.data.wmt14 import URLS

    src = tmp_path / "wmt14"
    src.mkdir()
    layout = {
        "training-parallel-europarl-v7.tgz": "training/europarl-v7.de-en",
        "training-parallel-commoncrawl.tgz": "commoncrawl.de-en",
        "training-parallel-nc-v12.tgz": "training/news-commentary-v12.de-en",
    }
    for k, (archive, stem) in enumerate(layout.items()):
        staging = tmp_path / f"stage{k}"
        en = "The state-of-the-art model {i} „works“\x07 well."
        de = "Das hochmoderne Modell {i} „funktioniert“ wirklich sehr, sehr gut."
        for lang, text in (("en", en), ("de", de)):
            path = staging / f"{stem}.{lang}"
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = [text.format(i=f"{k}-{i}") for i in range(n)]
            if lang == "de":
                lines[3] = "Kurz."  # against a long English side: the length ratio cleans it away
            path.write_text("\n".join(lines) + "\n")
        with tarfile.open(src / archive, "w:gz") as tar:
            for p in staging.iterdir():
                tar.add(p, arcname=p.name)
    staging = tmp_path / "stage-test" / "test-full"
    staging.mkdir(parents=True)
    for lang, name in (("en", "newstest2014-deen-src.en.sgm"), ("de", "newstest2014-deen-ref.de.sgm")):
        segs = "\n".join(f'<seg id="{j}"> It’s test {j} – {lang} </seg>' for j in range(1, 4))
        (staging / name).write_text(f'<srcset setid="newstest2014">\n<doc docid="a">\n{segs}\n</doc>\n</srcset>\n')
    with tarfile.open(src / "test-full.tgz", "w:gz") as tar:
        tar.add(staging, arcname="test-full")
    with tarfile.open(src / "dev.tgz", "w:gz") as tar:  # downloaded by the recipe, not used by it
        tar.add(staging / "newstest2014-deen-src.en.sgm", arcname="dev/newstest2013.en.sgm")
    assert sorted(p.name for p in src.iterdir()) == sorted(URLS)
    return src


@pytest.mark.parametrize("workers", [1, 2])
def test_wmt14_recipe_on_the_archives_layout(tmp_path, workers):
    from preln.data.wmt14 import prepare_wmt14

    out = tmp_path / "wmt14-en-de"
    info = prepare_wmt14(make_wmt14(tmp_path), out, workers)
    train, valid = (out / "train.en").read_text().splitlines(), (out / "valid.en").read_text().splitlines()
    assert info["train_pairs_before_cleaning"] == 750
    # valid = every 100th line of the concatenated corpora (europarl, commoncrawl, news commentary)
    assert len(valid) == 7 and valid[0].startswith("The state @-@ of @-@ the @-@ art model 0 @-@ 99 ")
    # three pairs (one a corpus) cleaned away by the ratio rule; cased; -a splits hyphens; the bell
    # character (non-printing) gone; „“ normalized to plain quotes and escaped as tokenizer.perl does
    assert len(train) == 750 - 7 - 3 and train[0].startswith("The state @-@ of @-@ the @-@ art model 0 @-@ 0 ")
    assert "\x07" not in "".join(train) and "&quot; works &quot;" in train[0]
    de = "Das hochmoderne Modell 0 @-@ 0 &quot; funktioniert &quot; wirklich sehr , sehr gut ."
    assert (out / "train.de").read_text().splitlines()[0] == de
    assert valid[1].startswith("The state @-@ of @-@ the @-@ art model 0 @-@ 199 ")
    test = (out / "test.en").read_text().splitlines()
    assert test == [f"It &apos;s test {j} – en" for j in range(1, 4)]  # ’ -> ', not normalized (– stays)
    assert (out / "test.de").read_text().splitlines()[0] == "It &apos; s test 1 – de"  # German splits it
    assert info["pairs"] == {"valid": 7, "train": 740, "test": 3}


def test_wmt14_missing_archive_is_one_line(tmp_path, capsys):
    src = make_wmt14(tmp_path, n=5)
    (src / "training-parallel-commoncrawl.tgz").unlink()
    assert main(["prepare", "wmt14", "--source", str(src), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing commoncrawl.de-en.en" in err and len(err.splitlines()) == 1
