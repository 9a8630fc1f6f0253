"""The staged plan: parsing as users write it, step bookkeeping, and the in-graph LR schedule."""
import numpy as np
import pytest

from recface_lib.errors import ConfigError
from recface_lib.train.config import GUIDE_PLAN, TrainConfig
from recface_lib.train.plan import PlanSchedule, parse_plan


def test_guide_plan_steps():
    stages = parse_plan({"plan": ((8, 0.01, False, 1), (6, 0.005, False, 1), (8, 0.0025, True, 1),
                                  (10, 1e-3, True, 4), (10, 1e-4, True, 4), (10, 1e-5, True, 4))})
    assert [s.epochs for s in stages] == [8, 6, 8, 10, 10, 10]
    spe = 5822653 // 256  # MS1M-ArcFace at batch 256
    p = PlanSchedule(stages, spe)
    assert p.total_steps == 22 * spe + 3 * 40 * (spe // 4)
    assert p.summary()["validations"] == 8 + 6 + 8 + 3 * 40
    si, seg, done = p.position(p.stage_start[3] + 3 * (spe // 4) + 5)
    assert (si, seg, done) == (3, 3, 5)
    assert p.lr_at(0) == 0.01 and p.lr_at(p.stage_start[1]) == 0.005 and p.lr_at(p.total_steps - 1) == 1e-5
    assert TrainConfig.from_dict({"dataset": "d", "output": "o"}).plan == GUIDE_PLAN


def test_plan_errors_name_the_stage():
    with pytest.raises(ConfigError, match=r"plan\[1\]: unknown key\(s\) 'lrr'"):
        parse_plan([[1, 0.1], {"epochs": 1, "lrr": 0.1}])
    with pytest.raises(ConfigError, match=r"plan\[0\]: need epochs > 0"):
        parse_plan([[0, 0.1]])
    with pytest.raises(ConfigError, match=r"decay 'linear' is not one of"):
        parse_plan([{"epochs": 1, "lr": 0.1, "decay": "linear"}])
    with pytest.raises(ConfigError, match="plan: unknown parameter|plan"):
        TrainConfig.from_dict({"dataset": "d", "output": "o", "plan": "fast"})


def test_graph_schedule_equals_python_formula():
    pytest.importorskip("keras")
    from recface_lib.train.plan import plan_lr_schedule

    stages = parse_plan([[2, 0.1, False, 2], {"epochs": 1.5, "lr": 0.05, "warmup_epochs": 0.5, "decay": "cosine",
                                              "lr_end": 1e-4}, {"epochs": 2, "lr": 0.01, "decay": "step"}])
    p = PlanSchedule(stages, 20)
    sched = plan_lr_schedule(p)
    steps = np.arange(p.total_steps + 3)
    got = np.array([float(sched(s)) for s in steps])
    want = np.array([p.lr_at(min(s, p.total_steps - 1)) for s in steps])
    np.testing.assert_allclose(got[:p.total_steps], want[:p.total_steps], rtol=1e-5)
    assert got[p.stage_start[1]] == pytest.approx(0.05 / 10)  # warm-up starts low
    assert got[p.stage_start[2] - 1] == pytest.approx(1e-4, rel=0.05)  # cosine reaches its floor
    assert sorted(set(np.round(got[p.stage_start[2]:p.total_steps], 8))) == pytest.approx([1e-4, 1e-3, 1e-2])
