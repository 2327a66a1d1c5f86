import json

import pytest
import torch

from preln import checkpoint, config
from preln.cli import main
from preln.config import ModelConfig
from preln.data.corpus import CorpusError, read_tsv
from preln.decode import beam_search, greedy
from preln.fit import train
from preln.model import Seq2Seq
from preln.scores import bleu

from .conftest import ROOT, require_data


def tiny_model(seed=0):
    torch.manual_seed(seed)
    c = ModelConfig(
        norm="pre", d_model=16, n_heads=2, d_ffn=32, encoder_layers=2, decoder_layers=2, dropout=0.0, vocab_size=30
    )
    return Seq2Seq(c).double().eval()


def sources():
    g = torch.Generator().manual_seed(1)
    src = torch.randint(5, 30, (4, 7), generator=g)
    src[:, -1] = 3  # </s>
    src[2, 4:] = 0  # a shorter, padded sentence
    src[2, 3] = 3
    return src


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cached_and_uncached_decoding_give_identical_outputs(seed):
    model, src = tiny_model(seed), sources()
    for kw in ({"beam": 5, "lenpen": 1.2}, {"beam": 3, "lenpen": 0.6}):
        a = beam_search(model, src, use_cache=True, max_len_b=12, **kw)
        b = beam_search(model, src, use_cache=False, max_len_b=12, **kw)
        assert a == b
    assert greedy(model, src, use_cache=True) == greedy(model, src, use_cache=False)


def test_beam_one_is_greedy_and_lengths_respect_the_limit():
    model, src = tiny_model(), sources()
    assert beam_search(model, src, beam=1, lenpen=1.0, max_len_a=0, max_len_b=6) == greedy(
        model, src, max_len_a=0, max_len_b=6
    )
    for h in beam_search(model, src, beam=4, max_len_a=0, max_len_b=5):
        assert 1 <= len(h) <= 5  # at most b tokens, then </s> (fairseq); never empty
        assert all(t not in (0, 2, 4) for t in h)  # never <pad>, <s>, <mask>


def test_beam_search_scores_its_choice_at_least_as_high_as_greedy_when_the_beam_is_wide():
    """With a beam as wide as the vocabulary, search is exact for short limits: its pick's
    normalized log-probability is >= greedy's."""
    model, src = tiny_model(3), sources()[:1]

    def score(h, lenpen=1.0):
        toks = torch.tensor([[2] + h + [3]])
        with torch.no_grad():
            logp = torch.log_softmax(model(src, toks[:, :-1]), -1)[0]
        return float(logp.gather(1, toks[0, 1:, None]).sum()) / (len(h) + 1) ** lenpen

    b = beam_search(model, src, beam=25, lenpen=1.0, max_len_a=0, max_len_b=3)[0]
    g = greedy(model, src, max_len_a=0, max_len_b=3)[0]
    assert score(b) >= score(g) - 1e-9


class EosBiased(Seq2Seq):
    """A model whose </s> logit is shifted by ``bias``: +50 wants to stop at once, -50 never."""

    bias = 0.0

    def decode(self, *a, **kw):
        logits = super().decode(*a, **kw)
        logits[..., 3] += self.bias
        return logits


class Bigram(EosBiased):
    """Logits plus a fixed bigram table's row for the previous token, and no </s>: beams that
    soon share most of their history (sentences 1 and 2 of ``sources``), as a weak model's do."""

    bias = -50.0
    table = 4 * torch.randn(30, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def decode(self, tgt, *a, **kw):
        return super().decode(tgt, *a, **kw) + self.table[tgt]


@pytest.mark.parametrize("use_cache", [True, False])
def test_length_limits_follow_fairseq(use_cache):
    torch.manual_seed(0)
    c = ModelConfig(d_model=16, n_heads=2, d_ffn=32, encoder_layers=1, decoder_layers=1, dropout=0.0, vocab_size=30)
    model, src = EosBiased(c).double().eval(), sources()
    model.bias = 50.0  # </s> first everywhere: min length 1 still gives one token
    assert [len(h) for h in beam_search(model, src, beam=4, use_cache=use_cache)] == [1] * 4
    assert [len(h) for h in greedy(model, src, use_cache=use_cache)] == [1] * 4
    model.bias = -50.0  # </s> never chosen: hypotheses run to exactly a * src_len + b tokens
    src_len = [6, 6, 3, 6]  # without </s>
    for a, b in ((0, 7), (1.0, 2)):
        want = [int(a * n + b) for n in src_len]
        assert [len(h) for h in beam_search(model, src, beam=3, max_len_a=a, max_len_b=b, use_cache=use_cache)] == want
        assert [len(h) for h in greedy(model, src, max_len_a=a, max_len_b=b, use_cache=use_cache)] == want


def test_tokenized_bleu_of_pretokenized_text_is_scored_as_it_stands():
    """IWSLT14 references are Moses-tokenized, escaped and lowercased: tokenizing them again would
    split every &apos; into `& apos ;` and inflate the score."""
    import sacrebleu

    refs = ["it &apos;s a test , isn &apos;t it ?", "we &apos;re here &quot; now &quot; .", "that &apos;s all ."]
    hyps = ["it &apos;s the test , is it ?", "we are here &quot; now &quot; .", "that &apos;s it ."]
    res = bleu(hyps, refs, "en", pretokenized=True)
    want = sacrebleu.metrics.BLEU(tokenize="none").corpus_score(hyps, [refs]).score
    assert res["tok_lc"] == round(want, 2)
    assert "tok:none" in res["tok_lc_signature"] and "sacrebleu" not in res  # no mislabelled 13a figure
    assert bleu(hyps, refs, "en")["tok_lc"] > res["tok_lc"]  # what re-tokenizing did


def test_bleu_conventions_are_labelled_and_sane():
    refs = ["The cat sat on the mat.", "A dog runs in the park!"]
    res = bleu(refs, refs, "en")
    assert res["sacrebleu"] == 100.0 and res["tok_lc"] == 100.0
    assert res["sacrebleu_signature"].startswith("nrefs:1|case:mixed")
    lower = bleu([r.lower() for r in refs], refs, "en")
    assert lower["tok_lc"] == 100.0 and lower["sacrebleu"] < 100.0  # only the cased metric sees case


def test_checkpoint_averaging_is_the_mean(tmp_path):
    a, b = tiny_model(0), tiny_model(1)
    for name, m in (("update_0000001", a), ("update_0000002", b)):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        checkpoint.save(
            tmp_path,
            int(name[-1]),
            {k: v for k, v in m.state_dict().items() if not k.endswith("tokens.weight") or k == "embed_tokens.weight"},
            opt.state_dict(),
            {"state": {}},
            keep_last=5,
        )
    avg = checkpoint.average_weights(checkpoint.list_checkpoints(tmp_path))
    torch.testing.assert_close(
        avg["encoder.layers.0.ffn.w1.weight"],
        (a.encoder.layers[0].ffn.w1.weight + b.encoder.layers[0].ffn.w1.weight) / 2,
    )


def test_tsv_reader(tmp_path):
    p = tmp_path / "x.tsv"
    p.write_text("src1\tHallo Welt\tHello world\nsrc2\t\tempty\nsrc3\tJa\tYes\n")
    assert read_tsv(p, ("de", "en"), "de", "en") == (["Hallo Welt", "Ja"], ["Hello world", "Yes"], 1)
    assert read_tsv(p, ("de", "en"), "en", "de")[0] == ["Hello world", "Yes"]
    with pytest.raises(CorpusError, match="columns"):
        read_tsv(p, ("de", "en"), "fr", "en")
    real = require_data("debdocs-de-en", "valid.tsv.gz")
    src, tgt, _ = read_tsv(real, ("de", "en"), "de", "en")
    assert len(src) == len(tgt) > 3000


def test_translate_and_evaluate_cli(tmp_path, capsys):
    require_data("multi30k")
    run = tmp_path / "r"
    cfg = config.load(ROOT / "configs" / "tiny-translation.toml", ["train.max_updates=5", "train.progress=false"])
    res = train(cfg, run)
    assert "valid_bleu_greedy" in res  # training reports greedy BLEU on the valid split
    src = tmp_path / "in.de"
    src.write_text("Ein Hund läuft.\nZwei Männer spielen Fußball.\n")
    capsys.readouterr()
    assert main(["translate", str(run), "--input", str(src), "--beam", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert main(["translate", str(run), "--input", str(src), "--beam", "3", "--nbest", "3"]) == 0
    nbest = [ln.split("\t") for ln in capsys.readouterr().out.splitlines()]
    assert [int(n) for n, _, _ in nbest] == [1, 1, 1, 2, 2, 2]
    for first in (0, 3):
        scores = [float(s) for _, s, _ in nbest[first : first + 3]]
        assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)
    assert [nbest[0][2], nbest[3][2]] == out  # the best of the n equals the plain beam output
    assert main(["translate", str(run), "--input", str(src), "--beam", "2", "--nbest", "3"]) == 2
    assert main(["evaluate", str(run), "--limit", "20", "--beam", "2"]) == 0
    scores = json.loads((run / "bleu.json").read_text())
    for split in ("valid", "test"):
        s = scores["splits"][split]
        assert s["sentences"] == 20 and "sacrebleu_signature" in s and "tok_lc" in s
        assert len((run / f"hyp.{split}.en").read_text().splitlines()) == 20


def test_translate_streams_stdin_as_lines_arrive(tmp_path):
    """A line written to an open pipe is translated before the pipe closes (a chunk ends when no
    more input comes for 0.2 s)."""
    import os
    import select
    import subprocess
    import sys

    require_data("multi30k")
    run = tmp_path / "r"
    train(config.load(ROOT / "configs" / "tiny-translation.toml", ["train.max_updates=2", "train.progress=false"]), run)
    cmd = [sys.executable, "-m", "preln", "translate", str(run), "--beam", "2", "--max-len-b", "5"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        proc.stdin.write("ein hund läuft .\n".encode())
        proc.stdin.flush()
        first = b""
        while not first.endswith(b"\n"):  # a line may arrive in several writes: wait for its end
            ready = select.select([proc.stdout], [], [], 120)[0]  # a hang detector, not a timing margin
            assert ready, "no translation while stdin is still open"
            data = os.read(proc.stdout.fileno(), 1 << 16)
            assert data, "translate ended before its input did"
            first += data
        assert first.decode().count("\n") == 1
        proc.stdin.write("zwei männer .\n".encode())
        proc.stdin.close()
        rest = proc.stdout.read().decode()
        assert proc.wait(60) == 0 and rest.count("\n") == 1
    finally:
        proc.kill()


def test_translate_warns_when_it_cuts_a_long_input(capsys):
    from preln.decode import translate
    from preln.decoding import Decoding

    class Tok:
        def encode(self, lines):
            return [[5] * 40 for _ in lines]

        def decode(self, ids):
            return ["x" for _ in ids]

    torch.manual_seed(0)
    c = ModelConfig(
        d_model=16, n_heads=2, d_ffn=32, encoder_layers=1, decoder_layers=1, vocab_size=30, max_positions=16
    )
    assert translate(Seq2Seq(c).eval(), Tok(), ["a long line", "another"], Decoding(beam=1, max_len_b=3)) == ["x", "x"]
    assert "2 input line(s) longer than 14 tokens (model.max_positions) are cut" in capsys.readouterr().err


def test_the_readmes_python_api_example_runs(tmp_path, monkeypatch, capsys):
    require_data("multi30k")
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Python API") :]
    start = section.index("```python") + len("```python")
    code = section[start : section.index("```\n", start)]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("[") and (tmp_path / "runs" / "api-demo" / "status.json").is_file()
    import preln

    assert {"RunConfig", "ModelConfig", "build_model", "train", "load_run", "translate"} <= set(preln.__all__)
    assert callable(preln.train) and preln.train.__module__ == "preln.fit"


def reference_beam(model, src_row, K, lenpen, limit, nbest=0):
    """fairseq-generate's beam search for one sentence, written plainly: no batch, no cache, Python
    lists. At each step the 2K best continuations of the live beams; a </s> ranked in the top K
    finishes (score / length ** lenpen, </s> counted), up to K finished; the K best others live on;
    at the length limit only </s>; done at K finished or the limit."""
    src = src_row[None]
    beams = [(0.0, [])]  # (log-probability, tokens)
    finished = []
    for t in range(limit + 1):
        cands = []
        for lp, toks in beams:
            with torch.no_grad():
                logits = model(src, torch.tensor([[2] + toks]))[0, -1]
            logp = torch.log_softmax(logits.float(), -1).double()
            logp[[0, 2, 4]] = -torch.inf
            if t < 1:
                logp[3] = -torch.inf
            if t >= limit:
                keep = logp[3].item()
                logp[:] = -torch.inf
                logp[3] = keep
            cands += [(lp + float(v), toks, i) for i, v in enumerate(logp.tolist())]
        cands.sort(key=lambda c: -c[0])  # stable: ties keep (beam, token) order, as topk does here
        live = []
        for r, (s, toks, i) in enumerate(cands[: 2 * K]):
            if s == -float("inf"):
                continue
            if i == 3:
                if r < K and len(finished) < K:
                    finished.append((s / (t + 1) ** lenpen, toks))
            elif len(live) < K:
                live.append((s, [*toks, i]))
        if len(finished) >= K or not live:
            break
        beams = live
    if nbest:
        return sorted(finished, key=lambda h: -h[0])[:nbest]
    return max(finished, key=lambda h: h[0])[1]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_beam_search_equals_a_plain_one_sentence_reference(seed):
    """The batched search (tensor-side selection, sentences leaving the batch, the early stop)
    gives what the plain reference gives, sentence by sentence, for lenpen below, at and above 1."""
    model, src = tiny_model(seed), sources()
    for K, lenpen, a, b in ((5, 1.0, 0, 6), (3, 0.6, 1.0, 2), (4, 1.4, 0, 5), (2, 0.0, 0, 7), (3, -0.5, 0, 4)):
        got = beam_search(model, src, beam=K, lenpen=lenpen, max_len_a=a, max_len_b=b)
        nb = beam_search(model, src, beam=K, lenpen=lenpen, max_len_a=a, max_len_b=b, nbest=K)
        for i, row in enumerate(src):
            n = int(((row != 0) & (row != 3)).sum())
            ref = reference_beam(model, row[row != 0], K, lenpen, int(a * n + b))
            assert got[i] == ref, (K, lenpen, i)
            ref_nb = reference_beam(model, row[row != 0], K, lenpen, int(a * n + b), nbest=K)
            assert [h for _, h in nb[i]] == [h for _, h in ref_nb], (K, lenpen, i)
            assert [s for s, _ in nb[i]] == pytest.approx([s for s, _ in ref_nb], rel=1e-6)  # float32 sums


def test_the_early_stop_saves_steps_and_changes_nothing(monkeypatch):
    """A sentence whose live beams can no longer beat its best finished hypothesis stops early:
    fewer decoder steps, the same output as decoding on to K finished hypotheses."""
    from preln import decode

    class Counting(EosBiased):
        calls = 0

        def decode(self, *a, **kw):
            Counting.calls += 1
            return super().decode(*a, **kw)

    torch.manual_seed(0)
    c = ModelConfig(d_model=16, n_heads=2, d_ffn=32, encoder_layers=1, decoder_layers=1, dropout=0.0, vocab_size=30)
    model, src = Counting(c).double().eval(), sources()
    model.bias = 4.0  # </s> likely early: some hypotheses finish at once, the rest are long shots
    runs = {}
    for early in (True, False):
        if not early:
            monkeypatch.setattr(decode, "_best_possible", lambda *a: float("inf"))
        Counting.calls = 0
        out = beam_search(model, src, beam=4, lenpen=0.0, max_len_b=30)  # raw log-probabilities
        runs[early] = (out, Counting.calls)
    assert runs[True][0] == runs[False][0]
    assert runs[True][1] < runs[False][1], runs


def test_beam_search_copies_only_the_cache_rows_whose_parent_row_a_sibling_holds(monkeypatch):
    """A new beam stays in its parent's cache row when it is the parent's first child; only its
    siblings copy the parent's history into rows no new beam descends from, after the prefix that
    the two rows already hold alike (bitwise: copies of one computation). Every step copies fewer
    rows than the cache holds, and the output is the uncached search's."""
    copy = Seq2Seq.copy_cache_rows
    calls = []

    def counting(cache, dst, src, start):
        calls.append((len(dst), cache[0]["self"]["k"].shape[0], start))
        assert not set(dst.tolist()) & set(src.tolist())  # sources are rows that stay
        for layer in cache:
            for name in ("k", "v"):
                held = layer["self"][name][:, :, :start]
                assert torch.equal(held[dst], held[src])  # what is not copied is there already
        copy(cache, dst, src, start)

    monkeypatch.setattr(Seq2Seq, "copy_cache_rows", staticmethod(counting))
    bigram = Bigram(tiny_model(1).config).double().eval()
    bigram.load_state_dict(tiny_model(1).state_dict())
    starts = {}
    for name, model, src in (("random", tiny_model(0), sources()), ("random", tiny_model(3), sources()),
                             ("bigram", bigram, sources()[1:3])):  # fmt: skip
        for K in (5, 3):
            kw = {"beam": K, "lenpen": 1.0, "max_len_b": 24}
            calls.clear()
            assert beam_search(model, src, **kw) == beam_search(model, src, use_cache=False, **kw)
            assert calls and all(0 < moved < rows for moved, rows, _ in calls)
            assert calls[0][2] == 0  # every row computed <s> itself
            starts.setdefault(name, []).extend(start for *_, start in calls)
    # Random models' beams of four sentences never all agree past <s>, but the two rows of a copy
    # often share more: the copy starts after what those two share.
    assert max(starts["random"]) > 1 and max(starts["bigram"]) > 10, starts
