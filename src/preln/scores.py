"""Scores of translations (sacreBLEU): BLEU in the conventions a corpus calls for, chrF, TER, the
brevity penalty and length ratio; a paired significance test between systems on one test set."""

from __future__ import annotations

import math
from typing import Literal

import sacrebleu
from sacrebleu.significance import PairedTest
from sacremoses import MosesTokenizer

TOK_LC_DETOK = "Moses-tokenized (sacremoses), lowercased, multi-bleu style (IWSLT14 / fairseq)"
TOK_LC_PRETOK = "pre-tokenized corpus scored as it stands, lowercased (IWSLT14 / fairseq)"


def _tok_bleu() -> sacrebleu.metrics.BLEU:
    return sacrebleu.metrics.BLEU(tokenize="none", lowercase=True, force=True)


def bleu(hyps: list[str], refs: list[str], lang: str, pretokenized: bool = False) -> dict:
    """BLEU in the conventions that apply to this text, each labelled with its signature."""
    tok_bleu = _tok_bleu()
    if pretokenized:  # the text is tokenized already: score it as it stands
        tokenized = tok_bleu.corpus_score(hyps, [refs])
        return {
            "tok_lc": round(tokenized.score, 2),
            "tok_lc_signature": str(tok_bleu.get_signature()),
            "tok_lc_convention": TOK_LC_PRETOK,
        }
    sb = sacrebleu.metrics.BLEU()
    detok = sb.corpus_score(hyps, [refs])
    mt = MosesTokenizer(lang=lang)

    def tok(s: str) -> str:
        return mt.tokenize(s, return_str=True, escape=False)

    tokenized = tok_bleu.corpus_score([tok(h) for h in hyps], [[tok(r) for r in refs]])
    return {
        "sacrebleu": round(detok.score, 2),
        "sacrebleu_signature": str(sb.get_signature()),
        "tok_lc": round(tokenized.score, 2),
        "tok_lc_signature": str(tok_bleu.get_signature()),
        "tok_lc_convention": TOK_LC_DETOK,
    }


def translation_scores(hyps: list[str], refs: list[str], lang: str, pretokenized: bool = False) -> dict:
    """``bleu`` plus chrF and TER (sacreBLEU's defaults, each with its signature), and the brevity
    penalty and hypothesis/reference length ratio of the headline BLEU (sacreBLEU's on detokenized
    text; the tokenized one on a pre-tokenized corpus)."""
    out = bleu(hyps, refs, lang, pretokenized)
    headline = (_tok_bleu() if pretokenized else sacrebleu.metrics.BLEU()).corpus_score(hyps, [refs])
    out["bp"] = round(headline.bp, 4)
    out["length_ratio"] = round(headline.sys_len / max(headline.ref_len, 1), 4)
    for name, metric in (("chrf", sacrebleu.metrics.CHRF()), ("ter", sacrebleu.metrics.TER())):
        out[name] = round(metric.corpus_score(hyps, [refs]).score, 2)
        out[f"{name}_signature"] = str(metric.get_signature())
    return out


def paired_test(
    systems: dict[str, list[str]],
    refs: list[str],
    pretokenized: bool = False,
    trials: int = 1000,
    method: Literal["randomization", "bootstrap"] = "randomization",
) -> dict:
    """Paired significance of BLEU and chrF between systems on one test set (sacreBLEU): the p-value
    of paired approximate randomization (``trials`` shuffles) against the first system (the
    baseline), and each system's bootstrap mean and 95% interval half-width (as many resamples).
    Approximate randomization, not the paired bootstrap's p-value: on simulated systems of equal
    quality the bootstrap's p < 0.05 fired 8% (BLEU) and 12% (chrF) of the time, approximate
    randomization's 2.5% and 3.5% (docs/statistics.md). ``method = "bootstrap"`` gives the paired
    bootstrap's p-value instead (Koehn 2004, as sacreBLEU computes it). Systems whose hypotheses are
    identical to the baseline's get p = 1 (sacreBLEU gives 1/(trials + 1)). Seeded: the same inputs
    give the same numbers."""
    if len(systems) < 2 or len({len(h) for h in systems.values()} | {len(refs)}) != 1:
        raise ValueError("a paired test needs two or more systems with one hypothesis per reference")
    metrics = {"BLEU": _tok_bleu() if pretokenized else sacrebleu.metrics.BLEU(), "chrF": sacrebleu.metrics.CHRF()}
    kind = {"randomization": "ar", "bootstrap": "bs"}[method]
    extra = {"n_ar_confidence": trials} if kind == "ar" else {}  # the bootstrap's intervals, as many resamples
    test = PairedTest(list(systems.items()), metrics, [refs], test_type=kind, n_samples=trials, **extra)
    signatures, results = test()
    names = results.pop("System")
    baseline = systems[names[0]]
    out = {}
    for metric, per_system, signature in zip(metrics, results.values(), signatures.values()):  # our names: BLEU, chrF
        rows = {}
        for name, r in zip(names, per_system):
            rows[name] = {
                "score": round(float(r.score), 2),
                "mean": round(float(r.mean), 2),
                "ci95": round(float(r.ci), 2),
            }
            if r.p_value is not None:
                rows[name]["p_value"] = 1.0 if systems[name] == baseline else round(float(r.p_value), 4)
        out[metric] = {"signature": str(signature), "systems": rows}
    return out


def confusion_scores(counts: list[float]) -> dict:
    """Accuracy, and for two classes the F1 of class 1 (how MRPC is reported), in percent, from a
    C x C confusion matrix of counts [label, prediction] flattened row by row; ``top_class`` is
    the share (%) of examples predicted as the most-predicted class: 100 for a model that
    predicts one class whatever the input (a fine-tuning that failed to train)."""
    c = math.isqrt(len(counts))
    if c < 2 or c * c != len(counts):
        raise ValueError(f"{len(counts)} counts are not a confusion matrix of two or more classes")
    m = [[int(counts[i * c + j]) for j in range(c)] for i in range(c)]
    n = sum(map(sum, m))
    if not n:
        raise ValueError("no examples to score")
    out = {"accuracy": 100.0 * sum(m[i][i] for i in range(c)) / n, "n": n}
    out["top_class"] = 100.0 * max(sum(m[i][j] for i in range(c)) for j in range(c)) / n
    if c == 2:
        tp, fp, fn = m[1][1], m[0][1], m[1][0]
        out["f1"] = 200.0 * tp / (2 * tp + fp + fn) if tp else 0.0
    return out
