"""How busy the host was while a ``preln reproduce`` ran: the share of CPU time the hypervisor
took (steal), from /proc/stat before and after, recorded in reproduce.json and named in the
report's header, so that a timed reference says what machine time it had."""

import json

from preln.lab import execute, report

# /proc/stat's first line: user nice system idle iowait irq softirq steal guest guest_nice
START = "cpu  1000 0 100 8000 0 0 0 100 50 0\ncpu0 500 0 50 4000 0 0 0 50 25 0\n"
END = "cpu  2000 0 200 8500 0 0 0 400 90 0\ncpu0 1000 0 100 4250 0 0 0 200 45 0\n"


def test_cpu_times_read_steal_and_the_total_without_counting_guest_twice(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(START)
    # guest time is already inside user: the total is user..steal
    assert execute.host_cpu_times(stat) == (100, 9200)
    assert execute.host_cpu_times(tmp_path / "absent") is None
    stat.write_text("cpu  1 2\n")
    assert execute.host_cpu_times(stat) is None  # a kernel without a steal field: nothing claimed


def test_an_invocation_records_the_steal_share_between_its_start_and_its_end(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text(START)
    at_start = execute.host_cpu_times(stat)
    stat.write_text(END)
    monkeypatch.setattr(execute, "PROC_STAT", stat)
    out = tmp_path / "runs"
    out.mkdir()
    execute.record_invocation(out, tmp_path, "quick", [], 2, 0.0, at_start)
    inv = json.loads((out / "reproduce.json").read_text())["invocations"][0]
    # steal 300 of 1,900 jiffies (user 1000, system 100, idle 500, steal 300)
    assert inv["host_steal"] == round(300 / 1900, 3)
    # without a start snapshot (another OS) the field is absent, not zero
    execute.record_invocation(out, tmp_path, "quick", [], 2, 0.0, None)
    assert "host_steal" not in json.loads((out / "reproduce.json").read_text())["invocations"][1]


def test_the_report_header_names_the_hosts_steal_share(tmp_path):
    out = tmp_path / "runs"
    run = out / "pre-s1"  # one run folder, as a hand-made runs folder holds
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "valid", "update": 50, "epoch": 1, "valid_nll": 5.0}))
    (run / "status.json").write_text(json.dumps({"status": "completed", "update": 51}))
    inv = {"preln": "0.2.0", "commit": "abc1234", "preset": "quick", "studies": [], "jobs": 2}
    inv |= {"machine": "2 cores (test)", "started": "2026-12-04 13:00:00 UTC", "seconds": 3000}
    both = [inv | {"host_steal": 0.12}, inv | {"seconds": 1000, "host_steal": 0.04}]
    (out / "reproduce.json").write_text(json.dumps({"invocations": both}))
    text = report.write_report(out)[0].read_text()
    # weighted by each invocation's wall time: (0.12 * 3000 + 0.04 * 1000) / 4000 = 10%
    assert "the host took 10% of the CPU time (steal)" in text
    (out / "reproduce.json").write_text(json.dumps({"invocations": [inv]}))
    assert "steal" not in report.write_report(out)[0].read_text()
