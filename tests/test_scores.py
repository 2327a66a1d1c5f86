"""Translation scores beyond BLEU (chrF, TER, brevity penalty, length ratio), evaluations kept per
decoding setting, and `preln compare`'s paired bootstrap between runs."""

import json
import random

import pytest
import sacrebleu

from preln.cli import main
from preln.scores import paired_test, translation_scores

from .conftest import ROOT, WORDS, sentences

SEED = {"train": 1, "valid": 2, "test": 3}  # a fixed corpus: str hashes vary between processes
TINY_MT = str(ROOT / "configs" / "tiny-translation.toml")


def test_scores_agree_with_sacrebleu_and_with_their_definitions():
    refs = sentences(50, 1, " .")
    same = translation_scores(refs, refs, "en")
    assert (same["sacrebleu"], same["chrf"], same["ter"], same["bp"], same["length_ratio"]) == (100, 100, 0, 1, 1)
    short = [" ".join(r.split()[: max(1, len(r.split()) // 2)]) for r in refs]
    got = translation_scores(short, refs, "en")
    assert got["bp"] < 1 and got["length_ratio"] < 0.7
    assert got["chrf"] == round(sacrebleu.corpus_chrf(short, [refs]).score, 2)
    assert got["ter"] == round(sacrebleu.corpus_ter(short, [refs]).score, 2)
    assert "nc:6" in got["chrf_signature"] and "version" in got["ter_signature"]  # sacreBLEU signatures
    assert translation_scores(short, refs, "en", pretokenized=True)["length_ratio"] == got["length_ratio"]


def test_the_paired_test_tells_a_worse_system_from_a_copy():
    refs = sentences(200, 2, " .")
    rng = random.Random(3)
    noisy = [" ".join(w if rng.random() < 0.8 else "x" for w in r.split()) for r in refs]
    worse = [" ".join(w if rng.random() < 0.5 else "x" for w in r.split()) for r in refs]
    res = paired_test({"noisy": noisy, "copy": list(noisy), "worse": worse}, refs, trials=300)
    bleu = res["BLEU"]["systems"]
    assert "p_value" not in bleu["noisy"] and bleu["copy"]["p_value"] == 1.0  # no difference: never significant
    assert bleu["worse"]["p_value"] < 0.01 and bleu["worse"]["score"] < bleu["noisy"]["score"]
    assert res == paired_test({"noisy": noisy, "copy": list(noisy), "worse": worse}, refs, trials=300)
    boot = paired_test({"noisy": noisy, "copy": list(noisy), "worse": worse}, refs, trials=300, method="bootstrap")
    assert boot["BLEU"]["systems"]["copy"]["p_value"] == 1.0 and boot["BLEU"]["systems"]["worse"]["p_value"] < 0.01
    assert "bs:300" in boot["BLEU"]["signature"] and "ar:300" in res["BLEU"]["signature"]
    with pytest.raises(ValueError, match="one hypothesis per reference"):
        paired_test({"a": noisy, "b": worse[:-1]}, refs)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny translation runs (Pre-LN, Post-LN) on a small generated corpus."""
    root = tmp_path_factory.mktemp("compare")
    corpus = root / "corpus"
    corpus.mkdir()
    for split, n in (("train", 300), ("valid", 30), ("test", 40)):
        src = sentences(n, SEED[split], " .")
        (corpus / f"{split}.de").write_text("".join(s.upper() + "\n" for s in src))
        (corpus / f"{split}.en").write_text("".join(s + "\n" for s in src))
    for norm in ("pre", "post"):
        sets = ["data.corpus='parallel'", f"data.path='{corpus}'", "data.vocab_size=60", "train.max_updates=30"]
        sets += ["train.progress=false", "train.valid_bleu=false", f"model.norm='{norm}'"]
        assert main(["train", TINY_MT, "--out", str(root / norm), *[x for s in sets for x in ("--set", s)]]) == 0
    return root


def test_evaluations_are_kept_per_setting_and_compared(two_runs, tmp_path, capsys):
    pre, post = two_runs / "pre", two_runs / "post"
    for run in (pre, post):
        assert main(["evaluate", str(run), "--splits", "test", "--beam", "1"]) == 0
    assert main(["evaluate", str(pre), "--splits", "valid,test", "--beam", "2"]) == 0
    out = capsys.readouterr().out
    assert "chrF" in out and "TER" in out and "BP" in out
    kept = sorted(p.name for p in (pre / "evaluations").iterdir())
    assert len(kept) == 2 and any("beam1" in k for k in kept) and any("beam2" in k for k in kept)
    beam1 = json.loads((pre / "evaluations" / next(k for k in kept if "beam1" in k) / "bleu.json").read_text())
    assert beam1["beam"] == 1 and set(beam1["splits"]) == {"test"}  # not overwritten by the beam-2 evaluation
    assert json.loads((pre / "bleu.json").read_text())["beam"] == 2  # bleu.json: the last evaluation
    setting = next(k for k in kept if "beam1" in k)
    assert main(["compare", str(pre), str(post), "--setting", setting, "--json", str(tmp_path / "c.json")]) == 0
    res = json.loads((tmp_path / "c.json").read_text())
    assert res["sentences"] == 40 and set(res["BLEU"]["systems"]) == {"pre", "post"}
    assert 0 <= res["BLEU"]["systems"]["post"]["p_value"] <= 1 and "p = " in capsys.readouterr().out


def test_compare_refuses_what_cannot_be_paired(two_runs, tmp_path, capsys):
    pre, post = two_runs / "pre", two_runs / "post"
    assert main(["evaluate", str(pre), "--splits", "test", "--beam", "1", "--limit", "10"]) == 0
    assert main(["evaluate", str(post), "--splits", "test", "--beam", "1"]) == 0
    capsys.readouterr()
    assert main(["compare", str(pre), str(post)]) == 2  # 10 sentences against 40
    assert "references differ" in capsys.readouterr().err
    assert main(["compare", str(pre), str(post), "--split", "valid", "--setting", "nope"]) == 2
    assert "no evaluations/nope/hyp.valid.en" in capsys.readouterr().err
    assert main(["compare", str(pre)]) == 2
    assert "two or more runs" in capsys.readouterr().err


def test_the_paired_test_is_calibrated_on_systems_of_equal_quality():
    """Simulated null: two systems whose words are each wrong with the same probability,
    independently; p < 0.05 must fire at most about 5% of the time (measured: docs/statistics.md)."""
    import logging

    logging.getLogger("sacrebleu").setLevel(logging.ERROR)
    rng, hits, n = random.Random(11), {"BLEU": 0, "chrF": 0}, 60
    for _ in range(n):
        refs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(100)]
        a, b = ([" ".join(w if rng.random() < 0.8 else "x" for w in r.split()) for r in refs] for _ in range(2))
        res = paired_test({"a": a, "b": b}, refs, trials=200)
        for m in hits:
            hits[m] += res[m]["systems"]["b"]["p_value"] < 0.05
    assert all(h <= 0.1 * n for h in hits.values()), hits
