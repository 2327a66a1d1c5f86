import gzip
import random

import numpy as np
import pytest
import torch

from preln import config
from preln.data import CorpusError, token_batches
from preln.data.batching import mask_tokens, stable_order
from preln.data.corpus import read_lines, read_parallel, resolve_path
from preln.data.tokenizer import BOS, EOS, MASK, PAD
from preln.tasks import load_data

from .conftest import ROOT, require_data


def test_token_batches_respect_budget_and_cover_everything():
    g = torch.Generator().manual_seed(0)
    sizes = [tuple(int(x) for x in torch.randint(1, 40, (2,), generator=g)) for _ in range(500)]
    for multiple in (1, 8):
        batches = list(token_batches(sizes, 200, multiple))
        seen = sorted(i for b in batches for i in b)
        assert seen == list(range(500))
        for b in batches:  # fairseq: n * longest example (its longer side) <= max_tokens
            assert len(b) * max(max(sizes[i]) for i in b) <= 200
        assert list(token_batches(sizes, 200, multiple)) == batches  # deterministic
    with pytest.raises(ValueError, match="exceeds max_tokens"):
        token_batches([(150, 201)], 200)


def test_token_batches_follow_fairseq_rule_on_a_fixture():
    # (src, tgt) lengths; fairseq counts max(src, tgt) per example: 5, 4, 6, 9 in sorted order
    # (2,9), (3,5), (4,2), (6,6). At max_tokens 18: [(2,9), (3,5)] costs 2 * 9 = 18; adding (4,2)
    # would cost 27, so the batch closes; [(4,2), (6,6)] costs 2 * 6 = 12.
    # (Counting padded source + target, the old rule, would give 3 batches.)
    sizes = [(3, 5), (4, 2), (6, 6), (2, 9)]
    assert list(token_batches(sizes, 18, multiple=1)) == [[3, 0], [1, 2]]
    # --required-batch-size-multiple 8: 13 examples of 10 tokens fit 130; the 14th overflows,
    # so the first batch is cut to 8 and the other 5 start the next one, which then takes the rest.
    assert list(token_batches([(10, 10)] * 20, 130)) == [list(range(8)), list(range(8, 20))]
    # fewer than 8 in a full batch: kept whole
    assert list(token_batches([(10, 10)] * 7, 50)) == [[0, 1, 2, 3, 4], [5, 6]]


def batch_by_size(sizes, max_tokens, multiple):
    """fairseq's ``batch_by_size`` loop (v0.9), example by example: the reference."""
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i], i))
    batches, cur, lens = [], [], []
    for i in order:
        n = max(sizes[i])
        if cur and (len(cur) + 1) * max(max(lens), n) > max_tokens:
            keep = max(multiple * (len(cur) // multiple), len(cur) % multiple)
            batches.append(cur[:keep])
            cur, lens = cur[keep:], lens[keep:]
        cur.append(i)
        lens.append(n)
    return batches + ([cur] if cur else [])


def test_token_batches_equal_fairseqs_loop_on_random_sizes():
    """Runs of equal sizes are batched at once; the batches are the example-by-example loop's,
    including its quirk (the example that closed a batch joins the carried rest unchecked)."""
    rng = random.Random(0)
    for _ in range(1500):
        sides, top = rng.choice([1, 2]), rng.choice([3, 20, 100])
        sizes = [tuple(rng.randint(1, top) for _ in range(sides)) for _ in range(rng.randint(0, 300))]
        max_tokens, multiple = rng.randint(top, 6 * top), rng.choice([1, 2, 8])
        assert list(token_batches(sizes, max_tokens, multiple)) == batch_by_size(sizes, max_tokens, multiple)
    sizes = np.random.default_rng(0).integers(1, 120, size=(200_000, 2))  # as arrays, long runs
    assert list(token_batches(sizes, 4096)) == batch_by_size([tuple(s) for s in sizes.tolist()], 4096, 8)


def test_stable_order_is_numpys_stable_argsort():
    for top in (10, 70_000, 5_000_000_000):  # one 16-bit digit, two, a general sort
        key = np.random.default_rng(1).integers(0, top, size=50_000)
        assert (stable_order(key) == np.argsort(key, kind="stable")).all()


def test_mask_tokens_properties():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (256, 200))  # ~7500 chosen: the 80/10/10 split within +-2%
    ids[:, 0], ids[:, -1] = BOS, EOS
    ids[:10, 150:] = PAD
    special = (ids == PAD) | (ids == BOS) | (ids == EOS)
    inputs, targets = mask_tokens(ids, 0.15, special, MASK, 100, 5, g)
    chosen = targets != -100
    assert not (chosen & special).any()  # specials are never chosen
    assert torch.equal(targets[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])  # unchosen tokens untouched
    rate = chosen.sum() / (~special).sum()
    assert 0.13 < rate < 0.17
    masked = (inputs == MASK) & chosen
    assert 0.78 < masked.sum() / chosen.sum() < 0.82
    replaced = (inputs != ids) & (inputs != MASK)
    assert 0.08 < replaced.sum() / chosen.sum() < 0.12
    # at least one token is chosen even when prob rounds to none
    _, t = mask_tokens(ids[:1, :3], 1e-9, special[:1, :3], MASK, 100, 5, g)
    assert (t != -100).sum() == 1


def test_readers_errors(tmp_path):
    (tmp_path / "a.de").write_text("eins\nzwei\n")
    (tmp_path / "a.en").write_text("one\n")
    with pytest.raises(CorpusError, match="not line-aligned"):
        read_parallel(tmp_path / "a.de", tmp_path / "a.en")
    (tmp_path / "b.en").write_bytes(b"ok\n\xff\xfe bad\n")
    with pytest.raises(CorpusError, match="line 2 is not valid UTF-8"):
        read_lines(tmp_path / "b.en")
    (tmp_path / "c.de").write_text("eins\n\ndrei\n")
    with gzip.open(tmp_path / "c.en.gz", "wt") as f:
        f.write("one\ntwo\nthree\n")
    src, tgt, dropped = read_parallel(tmp_path / "c.de", tmp_path / "c.en.gz")
    assert (src, tgt, dropped) == (["eins", "drei"], ["one", "three"], 1)
    with pytest.raises(CorpusError, match="corpus not found.*PRELN_DATA_ROOT"):
        resolve_path(str(tmp_path / "missing"))


def test_translation_data_batches_are_deterministic_and_well_formed():
    require_data("multi30k")
    cfg = config.load(ROOT / "configs" / "tiny-translation.toml")
    data, tok = load_data(cfg)
    assert len(tok) <= cfg.data.vocab_size
    b1 = data.batch("train", 1, 3)
    b2 = data.batch("train", 1, 3)
    assert all(torch.equal(b1.tensors[k], b2.tensors[k]) for k in b1.tensors)
    t = b1.tensors
    assert (t["tgt_in"][:, 0] == BOS).all()
    assert b1.ntokens == int((t["tgt_out"] != -100).sum())
    B = t["src"].shape[0]  # fairseq's rule: examples x the longest side of the longest example
    assert B * max(t["src"].shape[1], t["tgt_out"].shape[1]) <= cfg.data.max_tokens
    assert data.order(1) != data.order(2)  # reshuffled per epoch
    # what another rank's batch contributes under torchrun: its count, without collating it
    for split, epoch in (("train", 2), ("valid", 0)):
        counts = [data.ntokens(split, epoch, k) for k in range(data.num_batches(split))]
        assert counts == [data.batch(split, epoch, k).ntokens for k in range(data.num_batches(split))]
    assert tok.decode([tok.encode(["Ein Hund läuft."])[0]]) == ["Ein Hund läuft."]


def test_missing_corpus_message(tmp_path):
    cfg = config.load(ROOT / "configs" / "tiny-translation.toml", [f"data.path='{tmp_path}/nothing'"])
    with pytest.raises(CorpusError, match="corpus not found"):
        load_data(cfg)
    (tmp_path / "m30k").mkdir()
    cfg = config.load(ROOT / "configs" / "tiny-translation.toml", [f"data.path='{tmp_path}/m30k'"])
    with pytest.raises(CorpusError, match=r"missing corpus file: .*train\.de"):
        load_data(cfg)


def test_bpe_output_is_refused_with_a_one_line_error(tmp_path):
    from preln.data.corpus import read_tsv

    bpe = ["das ist ein kle@@ iner test .", "wir ge@@ hen nach hause ."] * 10
    (tmp_path / "train.de").write_text("\n".join(bpe) + "\n")
    (tmp_path / "train.en").write_text("\n".join(["this is a test ."] * 20) + "\n")
    with pytest.raises(CorpusError, match=r"train\.de: 20 of 20 lines \(first: line 1\) have subword-nmt"):
        read_parallel(tmp_path / "train.de", tmp_path / "train.en")
    (tmp_path / "t.tsv").write_text("".join(f"x\t{b}\tok\n" for b in bpe))
    with pytest.raises(CorpusError, match="iwslt14"):
        read_tsv(tmp_path / "t.tsv", ("de", "en"), "de", "en")
    # a diff hunk in documentation is ordinary text
    plain = ["@@ -1,3 +1,4 @@ in a patch"] + ["ordinary line"] * 99
    (tmp_path / "a.en").write_text("\n".join(plain) + "\n")
    assert len(read_parallel(tmp_path / "a.en", tmp_path / "a.en")[0]) == 100


def test_tsv_rows_must_have_one_column_count(tmp_path):
    from preln.data.corpus import read_tsv

    (tmp_path / "t.tsv").write_text("src\tein Hund\ta dog\nsrc\tzwei\tHunde\tEXTRA\n")
    with pytest.raises(CorpusError, match=r"t\.tsv: line 2 has 4 columns, line 1 has 3"):
        read_tsv(tmp_path / "t.tsv", ("de", "en"), "de", "en")


def test_truncated_gzip_is_a_one_line_corpus_error(tmp_path):
    import gzip as gz

    data = gz.compress(("ein Hund\n" * 2000).encode())
    (tmp_path / "a.de.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorpusError, match=r"cannot read .*a\.de\.gz"):
        read_lines(tmp_path / "a.de.gz")


def test_empty_or_too_small_inputs_name_what_to_change(tmp_path):
    from preln.data.tokenizer import train_or_load

    folder = tmp_path / "c"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            (folder / f"{split}.{lang}").write_text("" if split == "train" else "ein hund\n")
    cfg = config.load(ROOT / "configs" / "tiny-translation.toml", ["data.corpus='parallel'", f"data.path='{folder}'"])
    with pytest.raises(CorpusError, match=r"the train split of .*c has no pairs"):
        load_data(cfg)
    with pytest.raises(ValueError, match="empty"):
        train_or_load(["", " "], 100, "bpe", tmp_path / "cache")
    text = ["".join(chr(0x4E00 + (i * 7 + j) % 3000) for j in range(30)) for i in range(300)]
    with pytest.raises(ValueError, match=r"data.vocab_size=50 does not fit this text: change data.vocab_size"):
        train_or_load(text, 50, "bpe", tmp_path / "cache")


def test_pair_batches_count_examples_without_collating():
    from preln.data.datasets import PairData

    examples = [([2, 5 + i % 7, 3, 9, 3], 3, i % 2) for i in range(40)]
    data = PairData({"train": examples, "valid": examples[:10]}, max_tokens=40, seed=1)
    assert data.num_batches() > 1
    for split in ("train", "valid"):
        counts = [data.ntokens(split, 3, k) for k in range(data.num_batches(split))]
        assert counts == [data.batch(split, 3, k).ntokens for k in range(data.num_batches(split))]
