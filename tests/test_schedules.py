import math

import pytest

from preln import schedules
from preln.config import ScheduleConfig

P = 1e-3


@pytest.mark.parametrize(
    "warmup, table",
    [
        (0, {1: P, 2: P, 100: P}),
        (1, {1: P, 2: P}),
        (4, {1: P / 4, 2: P / 2, 4: P, 5: P}),
    ],
)
def test_constant_with_warmup(warmup, table):
    f = schedules.constant(P, warmup)
    for step, lr in table.items():
        assert f(step) == pytest.approx(lr, rel=1e-12)


@pytest.mark.parametrize(
    "warmup, timescale, table",
    [
        (4000, 0, {1: P / 4000, 2000: P / 2, 4000: P, 16000: P / 2, 64000: P / 4}),  # fairseq
        (1, 0, {1: P, 4: P / 2, 100: P / 10}),
        (0, 100, {1: P, 100: P, 400: P / 2, 10000: P / 10}),  # no warm-up: own timescale
    ],
)
def test_inverse_sqrt(warmup, timescale, table):
    f = schedules.inverse_sqrt(P, warmup, timescale=timescale)
    for step, lr in table.items():
        assert f(step) == pytest.approx(lr, rel=1e-12)


def test_inverse_sqrt_without_warmup_or_timescale_is_an_error_not_a_division_by_zero():
    with pytest.raises(ValueError, match="timescale"):
        schedules.inverse_sqrt(P, warmup=0)


def test_fairseq_inverse_sqrt_formula_after_warmup():
    w = 4000
    f = schedules.inverse_sqrt(P, w)
    for step in (4001, 5000, 123456):
        assert f(step) == pytest.approx(P * math.sqrt(w) / math.sqrt(step), rel=1e-12)


@pytest.mark.parametrize(
    "warmup, total, table",
    [
        (0, 10, {1: P, 2: P * 9 / 10, 10: P / 10, 11: 0.0, 50: 0.0}),
        (1, 11, {1: P, 2: P, 11: P / 10, 12: 0.0}),
        (5, 15, {1: P / 5, 5: P, 6: P, 15: P / 10, 16: 0.0}),
    ],
)
def test_linear(warmup, total, table):
    f = schedules.linear(P, total, warmup)
    for step, lr in table.items():
        assert f(step) == pytest.approx(lr, rel=1e-12, abs=1e-18)


def test_step_decay_table():
    f = schedules.step_decay(P, (10, 20), gamma=0.1)
    table = {1: P, 10: P, 11: P / 10, 20: P / 10, 21: P / 100}
    for step, lr in table.items():
        assert f(step) == pytest.approx(lr, rel=1e-12)


def test_step_decay_epoch_milestone_from_config():
    """'x0.1 at epoch 8' with 100 updates/epoch: updates 1..700 at peak, 701 on decayed."""
    c = ScheduleConfig(kind="step", warmup=0, milestones=(8,), unit="epoch")
    f = schedules.from_config(c, P, updates_per_epoch=100)
    assert f(700) == P
    assert f(701) == pytest.approx(P / 10)


def test_first_update_is_not_at_zero_unless_asked():
    for kind in ("constant", "inverse_sqrt", "linear", "step"):
        for warmup in (0, 1, 10):
            c = ScheduleConfig(kind=kind, warmup=warmup, timescale=10, total=100)
            assert schedules.from_config(c, P, max_updates=100)(1) > 0
    c = ScheduleConfig(kind="constant", warmup=10, warmup_init_lr=1e-7)
    assert schedules.from_config(c, P)(1) == pytest.approx(1e-7 + (P - 1e-7) / 10)


def test_updates_are_one_based():
    with pytest.raises(ValueError):
        schedules.constant(P)(0)
