"""``preln export --format hf``: a masked-LM run loaded back by Transformers computes preln's logits
(to 1e-5); what no Transformers class computes is refused. Skipped without transformers."""

import dataclasses

import pytest
import torch

from preln import config
from preln.cli import main
from preln.config import ModelConfig
from preln.fit import train
from preln.inference import load_run
from preln.model import MaskedLM

from .conftest import ROOT, require_data

transformers = pytest.importorskip("transformers")


def _ids(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (3, 11), generator=g)
    ids[1, 7:] = 0  # padding (id 0) at the end, as preln batches it
    ids[2, 4:] = 0
    return ids, ids != 0


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_an_exported_run_computes_prelns_logits(tmp_path, norm, capsys):
    require_data("english-mix")
    sets = [f"model.norm='{norm}'", "train.max_updates=8", "train.progress=false"]
    train(config.load(ROOT / "configs" / "tiny-mlm.toml", sets), tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    _, ours, _ = load_run(tmp_path / "run")
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    expected = {"post": "BertForMaskedLM", "pre": "RobertaPreLayerNormForMaskedLM"}[norm]
    assert type(hf).__name__ == expected and (tmp_path / "hf" / "spm.model").is_file()
    ids, keep = _ids(ours.config.vocab_size)
    with torch.no_grad():
        mine = ours.eval()(ids, mlm_positions=keep)
        theirs = hf(input_ids=ids, attention_mask=keep.long()).logits[keep]
    torch.testing.assert_close(theirs, mine, rtol=0, atol=1e-5)
    with torch.no_grad():  # the comparison can fail: a changed weight shows
        hf.get_input_embeddings().weight[7] += 0.1
        assert not torch.allclose(hf(input_ids=ids, attention_mask=keep.long()).logits[keep], mine, atol=1e-5)
    before = {f.name: f.read_bytes() for f in (tmp_path / "hf").iterdir()}
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "hf")]) == 0  # a rerun: left as it is
    assert {f.name: f.read_bytes() for f in (tmp_path / "hf").iterdir()} == before
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("someone's")
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "full")]) == 2  # not into a full folder
    assert "is not empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    "change,reason",
    [
        (dict(norm="sandwich"), "no Transformers class computes model.norm='sandwich'"),
        (dict(norm_type="rmsnorm"), "norm_type='rmsnorm'"),
        (dict(embed_scale=True), "embed_scale = false"),
        (dict(norm="pre", activation="relu"), "MLM head is GELU"),
    ],
)
def test_what_no_transformers_class_computes_is_refused(change, reason):
    from preln.export import to_hf

    base = dict(task="mlm", norm="post", vocab_size=50, d_model=16, n_heads=2, d_ffn=32, encoder_layers=1)
    base |= dict(activation="gelu", positions="learned", max_positions=32, embed_layernorm=True, embed_scale=False)
    with pytest.raises(config.ConfigError, match=reason):
        to_hf(MaskedLM(ModelConfig(**{**base, **change})))


def test_a_post_ln_translation_run_exports_to_fsmt_with_the_same_logits_and_greedy_output(tmp_path):
    require_data("multi30k")
    from preln.decode import greedy

    sets = ["model.norm='post'", "train.max_updates=30", "train.progress=false", "train.valid_bleu=false"]
    train(config.load(ROOT / "configs" / "tiny-translation.toml", sets), tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    _, ours, _ = load_run(tmp_path / "run")
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == "FSMTForConditionalGeneration"
    src, _ = _ids(ours.config.vocab_size)
    src[0, -1], src[1, 6], src[2, 3] = 3, 3, 3  # </s>, then the padding
    tgt = torch.randint(5, ours.config.vocab_size, (3, 6), generator=torch.Generator().manual_seed(1))
    tgt[:, 0] = 2
    with torch.no_grad():
        mine = ours.eval()(src, tgt)
        theirs = hf(input_ids=src, attention_mask=(src != 0).long(), decoder_input_ids=tgt, use_cache=False).logits
    torch.testing.assert_close(theirs, mine, rtol=0, atol=1e-5)
    limit = 12  # fairseq's length rule with a = 0: at most 12 tokens, then </s>
    with torch.no_grad():
        out = hf.generate(
            input_ids=src,
            attention_mask=(src != 0).long(),
            num_beams=1,
            do_sample=False,
            max_new_tokens=limit + 1,
            min_new_tokens=1,
            suppress_tokens=[0, 2, 4],
            forced_eos_token_id=3,
        )
    theirs = [[t for t in row[1:].tolist() if t not in (0, 3)] for row in out]
    assert theirs == greedy(ours, src, max_len_a=0, max_len_b=limit)


@pytest.mark.parametrize(
    "change,reason",
    [(dict(norm="pre"), "FSMT .* is Post-LN"), (dict(embed_layernorm=True), "no embedding LayerNorm")],
)
def test_a_translation_run_fsmt_cannot_compute_is_refused(change, reason):
    from preln.export import to_hf
    from preln.model import Seq2Seq

    base = dict(norm="post", vocab_size=50, d_model=16, n_heads=2, d_ffn=32, encoder_layers=1, decoder_layers=1)
    with pytest.raises(config.ConfigError, match=reason):
        to_hf(Seq2Seq(ModelConfig(**{**base, **change})))


def test_a_pair_pretrained_run_exports_its_trained_segment_embeddings(tmp_path):
    require_data("english-mix")
    sets = ["model.norm='post'", "train.max_updates=6", "train.progress=false", "data.mlm_pairs=true"]
    train(config.load(ROOT / "configs" / "tiny-mlm.toml", sets), tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    _, ours, _ = load_run(tmp_path / "run")
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    ids, keep = _ids(ours.config.vocab_size)
    segments = (torch.arange(ids.shape[1])[None] >= 3).long() * keep  # segment B from position 3
    with torch.no_grad():
        mine = ours.eval()(ids, segments=segments, mlm_positions=keep)
        theirs = hf(input_ids=ids, attention_mask=keep.long(), token_type_ids=segments).logits[keep]
    torch.testing.assert_close(theirs, mine, rtol=0, atol=1e-5)


def test_an_exported_masked_lm_tokenizes_and_fills_masks_as_preln_does(tmp_path):
    """AutoTokenizer and pipeline("fill-mask") load the exported folder alone: ids equal preln's
    on 300 corpus lines, and the pipeline's top filler is preln's own argmax at the mask."""
    import gzip

    corpus = require_data("english-mix", "mlm_mix.txt.gz")
    sets = ["train.max_updates=30", "train.progress=false"]
    train(config.load(ROOT / "configs" / "tiny-mlm.toml", sets), tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    _, ours, tok = load_run(tmp_path / "run")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    with gzip.open(corpus, "rt") as f:
        lines = [next(f).strip() for _ in range(300)]
    assert [hf_tok(ln)["input_ids"] for ln in lines] == [[2, *ids, 3] for ids in tok.encode(lines)]
    fill = transformers.pipeline("fill-mask", model=str(tmp_path / "hf"), top_k=1)
    for text in ("the <mask> of the city", "she was born in <mask> ."):
        ids = torch.tensor([hf_tok(text)["input_ids"]])
        at = ids == hf_tok.mask_token_id
        with torch.no_grad():
            mine = ours.eval()(ids, mlm_positions=at).argmax(-1).item()
        assert fill(text)[0]["token"] == mine, text


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_an_exported_classifier_computes_prelns_probabilities(tmp_path, norm):
    """A fine-tuned classifier exports to *ForSequenceClassification with its tokenizer: on dev
    pairs, Transformers alone gives preln's class probabilities, and the pipeline preln's labels."""
    from preln.data.corpus import read_pair_tsv
    from preln.data.datasets import pair_file
    from preln.finetune import finetune
    from preln.predict import classify

    require_data("english-mix")
    require_data("pairclf")
    sets = [f"model.norm='{norm}'", "train.max_updates=8", "train.progress=false"]
    train(config.load(ROOT / "configs" / "tiny-mlm.toml", sets), tmp_path / "mlm")
    finetune(tmp_path / "mlm", "paraphrase", tmp_path / "ft", ["train.max_updates=6", "train.progress=false"])
    assert main(["export", str(tmp_path / "ft"), str(tmp_path / "hf")]) == 0
    cfg, ours, tok = load_run(tmp_path / "ft")
    s1, s2, _ = read_pair_tsv(pair_file(cfg, "valid"), cfg.data.pair_columns, cfg.data.pair_labels, True)
    pairs = [(a, b) for a, b in zip(s1, s2) if len(tok.encode([a + " " + b])[0]) < cfg.data.max_len - 3][:20]
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    enc = hf_tok([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = hf(**enc).logits.softmax(-1)
    mine = torch.tensor([list(p.probs.values()) for p in classify(ours, tok, cfg, pairs)])
    torch.testing.assert_close(theirs, mine, rtol=0, atol=1e-5)
    pipe = transformers.pipeline("text-classification", model=str(tmp_path / "hf"))
    got = [pipe({"text": a, "text_pair": b})["label"] for a, b in pairs[:5]]
    assert got == [p.label for p in classify(ours, tok, cfg, pairs[:5])]


def test_a_pre_ln_causal_lm_exports_to_gpt2_with_its_logits_tokens_and_greedy_continuations(tmp_path):
    """GPT2LMHeadModel, AutoTokenizer and generate() on the exported folder alone: preln's logits
    (right padding under an attention mask), its prompt ids, and ``preln generate``'s greedy output."""
    require_data("english-mix")
    from preln.decode import sample

    train(config.load(ROOT / "configs" / "tiny-causal.toml", ["train.progress=false"]), tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    _, ours, tok = load_run(tmp_path / "run")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == "GPT2LMHeadModel"
    ids, keep = _ids(ours.config.vocab_size)
    with torch.no_grad():
        mine = ours.eval()(ids)[keep]
        theirs = hf(input_ids=ids, attention_mask=keep.long()).logits[keep]
    torch.testing.assert_close(theirs, mine, rtol=0, atol=1e-5)
    with torch.no_grad():  # the comparison can fail: a changed weight shows
        hf.transformer.h[-1].mlp.c_proj.bias[0] += 0.1  # one coordinate: the final LayerNorm removes a shift of all
        assert not torch.allclose(hf(input_ids=ids, attention_mask=keep.long()).logits[keep], mine, atol=1e-5)
        hf.transformer.h[-1].mlp.c_proj.bias[0] -= 0.1
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    for prompt in ["the house", "in 1998 the city council"]:
        prompt_ids = tokenizer(prompt)["input_ids"]
        assert prompt_ids == [2] + tok.encode([prompt])[0]  # <s> A, as preln generate reads a prompt
        with torch.no_grad():
            out = hf.generate(torch.tensor([prompt_ids]), do_sample=False, max_new_tokens=12, suppress_tokens=[0, 2, 4])
        new = out[0, len(prompt_ids) :].tolist()
        got = new[: new.index(3)] if 3 in new else new  # up to </s>, as preln stops
        assert got == sample(ours, [prompt_ids], 12)[0]
        # the text-generation pipeline appends the decoded continuation to the prompt's text: that
        # must be preln generate's text, for any continuation
        more = tok.encode(["and then the city"])[0]  # a continuation's first piece starts a word
        theirs = prompt + tokenizer.decode(more, skip_special_tokens=True)
        assert theirs == tok.decode([prompt_ids[1:] + more])[0]


@pytest.mark.parametrize(
    "positions,embed_scale,activation",
    [("sinusoidal", True, "relu"), ("learned", True, "gelu"), ("sinusoidal", False, "gelu")],
)
def test_gpt2_computes_a_pre_ln_causal_lm_of_any_positions_and_embedding_scale_in_float64(
    positions, embed_scale, activation
):
    """An untrained model in float64: a sinusoidal table as GPT-2's position embedding, and an
    embedding scaled by sqrt(d) exported untied from the output projection."""
    from preln.decode import sample
    from preln.export import to_hf
    from preln.model import CausalLM

    c = ModelConfig(task="causal", norm="pre", vocab_size=40, d_model=16, n_heads=2, d_ffn=32, encoder_layers=2)
    c = dataclasses.replace(c, positions=positions, embed_scale=embed_scale, activation=activation)
    torch.manual_seed(0)
    ours = CausalLM(c).eval()
    with torch.no_grad():
        for p in ours.parameters():  # away from init's zeros and ones, so that every weight counts
            p.add_(0.3 * torch.randn_like(p))
        ours.embed_tokens.weight.mul_(0.25)  # else the scaled embedding has the model repeat its last token
    hf = to_hf(ours).double()
    ours = ours.double()
    ids, keep = _ids(c.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(
            hf(input_ids=ids, attention_mask=keep.long()).logits[keep], ours(ids)[keep], rtol=0, atol=1e-10
        )
    assert (hf.lm_head.weight is hf.transformer.wte.weight) == (not embed_scale)
    prompts = [[2, 7, 9, 11], [2, 30, 5, 17, 22]]  # greedy, with the KV cache: generate() continues as preln
    mine = sample(ours, prompts, 15)
    assert len({t for m in mine for t in m}) > 2  # the continuations vary: the comparison can fail
    for prompt, expected in zip(prompts, mine):
        with torch.no_grad():
            out = hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=15, suppress_tokens=[0, 2, 4])
        new = out[0, len(prompt) :].tolist()
        assert (new[: new.index(3)] if 3 in new else new) == expected


@pytest.mark.parametrize(
    "change,reason",
    [
        (dict(norm="post"), "GPT-2 is Pre-LN"),
        (dict(norm_type="rmsnorm"), "norm_type='rmsnorm'"),
        (dict(embed_layernorm=True), "no embedding LayerNorm"),
    ],
)
def test_a_causal_lm_gpt2_cannot_compute_is_refused(change, reason):
    from preln.export import to_hf
    from preln.model import CausalLM

    base = dict(task="causal", norm="pre", vocab_size=50, d_model=16, n_heads=2, d_ffn=32, encoder_layers=1)
    with pytest.raises(config.ConfigError, match=reason):
        to_hf(CausalLM(ModelConfig(**{**base, **change})))
