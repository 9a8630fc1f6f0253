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


# -- facenet's schedule files (#23) ---------------------------------------------------------------
CASIA = "# Learning rate schedule\n# Maps an epoch number to a learning rate\n0:  0.05\n60: 0.005\n80: 0.0005\n91: -1\n"
VGGFACE2 = "# Learning rate schedule\n# Maps an epoch number to a learning rate\n0:  0.05\n100: 0.005\n200: 0.0005\n276: -1\n"


def facenet_get_learning_rate_from_file(filename, epoch):
    """facenet's own rule (src/train_softmax.py), line by line; it fails on a blank line (int('')),
    and returns None once the epoch reaches the last line (facenet#1133)."""
    with open(filename, "r") as f:
        for line in f.readlines():
            line = line.split("#", 1)[0]
            if line:
                par = line.strip().split(":")
                e = int(par[0])
                lr = -1 if par[1] == "-" else float(par[1])
                if e <= epoch:
                    learning_rate = lr
                else:
                    return learning_rate


@pytest.mark.parametrize("text,stop,stages", [(CASIA, 91, [[59, 0.05], [20, 0.005], [11, 0.0005]]),
                                              (VGGFACE2, 276, [[99, 0.05], [100, 0.005], [76, 0.0005]])])
def test_facenet_schedule_files_give_facenets_rate_at_every_epoch(tmp_path, text, stop, stages):
    from recface_lib.train.plan import read_schedule_file

    f = tmp_path / "schedule.txt"
    f.write_text(text)
    assert read_schedule_file(f)[1] == stages
    spe = 7
    p = PlanSchedule(parse_plan(str(f)), spe)
    assert p.total_steps == (stop - 1) * spe  # facenet trains epochs 1 .. stop-1, then stops
    for epoch in range(1, stop):
        want = facenet_get_learning_rate_from_file(f, epoch)
        assert want > 0 and p.lr_at((epoch - 1) * spe) == want == p.lr_at(epoch * spe - 1), epoch
    assert facenet_get_learning_rate_from_file(f, stop) is None  # where facenet crashes: we have stopped
    # a blank line, a Windows line end and a missing final newline: facenet fails on the first
    messy = tmp_path / "messy.txt"
    messy.write_text(text.replace("60:", "\n60:").replace("100:", "\n100:").replace("\n", "\r\n").rstrip())
    with pytest.raises(ValueError):
        facenet_get_learning_rate_from_file(messy, stop - 1)
    assert read_schedule_file(messy)[1] == stages
    cfg = TrainConfig.from_dict({"dataset": "d", "output": "o", "plan": str(f)})
    assert cfg.content_params() == {"plan": stages}  # the rerun key sees the file's content


@pytest.mark.parametrize("text,message", [
    ("", "the schedule file has no 'epoch: learning_rate' line"),
    ("# only a comment\n", "has no 'epoch: learning_rate' line"),
    ("0: 0.1\n60 0.01\n91: -1\n", r"schedule.txt:2: expected 'epoch: learning_rate', got '60 0.01'"),
    ("0: 0.1\n60: fast\n", r"schedule.txt:2: expected 'epoch: learning_rate'"),
    ("0: 0.1\n50: 0.01\n30: 0.001\n91: -1\n", r"schedule.txt:3: epochs must increase \(epoch 30 after 50\)"),
    ("0: 0.1\n60: 0.01\n", "no stop line"),
    ("5: 0.1\n91: -1\n", "no learning rate for epoch 1"),
    ("0: 0.1\n9: -1\n20: 0.1\n", r"schedule.txt:3: a line after the stop line"),
    ("0: -1\n", "the stop line is at epoch 0: nothing to train"),
])
def test_bad_schedule_files_are_one_line_naming_file_and_line(tmp_path, text, message):
    f = tmp_path / "schedule.txt"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        TrainConfig.from_dict({"dataset": "d", "output": "o", "plan": str(f)})
    assert "\n" not in str(e.value) and "schedule.txt" in str(e.value)


def test_missing_schedule_file(tmp_path):
    with pytest.raises(ConfigError, match=r"plan: .*nope.txt: no such schedule file"):
        parse_plan(str(tmp_path / "nope.txt"))


def test_cli_plan_takes_a_yaml_list_or_a_schedule_file(tmp_path):
    """--plan is one YAML value: a staged plan as before, or a schedule file's name."""
    from recface_lib.cli import build_parser, config_from_args

    f = tmp_path / "s.txt"
    f.write_text("0: 0.1\n3: 0.01\n5: -1\n")
    for arg, want in (("[[1, 0.01]]", [[1, 0.01]]), ("[[2, 0.1], [1, 0.01, true, 2]]", [[2, 0.1], [1, 0.01, True, 2]]),
                      (str(f), str(f))):
        a = build_parser().parse_args(["train", "--dataset", "d", "--output", "o", "--plan", arg])
        assert config_from_args("train", a).plan == want, arg
    assert parse_plan(str(f))[1].lr == 0.01 and [s.epochs for s in parse_plan(str(f))] == [2, 2]
