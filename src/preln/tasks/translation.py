"""Translation: an encoder-decoder (``Seq2Seq``) on a parallel corpus; validation decodes
greedily at epoch ends, ``preln evaluate`` scores beam search's BLEU. (Torch and the data are
imported where used: see ``tasks/__init__.py``.)"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..config import ModelConfig, RunConfig
from .base import Task

if TYPE_CHECKING:
    from torch import Tensor, nn

    from ..data.batching import Batch
    from ..data.tokenizer import Tokenizer


class TranslationTask(Task):
    name = "translation"
    uses = "translate"
    export = "seq2seq"
    evaluated = True
    decodes_at_epoch_end = True
    unused_parameters = False

    def checks(self, cfg: RunConfig) -> list[tuple[bool, str]]:
        return [(cfg.model.decoder_layers > 0, "model.decoder_layers must be > 0")]

    def build_model(self, c: ModelConfig, pad_id: int = 0) -> nn.Module:
        from ..model import Seq2Seq

        return Seq2Seq(c, pad_id)

    def load_data(self, cfg: RunConfig, tokenizer_file: Path | None = None) -> tuple:
        from ..data.corpus import CorpusError
        from ..data.datasets import TranslationData, cached_notes, finish, read_translation_examples

        d = cfg.data
        if d.corpus in ("text", "pairs"):
            raise CorpusError("translation needs a parallel corpus (data.corpus = multi30k, parallel or tsv)")
        examples, got = read_translation_examples(cfg, tokenizer_file)
        data = TranslationData(examples, d.max_tokens, cfg.train.seed, d.batch_size_multiple)
        data.token_ids, data.entry = got.provenance(), got.entry
        return finish(data, cached_notes(got), cfg), got.tok

    def loss(self, model: nn.Module, batch: Batch, eps: float) -> tuple[Tensor, Tensor]:
        from ..losses import label_smoothed_nll

        t = batch.tensors
        return label_smoothed_nll(model(t["src"], t["tgt_in"]), t["tgt_out"], eps)

    def layers(self, c: ModelConfig) -> int:
        return c.encoder_layers + c.decoder_layers

    def epoch_scores(self, model: nn.Module, tok: Tokenizer, cfg: RunConfig) -> dict:
        """Greedy BLEU on the valid split: a monitoring signal, at most 1.2 * src + 10 tokens so
        that an untrained model's epoch end stays cheap (``preln evaluate`` decodes as
        fairseq-generate does), in the precision the run trains in."""
        from ..data.datasets import read_pairs
        from ..decode import translate
        from ..decoding import Decoding
        from ..scores import bleu

        src, ref, _ = read_pairs(cfg, "valid")
        n = cfg.data.max_valid_examples or len(src)
        precision = "fp32" if cfg.train.precision == "fp32" else "bf16"
        hyps = translate(model.eval(), tok, src[:n], Decoding(beam=1, max_len_a=1.2, max_len_b=10, precision=precision))
        scores = bleu(hyps, ref[:n], cfg.data.tgt_lang, cfg.data.pretokenized)
        res = {"valid_bleu_greedy_tok_lc": scores["tok_lc"]}
        if "sacrebleu" in scores:
            res["valid_bleu_greedy"] = scores["sacrebleu"]
        return res
