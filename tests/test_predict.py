"""`preln predict`: a masked LM's fillers per <mask> and a fine-tuned classifier's labels, equal to
what the model computes the way training fed it."""

import json

import pytest
import torch

from preln import config
from preln.cli import main
from preln.data.corpus import read_pair_tsv
from preln.data.datasets import pair_file
from preln.finetune import finetune
from preln.fit import train
from preln.inference import load_run
from preln.predict import classify, fill_masks, mask_ids
from preln.tasks import load_data

from .conftest import ROOT, require_data


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    require_data("english-mix")
    require_data("pairclf")
    root = tmp_path_factory.mktemp("predict")
    train(
        config.load(ROOT / "configs" / "tiny-mlm.toml", ["train.max_updates=10", "train.progress=false"]), root / "mlm"
    )
    sets = ["train.max_updates=3", "train.progress=false", "data.max_train_examples=64"]
    finetune(root / "mlm", "paraphrase", root / "ft", sets)
    return root


def test_fillers_are_the_models_most_probable_pieces(runs, tmp_path, capsys):
    _, model, tok = load_run(runs / "mlm")
    texts = ["the <mask> of the city .", "she was born in <mask> and <mask> .", "no mask here"]
    filled = fill_masks(model, tok, texts, top_k=3)
    ids = torch.tensor([mask_ids(tok, texts[1])])
    assert (ids == 4).sum() == 2 and tok.sp.piece_to_id("▁") not in ids[0, :-1][ids[0, 1:] == 4].tolist()
    with torch.no_grad():
        probs = model.eval()(ids, mlm_positions=ids == 4).softmax(-1)  # (2, V)
    for m, row in zip(filled[1].fillers, probs):
        assert [f.id for f in m] == row.topk(3).indices.tolist()
        assert [f.prob for f in m] == pytest.approx(row.topk(3).values.tolist(), abs=1e-6)
    assert filled[2].fillers == [] and filled[2].text == "no mask here"
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    assert main(["predict", str(runs / "mlm"), "--input", str(tmp_path / "in.txt"), "--json", "--top-k", "2"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and [len(r["fillers"]) for r in rows] == [1, 2, 0]


def test_a_classifier_predicts_as_its_fine_tuning_evaluated(runs, tmp_path, capsys):
    cfg, model, tok = load_run(runs / "ft")
    s1, s2, labels = read_pair_tsv(pair_file(cfg, "valid"), cfg.data.pair_columns, cfg.data.pair_labels, True)
    preds = classify(model, tok, cfg, list(zip(s1[:40], s2[:40])))
    data, _ = load_data(cfg, runs / "ft" / "spm.model")
    expected = []
    for k in range(data.num_batches("valid")):
        t = data.batch("valid", 0, k).tensors
        with torch.no_grad():
            expected += model(t["ids"], segments=t["segments"], classify=True).softmax(-1).tolist()
    order = [i for k in range(data.num_batches("valid")) for i in data.batch_indices("valid", 0, k)]
    by_index = dict(zip(order, expected))
    for i, p in enumerate(preds):
        assert list(p.probs.values()) == pytest.approx(by_index[i], abs=1e-5)
        assert p.label == cfg.data.pair_labels[max(range(2), key=by_index[i].__getitem__)]
    (tmp_path / "pairs.tsv").write_text(f"{s1[0]}\t{s2[0]}\nonly one sentence\n")
    assert main(["predict", str(runs / "ft"), "--input", str(tmp_path / "pairs.tsv")]) == 2
    out = capsys.readouterr()
    assert out.out.count("\n") == 1 and out.out.split("\t")[0] == preds[0].label  # the good line first
    assert "input line 2: expected two non-empty sentences" in out.err


def test_predict_refuses_a_translation_run(tmp_path, capsys):
    require_data("multi30k")
    sets = ["train.max_updates=1", "train.progress=false", "train.valid_bleu=false"]
    train(config.load(ROOT / "configs" / "tiny-translation.toml", sets), tmp_path / "mt")
    (tmp_path / "in.txt").write_text("ein hund\n")
    assert main(["predict", str(tmp_path / "mt"), "--input", str(tmp_path / "in.txt")]) == 2
    assert "use preln translate" in capsys.readouterr().err
