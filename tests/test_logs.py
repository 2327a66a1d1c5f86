"""What a run prints when its log goes to a file: plain lines with the training loss at each log
point (no progress-bar frames), and a final line with the scores the run's end computed."""

from preln import config
from preln.fit import train

from .conftest import ROOT, require_data


def test_a_run_logged_to_a_file_prints_plain_lines_and_its_final_scores(tmp_path, capsys):
    require_data("multi30k")
    sets = ["train.max_updates=4", "train.log_every=2", "data.max_valid_examples=20", "train.progress=true"]
    train(config.load(ROOT / "configs" / "tiny-translation.toml", sets), tmp_path / "run")
    err = capsys.readouterr().err  # pytest's capture: stderr is not a terminal, as in a file
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("[preln] update ") and "loss" in ln and "lr" in ln]
    assert [ln.split(":")[0] for ln in lines] == ["[preln] update 2/4 epoch 1", "[preln] update 4/4 epoch 1"]
    done = [ln for ln in err.splitlines() if ln.startswith("[preln] done:")]
    assert len(done) == 1 and "valid nll" in done[0] and "valid BLEU (greedy, sacreBLEU)" in done[0]
