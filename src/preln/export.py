"""``preln export RUN --format hf OUT``: a masked-LM run as a Hugging Face Transformers model, for
the tools people fine-tune in (the optional extra ``pip install 'preln[hf]'``).

Post-LN exports to ``BertForMaskedLM`` and Pre-LN to ``RobertaPreLayerNormForMaskedLM``, the
Transformers class whose layers compute x + F(LN(x)) with a final LayerNorm. Only what computes
the same function is exported; anything else is refused with the reason:

* both classes always normalize the embeddings and never scale them: ``model.embed_layernorm =
  true``, ``model.embed_scale = false`` (the BERT presets);
* ``RobertaPreLayerNorm``'s MLM head is hard-wired to GELU: a Pre-LN run needs ``activation =
  "gelu"``; other placements and RMSNorm have no Transformers class;
* RoBERTa numbers positions from ``pad_token_id + 1``: the position table is shifted to match;
* preln's masked LM is trained without segment ids, so the token-type row 0 (Transformers'
  default ``token_type_ids``) is exported as zeros: the default then computes what preln trained.

The run's ``spm.model`` is copied beside the weights; tokenize with it (ids are preln's).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from .config import ConfigError, ModelConfig
from .data.tokenizer import PAD
from .evaluate import load_run
from .model import MaskedLM


def check_exportable(c: ModelConfig) -> str:
    """The Transformers class for this model, or a ConfigError saying why there is none."""
    if c.task != "mlm":
        raise ConfigError(f"export --format hf: only masked-LM runs (model.task='mlm'), this is {c.task!r}")
    if c.norm not in ("post", "pre") or c.norm_type != "layernorm":
        raise ConfigError(
            f"export --format hf: no Transformers class computes model.norm={c.norm!r} with "
            f"norm_type={c.norm_type!r} (post -> BertForMaskedLM, pre -> RobertaPreLayerNormForMaskedLM)"
        )
    if not c.embed_layernorm or c.embed_scale:
        raise ConfigError("export --format hf: needs model.embed_layernorm = true and embed_scale = false")
    if c.norm == "pre" and c.activation != "gelu":
        raise ConfigError("export --format hf: RobertaPreLayerNorm's MLM head is GELU; this run uses ReLU")
    return "BertForMaskedLM" if c.norm == "post" else "RobertaPreLayerNormForMaskedLM"


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
        tie_word_embeddings=True,
    )
    config_cls = transformers.BertConfig if cls == "BertForMaskedLM" else transformers.RobertaPreLayerNormConfig
    return getattr(transformers, cls)(config_cls(**kwargs))


def _copy(dst: nn.Module, src: nn.Module) -> None:
    dst.weight.copy_(src.weight)
    if getattr(dst, "bias", None) is not None:
        dst.bias.copy_(src.bias)


def _copy_embeddings(emb: nn.Module, ours: MaskedLM, offset: int) -> None:
    e = ours.embed
    emb.word_embeddings.weight.copy_(ours.embed_tokens.weight)
    table = e.positions.weight if e.positions is not None else e.table
    emb.position_embeddings.weight.zero_()
    emb.position_embeddings.weight[offset : offset + table.shape[0]].copy_(table)
    emb.token_type_embeddings.weight.zero_()
    if e.segments is not None:  # row 0 stays zero: preln's MLM adds no segment embedding
        emb.token_type_embeddings.weight[1:].copy_(e.segments.weight[1:])
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


@torch.no_grad()
def to_hf(ours: MaskedLM) -> nn.Module:
    """The Transformers model that computes ``ours``'s masked-LM logits."""
    c = ours.config
    cls = check_exportable(c)
    hf = _hf_config(c, cls).eval()
    pre = c.norm == "pre"
    base = hf.roberta_prelayernorm if pre else hf.bert
    _copy_embeddings(base.embeddings, ours, PAD + 1 if pre else 0)
    for hf_layer, layer in zip(base.encoder.layer, ours.encoder.layers):
        _copy_layer(hf_layer, layer, pre)
    if pre:
        _copy(base.LayerNorm, ours.encoder.final_norm)
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
    """Write ``out/`` (config.json, model.safetensors, spm.model) from ``run``'s last checkpoint."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ConfigError("export --format hf needs transformers: pip install 'preln[hf]'") from None
    cfg, model, _ = load_run(run)
    check_exportable(cfg.model)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; give export a new folder")
    hf = to_hf(model.eval())
    hf.save_pretrained(out)
    shutil.copyfile(run / "spm.model", out / "spm.model")
    return out
