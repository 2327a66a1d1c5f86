"""``preln export RUN --format hf OUT``: a run as a Hugging Face Transformers model, for the tools
people fine-tune and generate with (the optional extra ``pip install 'preln[hf]'``).

A masked-LM run: Post-LN exports to ``BertForMaskedLM`` and Pre-LN to
``RobertaPreLayerNormForMaskedLM``, the Transformers class whose layers compute x + F(LN(x)) with a
final LayerNorm; a fine-tuned classifier to ``BertForSequenceClassification`` /
``RobertaPreLayerNormForSequenceClassification`` (preln's pooler and classifier are BERT's pooler
and classifier, and RoBERTa's two-layer head), with the task's labels. A Post-LN translation run
exports to ``FSMTForConditionalGeneration`` (fairseq's Transformer in Transformers: the same
layers, sinusoidal positions with fairseq's table, embeddings scaled by sqrt(d); preln's shared
source/target embedding is written to both). A Pre-LN causal LM exports to ``GPT2LMHeadModel``
(GPT-2's blocks are x + F(LN(x)) with a final LayerNorm: preln's Pre-LN, with Q, K, V fused and
weights stored (in, out); a sinusoidal table becomes its position embedding; with
``model.embed_scale`` the input embedding is sqrt(d) times the output projection, so the two are
written untied). Only what computes the same function is exported; anything else is refused with
the reason:

* both classes always normalize the embeddings and never scale them: ``model.embed_layernorm =
  true``, ``model.embed_scale = false`` (the BERT presets);
* ``RobertaPreLayerNorm``'s MLM head is hard-wired to GELU: a Pre-LN run needs ``activation =
  "gelu"``; other placements and RMSNorm have no Transformers class;
* RoBERTa numbers positions from ``pad_token_id + 1``: the position table is shifted to match;
* preln's masked LM is trained without segment ids unless ``data.mlm_pairs``, so the token-type
  row 0 (Transformers' default ``token_type_ids``) is exported as zeros: the default then
  computes what preln trained; a pair-pretrained run's segment embeddings are exported as trained.

The run's ``spm.model`` is copied beside the weights, with a Transformers tokenizer built from it
(``tokenizer_export.py``) for masked-LM, classifier and causal-LM runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from . import checkpoint, tasks
from .config import ConfigError, ModelConfig
from .data.tokenizer import BOS, EOS, PAD
from .inference import load_run
from .model import CausalLM, MaskedLM, Seq2Seq
from .runs import RunFolder
from .tokenizer_export import write_tokenizer


def check_exportable(c: ModelConfig) -> str:
    """The Transformers class for this model, or a ConfigError saying why there is none."""
    task = tasks.get(c.task)
    if task.export in _ONE_CLASS:
        return _check_one_class(c, task.export)
    head = task.hf_head
    if task.export != "encoder":
        raise ConfigError(f"export --format hf: no Transformers export for {c.task!r} runs")
    if c.norm not in ("post", "pre") or c.norm_type != "layernorm":
        raise ConfigError(
            f"export --format hf: no Transformers class computes model.norm={c.norm!r} with "
            f"norm_type={c.norm_type!r} (post -> Bert, pre -> RobertaPreLayerNorm)"
        )
    if not c.embed_layernorm or c.embed_scale:
        raise ConfigError("export --format hf: needs model.embed_layernorm = true and embed_scale = false")
    if c.norm == "pre" and c.activation != "gelu" and head == "MaskedLM":
        raise ConfigError("export --format hf: RobertaPreLayerNorm's MLM head is GELU; this run uses ReLU")
    return f"{'Bert' if c.norm == 'post' else 'RobertaPreLayerNorm'}For{head}"


def _check_one_class(c: ModelConfig, kind: str) -> str:
    one = _ONE_CLASS[kind]
    if c.norm != one.norm or c.norm_type != "layernorm":
        raise ConfigError(
            f"export --format hf: {one.name} is {one.norm.capitalize()}-LN with LayerNorm; this run has "
            f"model.norm={c.norm!r}, norm_type={c.norm_type!r}, which no Transformers {one.family} class computes"
        )
    if c.embed_layernorm or c.activation not in ("relu", "gelu"):
        raise ConfigError(f"export --format hf: {one.name} has no embedding LayerNorm and needs a relu or gelu FFN")
    return one.cls


def _hf_config(c: ModelConfig, cls: str):
    import transformers

    offset = PAD + 1 if cls.startswith("Roberta") else 0  # RoBERTa's positions start after the pad id
    kwargs = dict(
        vocab_size=c.vocab_size,
        hidden_size=c.d_model,
        num_hidden_layers=c.encoder_layers,
        num_attention_heads=c.n_heads,
        intermediate_size=c.d_ffn,
        hidden_act=c.activation,
        hidden_dropout_prob=c.dropout,
        attention_probs_dropout_prob=c.attention_dropout,
        max_position_embeddings=c.max_positions + offset,
        type_vocab_size=max(c.type_vocab_size, 1),
        layer_norm_eps=1e-5,  # torch's LayerNorm default, which preln's layers use
        pad_token_id=PAD,
        tie_word_embeddings=cls.endswith("MaskedLM"),
        num_labels=max(c.num_classes, 1),
        classifier_dropout=c.dropout,
    )
    config_cls = transformers.BertConfig if cls.startswith("Bert") else transformers.RobertaPreLayerNormConfig
    return getattr(transformers, cls)(config_cls(**kwargs))


def _copy(dst: nn.Module, src: nn.Module) -> None:
    dst.weight.copy_(src.weight)
    if getattr(dst, "bias", None) is not None:
        dst.bias.copy_(src.bias)


def _copy_embeddings(emb: nn.Module, ours: MaskedLM, offset: int, segments: bool) -> None:
    e = ours.embed
    emb.word_embeddings.weight.copy_(ours.embed_tokens.weight)
    table = e.positions.weight if e.positions is not None else e.table
    emb.position_embeddings.weight.zero_()
    emb.position_embeddings.weight[offset : offset + table.shape[0]].copy_(table)
    emb.token_type_embeddings.weight.zero_()
    if e.segments is not None:  # without pair-packed pretraining, row 0 stays zero: no segment was added
        first = 0 if segments else 1
        emb.token_type_embeddings.weight[first:].copy_(e.segments.weight[first:])
    _copy(emb.LayerNorm, e.norm)


def _copy_layer(hf_layer: nn.Module, layer: nn.Module, pre: bool) -> None:
    att = hf_layer.attention
    _copy(att.self.query, layer.self_attn.q_proj)
    _copy(att.self.key, layer.self_attn.k_proj)
    _copy(att.self.value, layer.self_attn.v_proj)
    _copy(att.output.dense, layer.self_attn.out_proj)
    _copy(hf_layer.intermediate.dense, layer.ffn.w1)
    _copy(hf_layer.output.dense, layer.ffn.w2)
    if pre:  # the norms before the sub-layers
        _copy(att.LayerNorm, layer.attn_res.norm)
        _copy(hf_layer.intermediate.LayerNorm, layer.ffn_res.norm)
    else:  # the norms after the residual sums
        _copy(att.output.LayerNorm, layer.attn_res.norm)
        _copy(hf_layer.output.LayerNorm, layer.ffn_res.norm)


def _fsmt(c: ModelConfig):
    import transformers

    config = transformers.FSMTConfig(
        langs=["src", "tgt"],
        src_vocab_size=c.vocab_size,
        tgt_vocab_size=c.vocab_size,
        activation_function=c.activation,
        d_model=c.d_model,
        max_position_embeddings=c.max_positions,
        encoder_ffn_dim=c.d_ffn,
        encoder_layers=c.encoder_layers,
        encoder_attention_heads=c.n_heads,
        decoder_ffn_dim=c.d_ffn,
        decoder_layers=c.decoder_layers,
        decoder_attention_heads=c.n_heads,
        dropout=c.dropout,
        attention_dropout=c.attention_dropout,
        scale_embedding=c.embed_scale,
        tie_word_embeddings=True,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        decoder_start_token_id=BOS,  # preln's decoder starts from <s>
        forced_eos_token_id=None,
        num_beams=5,
        length_penalty=1.0,
        early_stopping=True,  # fairseq: a sentence is done with K finished hypotheses
        max_length=c.max_positions,
    )
    return transformers.FSMTForConditionalGeneration(config)


def _fsmt_layer(hf_layer: nn.Module, layer: nn.Module) -> None:
    if not hasattr(layer, "cross_attn"):  # an encoder layer
        attns = [(hf_layer.self_attn, layer.self_attn, hf_layer.self_attn_layer_norm, layer.attn_res.norm)]
    else:
        attns = [
            (hf_layer.self_attn, layer.self_attn, hf_layer.self_attn_layer_norm, layer.self_res.norm),
            (hf_layer.encoder_attn, layer.cross_attn, hf_layer.encoder_attn_layer_norm, layer.cross_res.norm),
        ]
    for hf_att, att, hf_norm, norm in attns:
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _copy(getattr(hf_att, name), getattr(att, name))
        _copy(hf_norm, norm)
    _copy(hf_layer.fc1, layer.ffn.w1)
    _copy(hf_layer.fc2, layer.ffn.w2)
    _copy(hf_layer.final_layer_norm, layer.ffn_res.norm)


@torch.no_grad()
def to_fsmt(ours: Seq2Seq) -> nn.Module:
    """The FSMT model that computes ``ours``'s translation logits: fairseq numbers positions from
    ``pad_token_id + 1``, so preln's position table is written there."""
    check_exportable(ours.config)
    hf = _fsmt(ours.config).eval()
    for stack, hf_stack, emb in (
        (ours.encoder, hf.model.encoder, ours.src_embed),
        (ours.decoder, hf.model.decoder, ours.tgt_embed),
    ):
        hf_stack.embed_tokens.weight.copy_(ours.embed_tokens.weight)
        table = emb.positions.weight if emb.positions is not None else emb.table
        pos = hf_stack.embed_positions.weight
        pos.zero_()
        pos[PAD + 1 : PAD + 1 + table.shape[0]].copy_(table)
        for hf_layer, layer in zip(hf_stack.layers, stack.layers):
            _fsmt_layer(hf_layer, layer)
    hf.model.decoder.output_projection.weight = hf.model.decoder.embed_tokens.weight  # tied, as in preln
    return hf


def _gpt2(c: ModelConfig):
    import transformers

    config = transformers.GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.max_positions,
        n_embd=c.d_model,
        n_layer=c.encoder_layers,
        n_head=c.n_heads,
        n_inner=c.d_ffn,
        activation_function=c.activation,  # "gelu": the exact (erf) GELU, as preln's
        resid_pdrop=c.dropout,
        embd_pdrop=c.dropout,
        attn_pdrop=c.attention_dropout,
        layer_norm_epsilon=1e-5,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        tie_word_embeddings=not c.embed_scale,
    )
    return transformers.GPT2LMHeadModel(config)


def _copy_conv1d(dst: nn.Module, src: nn.Linear) -> None:
    """GPT-2's Conv1D computes x W + b with W stored (in, out): nn.Linear's weight transposed."""
    dst.weight.copy_(src.weight.T)
    dst.bias.copy_(src.bias)


@torch.no_grad()
def to_gpt2(ours: CausalLM) -> nn.Module:
    """The ``GPT2LMHeadModel`` that computes ``ours``'s next-token logits."""
    c = ours.config
    check_exportable(c)
    hf = _gpt2(c).eval()
    t = hf.transformer
    tokens = ours.embed_tokens.weight
    t.wte.weight.copy_(ours.embed.scale * tokens)
    t.wpe.weight.copy_(ours.embed.positions.weight if ours.embed.positions is not None else ours.embed.table)
    for block, layer in zip(t.h, ours.decoder.layers):
        att = layer.self_attn
        qkv = (att.q_proj, att.k_proj, att.v_proj)  # GPT-2 splits its c_attn output as Q, K, V
        block.attn.c_attn.weight.copy_(torch.cat([p.weight for p in qkv]).T)
        block.attn.c_attn.bias.copy_(torch.cat([p.bias for p in qkv]))
        _copy_conv1d(block.attn.c_proj, att.out_proj)
        _copy_conv1d(block.mlp.c_fc, layer.ffn.w1)
        _copy_conv1d(block.mlp.c_proj, layer.ffn.w2)
        _copy(block.ln_1, layer.attn_res.norm)
        _copy(block.ln_2, layer.ffn_res.norm)
    _copy(t.ln_f, ours.decoder.final_norm)
    if c.embed_scale:  # the input embedding is scaled, the output projection is not: untied
        hf.lm_head.weight.copy_(tokens)
    else:
        hf.lm_head.weight = t.wte.weight  # tied, as in preln
    return hf


class _OneClass(NamedTuple):
    """A task's one Transformers class, what it computes (its placement, LayerNorm, no embedding
    LayerNorm, a relu or gelu FFN) and the function that converts preln's model to it."""

    cls: str
    name: str
    norm: str
    family: str
    convert: Callable[[nn.Module], nn.Module]


_ONE_CLASS = {
    "seq2seq": _OneClass(
        "FSMTForConditionalGeneration", "FSMT (fairseq's Transformer)", "post", "translation", to_fsmt
    ),
    "causal": _OneClass("GPT2LMHeadModel", "GPT-2", "pre", "causal-LM", to_gpt2),
}


@torch.no_grad()
def to_hf(ours: MaskedLM | Seq2Seq | CausalLM, segments: bool = False) -> nn.Module:
    """The Transformers model that computes ``ours``'s logits (masked LM, translation, causal LM).
    ``segments``: the masked LM was pretrained on segment pairs (``data.mlm_pairs``), so its
    segment-0 embedding is trained and is exported as it is."""
    c = ours.config
    cls = check_exportable(c)
    kind = tasks.get(c.task).export
    if kind in _ONE_CLASS:
        return _ONE_CLASS[kind].convert(ours)
    hf = _hf_config(c, cls).eval()
    pre = c.norm == "pre"
    base = hf.roberta_prelayernorm if pre else hf.bert
    classifier = cls.endswith("SequenceClassification")
    segments = segments or classifier  # fine-tuning adds segment 0 to sentence A: trained
    _copy_embeddings(base.embeddings, ours, PAD + 1 if pre else 0, segments)
    for hf_layer, layer in zip(base.encoder.layer, ours.encoder.layers):
        _copy_layer(hf_layer, layer, pre)
    if pre:
        _copy(base.LayerNorm, ours.encoder.final_norm)
    if classifier:  # BERT's pooler + classifier; RoBERTa's head is the same two layers
        _copy(hf.classifier.dense if pre else base.pooler.dense, ours.pooler)
        _copy(hf.classifier.out_proj if pre else hf.classifier, ours.classifier)
        return hf
    if pre:
        head = hf.lm_head
        _copy(head.dense, ours.lm_dense)
        _copy(head.layer_norm, ours.lm_norm)
        head.bias.copy_(ours.lm_bias)
        head.decoder.bias.copy_(ours.lm_bias)
    else:
        head = hf.cls.predictions
        _copy(head.transform.dense, ours.lm_dense)
        _copy(head.transform.LayerNorm, ours.lm_norm)
        head.bias.copy_(ours.lm_bias)
        head.decoder.bias.copy_(ours.lm_bias)
    hf.get_output_embeddings().weight = hf.get_input_embeddings().weight  # tied, as in preln
    return hf


def export_hf(run: Path, out: Path) -> Path:
    """Write ``out/`` (config.json, model.safetensors, spm.model) from ``run``'s last checkpoint.
    The folder is written under a temporary name beside ``out`` and renamed into place: a killed
    export leaves no partial ``out`` (its leftovers are removed by the next export), and of two
    exports into one folder one wins and the other says so. ``out/preln_export.json`` names the
    run and checkpoint: rerunning a finished export of the same checkpoint leaves it as it is."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ConfigError("export --format hf needs transformers: pip install 'preln[hf]'") from None
    status = RunFolder(run, writer=False).status() or {}
    if status.get("status") == "diverged":
        raise ConfigError(f"{run} diverged at update {status.get('update')}: its weights are not a trained model")
    cfg, model, _ = load_run(run)
    check_exportable(cfg.model)
    source = _source(run)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if _exported_from(out) == source:  # a rerun (after a kill, say) of an export that had finished
            return out
        raise ConfigError(f"{out} is not empty; give export a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    tmp = out.parent / f".{out.name}.export-{os.getpid()}"
    try:
        hf = to_hf(model.eval(), segments=cfg.data.mlm_pairs)
        if tasks.get(cfg.model.task).hf_head == "SequenceClassification":  # the pipeline's labels: the task's
            hf.config.id2label = dict(enumerate(cfg.data.pair_labels))
            hf.config.label2id = {v: k for k, v in hf.config.id2label.items()}
        hf.save_pretrained(tmp)
        shutil.copyfile(run / "spm.model", tmp / "spm.model")
        kind = tasks.get(cfg.model.task).export
        if kind in ("encoder", "causal"):  # AutoTokenizer and the pipelines load it from the folder
            write_tokenizer(run / "spm.model", tmp, causal=kind == "causal")
        (tmp / SOURCE).write_text(json.dumps(source, indent=1) + "\n")
        try:
            os.rename(tmp, out)  # atomic; fails if another export filled ``out`` meanwhile
        except OSError:
            raise ConfigError(f"{out} is not empty; give export a new folder") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


SOURCE = "preln_export.json"
"""In the exported folder: the run and checkpoint it was made from (the SHA-256 of its weights)."""


def _source(run: Path) -> dict:
    ckpt = checkpoint.newest_good(run / "checkpoints")  # the one load_run read
    try:
        files = json.loads((ckpt / checkpoint.MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError):
        files = {}
    weights = files.get("model.safetensors", {}).get("sha256")
    shards = sorted(n for n in files if n.startswith(f"{checkpoint.SHARDS}/"))
    if weights is None and shards:  # a sharded checkpoint: the digest of its shards' (optimizer included)
        weights = hashlib.sha256("".join(files[n]["sha256"] for n in shards).encode()).hexdigest()
    return {"run": str(run.resolve()), "checkpoint": ckpt.name, "model_sha256": weights}


def _exported_from(out: Path) -> dict | None:
    try:
        return json.loads((out / SOURCE).read_text())
    except (OSError, ValueError):
        return None


def _remove_stale(out: Path) -> None:
    """Leftovers of exports into ``out`` that were killed (their process is gone)."""
    for p in out.parent.glob(f".{out.name}.export-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(p, ignore_errors=True)
