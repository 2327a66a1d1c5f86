"""A Transformers (``tokenizers``) tokenizer equal to a run's SentencePiece model, written with
the exported model so that ``AutoTokenizer.from_pretrained(OUT)`` and
``pipeline("fill-mask", model=OUT)`` work with no extra step.

The SentencePiece BPE model becomes a ``tokenizers`` BPE model with the same pieces and ids; its
merges are every split of a piece into two pieces of the vocabulary, ranked as SentencePiece ranks
the merged piece; the normalizer is SentencePiece's own (its precompiled character map, then
stripping and collapsing spaces), pre-tokenization and decoding its ``▁`` word marker. Special
tokens keep preln's ids (<pad> 0, <unk> 1, <s>/<cls> 2, </s>/<sep> 3, <mask> 4); a text becomes
``<s> A </s>``, a pair ``<s> A </s> B </s>`` with token type 1 for B, as preln's masked LM reads
them; for a causal LM a text is ``<s> A``, a prompt as ``preln generate`` continues it. Tested: ids
equal preln's on corpus lines."""

from __future__ import annotations

from pathlib import Path

from .data.tokenizer import BOS, EOS
from .errors import UsageError

SPECIAL = ("<pad>", "<unk>", "<s>", "</s>", "<mask>")


def hf_tokenizer(spm_model: bytes, causal: bool = False):
    """A ``PreTrainedTokenizerFast`` of the SentencePiece BPE model ``spm_model`` (its bytes).
    ``causal``: a text becomes ``<s> A``, a prompt as preln's causal LM continues it."""
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(spm_model)
    if proto.trainer_spec.model_type != sentencepiece_model_pb2.TrainerSpec.BPE:
        raise UsageError("only a SentencePiece BPE vocabulary (data.spm_model = 'bpe') is exported as a tokenizer")
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    ranked = sorted(
        (vocab[piece], vocab[piece[:k]], vocab[piece[k:]], piece[:k], piece[k:])
        for piece in vocab
        for k in range(1, len(piece))
        if piece[:k] in vocab and piece[k:] in vocab
    )
    tok = Tokenizer(models.BPE(vocab, [(a, b) for *_, a, b in ranked], unk_token="<unk>", fuse_unk=True))
    charsmap = proto.normalizer_spec.precompiled_charsmap
    steps = [normalizers.Precompiled(charsmap)] if charsmap else []
    tok.normalizer = normalizers.Sequence([*steps, normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    # a causal LM's continuation is decoded alone (Transformers' text-generation pipeline appends it to
    # the prompt): its first word keeps its space there, so the decoder strips none
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never" if causal else "always")
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    specials = [("<s>", BOS), ("</s>", EOS)]
    names = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}
    if causal:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=specials[:1])
        inputs = ["input_ids", "attention_mask"]
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1", special_tokens=specials
        )
        names |= {"cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"}
        inputs = ["input_ids", "token_type_ids", "attention_mask"]  # sentence B's segment, as preln feeds it
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_input_names=inputs, **names)


def write_tokenizer(spm_file: Path, out: Path, causal: bool = False) -> None:
    """``tokenizer.json`` and ``tokenizer_config.json`` of ``spm_file`` into ``out`` (``causal``:
    see :func:`hf_tokenizer`)."""
    hf_tokenizer(spm_file.read_bytes(), causal).save_pretrained(out)
