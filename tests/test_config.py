import pytest

from preln import config
from preln.config import ConfigError, RunConfig

from .conftest import ROOT


def test_all_shipped_presets_load_and_roundtrip():
    presets = sorted((ROOT / "configs").glob("*.toml"))
    assert len(presets) >= 6
    for p in presets:
        cfg = config.load(p)
        assert config.from_dict(__import__("tomllib").loads(config.dumps(cfg))) == cfg, p


@pytest.mark.parametrize(
    "text, message",
    [
        ("[model]\nnorms = 'pre'", "model.norms: unknown key"),
        ("[modle]\nnorm = 'pre'", "modle: unknown key"),
        ("[model]\nnorm = 'middle'", "model.norm: 'middle' is not one of 'post', 'pre'"),
        ("[model]\nd_model = '512'", "model.d_model: expected an integer"),
        ("[optim]\nlr = -1.0", "optim.lr must be > 0"),
        ("[optim]\nbetas = [0.9]", "optim.betas: expected 2 values"),
        ("[train]\nseed = 1.5", "train.seed: expected an integer"),
        ("[model]\nd_model = 30\nn_heads = 4", "divide by n_heads"),
        ("[data]\nmax_len = 128\nmax_tokens = 100", "data.max_tokens must hold at least one longest example"),
        ("[schedule]\nkind = 'inverse_sqrt'\nwarmup = 0", "schedule.timescale must be > 0"),
        ("model = 3", "model: expected a table"),
        ("[optim]\nlr = inf", "optim.lr: expected a finite number"),
        ("[schedule]\nwarmup_init_lr = -1.0", "schedule.warmup_init_lr must be >= 0"),
        ("[schedule]\ngamma = -1.0", "schedule.gamma > 0"),
        ("[train]\ndevice = 'gpu'", "train.device: 'gpu' is not one of"),
        ("[train]\nthreads = -1", "train.threads must be >= 0"),
        ("[model]\ntype_vocab_size = -1", "model.type_vocab_size must be >= 0"),
        ("[model]\nmax_positions = 64\n[data]\nmax_len = 100", "model.max_positions (64) must be >= data.max_len"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, message):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.load(p)


def test_overrides_typed_and_checked(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[model]\nnorm = 'pre'\n")
    cfg = config.load(p, ["model.norm=post", "optim.lr=1e-3", "optim.betas=[0.9, 0.999]", "train.max_updates=5"])
    assert cfg.model.norm == "post" and cfg.optim.lr == 1e-3 and cfg.optim.betas == (0.9, 0.999)
    assert cfg.train.max_updates == 5
    with pytest.raises(ConfigError, match="train.max_updatez: unknown key"):
        config.load(p, ["train.max_updatez=5"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        config.load(p, ["train.max_updates"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(tmp_path / "bad.toml")


def test_diff_names_changed_keys():
    a = RunConfig()
    b = config.from_dict({"model": {"norm": "post"}})
    assert config.diff(a, b) == ["model.norm: 'pre' -> 'post'"]


def test_paper_presets_match_the_paper():
    post = config.load(ROOT / "configs" / "iwslt14-post.toml")
    pre = config.load(ROOT / "configs" / "iwslt14-pre.toml")
    for c in (post, pre):
        m = c.model
        assert (m.encoder_layers, m.decoder_layers, m.d_model, m.d_ffn, m.n_heads) == (6, 6, 512, 1024, 4)
        assert c.optim.name == "adam" and c.optim.betas == (0.9, 0.98)
        assert c.train.label_smoothing == 0.1 and c.data.max_tokens == 4096
    assert post.model.norm == "post" and post.schedule.kind == "inverse_sqrt" and post.schedule.warmup == 4000
    assert pre.model.norm == "pre" and pre.schedule.warmup == 0 and pre.optim.lr == 5e-4
    assert pre.schedule.kind == "step" and pre.schedule.milestones == (8,) and pre.schedule.unit == "epoch"
    bpost = config.load(ROOT / "configs" / "bert-base-post.toml")
    bpre = config.load(ROOT / "configs" / "bert-base-pre.toml")
    for c in (bpost, bpre):
        assert (c.model.encoder_layers, c.model.d_model, c.model.n_heads) == (12, 768, 12)
        assert c.schedule.kind == "linear"
    assert (bpost.optim.lr, bpost.schedule.warmup) == (1e-4, 10000)
    assert (bpre.optim.lr, bpre.schedule.warmup) == (3e-4, 0)


@pytest.mark.parametrize(
    "preset, sets, message",
    [
        ("tiny-translation", ["model.decoder_layers=0"], "model.decoder_layers must be > 0"),
        ("tiny-mlm", ["data.mlm_pairs=true", "data.max_len=4", "model.max_positions=8"], "needs at least 5 tokens"),
        ("tiny-causal", ["data.mlm_pairs=true"], "a causal LM reads plain text"),
        ("tiny-mlm", ["model.task='classify'", "model.num_classes=3"], "must equal the number of data.pair_labels"),
    ],
)
def test_a_tasks_rules_are_checked_by_config_and_train(preset, sets, message, tmp_path, capsys):
    """The task's own rules (``Task.checks``) answer ``preln config`` and ``preln train`` as the
    config's do: one line, exit 2, no run folder left."""
    from preln import tasks
    from preln.cli import main

    cfg = config.load(ROOT / "configs" / f"{preset}.toml", sets)  # the schema alone accepts it
    with pytest.raises(ConfigError, match=message):
        tasks.check(cfg)
    args = [x for s in sets for x in ("--set", s)]
    assert main(["config", str(ROOT / "configs" / f"{preset}.toml"), *args]) == 2
    assert main(["train", str(ROOT / "configs" / f"{preset}.toml"), *args, "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "r").exists()
