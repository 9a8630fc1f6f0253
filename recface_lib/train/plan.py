"""The staged learning-rate plan, written as in the recface guide:
``((8, 0.01, False, 1), (6, 0.005, False, 1), (8, 0.0025, True, 1), (10, 1e-3, True, 4), ...)``,
i.e. (epochs, lr, val_save, val_per_epoch) per stage. A stage may also be a mapping with the
optional keys ``weight_decay`` (overrides the run's), ``warmup_epochs`` (linear warm-up from 0),
``decay`` ('constant' | 'cosine' | 'step'), ``lr_end`` (cosine floor / step target) and
``freeze_backbone`` (transfer learning: train only the head in this stage), and the weight of any
term of the objective by its field name (``train.terms``: ``head_weight`` and ``distill_weight``
when distilling, ``center_loss_factor``, ``prelogits_norm_loss_factor``): this stage's weight,
overriding the run's.

``plan`` may instead name a facenet schedule file (``read_schedule_file``): ``epoch: lr`` lines,
converted into stages of one learning rate each.

Steps: a stage of E epochs is E * val_per_epoch segments of steps_per_epoch // val_per_epoch
optimizer steps (a remainder of fewer than val_per_epoch steps per epoch is dropped); each segment
ends with validation and a checkpoint."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import ConfigError

DECAYS = ("constant", "cosine", "step")
BASE_KEYS = ("epochs", "lr", "val_save", "val_per_epoch", "weight_decay", "warmup_epochs", "decay", "lr_end",
             "freeze_backbone")


def stage_keys() -> tuple[str, ...]:
    from .terms import WEIGHT_FIELDS

    return BASE_KEYS + WEIGHT_FIELDS


@dataclass(frozen=True)
class Stage:
    epochs: float
    lr: float
    val_save: bool = False
    val_per_epoch: int = 1
    weight_decay: float | None = None
    warmup_epochs: float = 0.0
    decay: str = "constant"
    lr_end: float = 0.0
    freeze_backbone: bool = False
    weights: dict = field(default_factory=dict)  # objective term weight field -> this stage's weight


def schedule_lr(entries: list[tuple[int, float]], epoch: int) -> float | None:
    """facenet's ``get_learning_rate_from_file`` rule on parsed lines: the rate of the last line
    whose epoch is <= ``epoch`` (epochs count from 1). Where facenet returns None (the epoch is at
    or past the last line) or fails (no line yet), this gives that last line's rate, or None."""
    lr = None
    for e, rate in entries:
        if e > epoch:
            break
        lr = rate
    return lr


def read_schedule_file(path) -> tuple[list[tuple[int, float]], list[list]]:
    """A facenet learning-rate schedule file: ``epoch: lr`` per line, ``#`` starts a comment, blank
    lines are skipped (facenet crashes on them), a rate <= 0 (``-1``, or facenet's ``-``) stops
    training at that epoch, as facenet's ``if lr <= 0: return False`` does (the stop line may be the
    last line: facenet crashes there too). Returns the lines and the staged plan: one
    ``[epochs, lr]`` stage per run of epochs that share a rate, from epoch 1 to the stop. Every
    problem is one line naming the file and the line."""
    from pathlib import Path

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"plan: {p}: no such schedule file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"plan: {p}: cannot read the schedule file ({e})") from None
    entries: list[tuple[int, float]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [x.strip() for x in line.split(":")]
        try:
            if len(parts) != 2:
                raise ValueError
            e, lr = int(parts[0]), (-1.0 if parts[1] == "-" else float(parts[1]))
        except ValueError:
            raise ConfigError(f"{p}:{n}: expected 'epoch: learning_rate', got {raw.strip()!r}") from None
        if e < 0 or not math.isfinite(lr):
            raise ConfigError(f"{p}:{n}: epoch must be >= 0 and the rate finite, got {raw.strip()!r}")
        if entries and e <= entries[-1][0]:
            raise ConfigError(f"{p}:{n}: epochs must increase (epoch {e} after {entries[-1][0]})")
        if entries and entries[-1][1] <= 0:
            raise ConfigError(f"{p}:{n}: a line after the stop line (epoch {entries[-1][0]}: {entries[-1][1]:g})")
        entries.append((e, lr))
    if not entries:
        raise ConfigError(f"plan: {p}: the schedule file has no 'epoch: learning_rate' line")
    if entries[0][0] > 1:
        raise ConfigError(f"{p}: no learning rate for epoch 1 (the first line is epoch {entries[0][0]}; "
                          "facenet counts epochs from 1)")
    stop = next((e for e, lr in entries if lr <= 0), None)
    if stop is None:
        raise ConfigError(f"{p}: no stop line ('N: -1'): say at which epoch training ends")
    if stop <= 1:
        raise ConfigError(f"{p}: the stop line is at epoch {stop}: nothing to train")
    stages: list[list] = []
    for epoch in range(1, stop):
        lr = schedule_lr(entries, epoch)
        if stages and stages[-1][1] == lr:
            stages[-1][0] += 1
        else:
            stages.append([1, lr])
    return entries, stages


def resolve_plan(plan):
    """The plan as stages: a schedule file's name becomes its staged plan; anything else as given."""
    if isinstance(plan, str):
        return read_schedule_file(plan)[1]
    return plan


def parse_plan(plan, where: str = "plan") -> list[Stage]:
    if isinstance(plan, dict) and "plan" in plan:  # the guide's train_plan dict
        plan = plan["plan"]
    plan = resolve_plan(plan)
    if not isinstance(plan, (list, tuple)) or not plan:
        raise ConfigError(f"{where}: expected a non-empty list of stages (epochs, lr, val_save, val_per_epoch) or a "
                          "facenet schedule file's name")
    out = []
    keys = stage_keys()
    for i, st in enumerate(plan):
        w = f"{where}[{i}]"
        if isinstance(st, dict):
            unknown = [k for k in st if k not in keys]
            if unknown:
                raise ConfigError(f"{w}: unknown key(s) {', '.join(map(repr, unknown))}; valid: {', '.join(keys)}")
            d = dict(st)
        elif isinstance(st, (list, tuple)) and 2 <= len(st) <= 5:
            d = dict(zip(("epochs", "lr", "val_save", "val_per_epoch", "weight_decay"), st))
        else:
            raise ConfigError(f"{w}: expected (epochs, lr[, val_save, val_per_epoch, weight_decay]) or a mapping, got {st!r}")
        if "epochs" not in d or "lr" not in d:
            raise ConfigError(f"{w}: 'epochs' and 'lr' are required")
        try:
            s = Stage(epochs=float(d["epochs"]), lr=float(d["lr"]), val_save=bool(d.get("val_save", False)),
                      val_per_epoch=int(d.get("val_per_epoch", 1)),
                      weight_decay=None if d.get("weight_decay") is None else float(d["weight_decay"]),
                      warmup_epochs=float(d.get("warmup_epochs", 0.0)), decay=str(d.get("decay", "constant")),
                      lr_end=float(d.get("lr_end", 0.0)), freeze_backbone=bool(d.get("freeze_backbone", False)),
                      weights={k: float(d[k]) for k in keys[len(BASE_KEYS):] if d.get(k) is not None})
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{w}: {e}") from e
        from ..config import check_number

        for k, lo, hi in (("epochs", 0, 1e6), ("lr", 0, 10.0), ("val_per_epoch", 1, 1e6), ("weight_decay", 0, 1.0),
                          ("warmup_epochs", 0, 1e6), ("lr_end", 0, 10.0)):
            check_number(f"{w}.{k}", getattr(s, k), lo, hi)
        for k, v in s.weights.items():
            check_number(f"{w}.{k}", v, 0, 1e3)
        if s.epochs <= 0:
            raise ConfigError(f"{w}: need epochs > 0, got {st!r}")
        if s.decay not in DECAYS:
            raise ConfigError(f"{w}: decay {s.decay!r} is not one of {', '.join(DECAYS)}")
        out.append(s)
    return out


class PlanSchedule:
    """Maps the plan onto global optimizer steps. A stage is validated/checkpointed every
    ``seg_len = steps_per_epoch // val_per_epoch`` steps ("segments"; a Keras epoch each) and lasts
    ``round(epochs * val_per_epoch)`` segments, so fractional epochs work and every segment of a
    stage has the same length (one ``fit`` call per stage)."""

    def __init__(self, stages: list[Stage], steps_per_epoch: int):
        if steps_per_epoch < 1:
            raise ConfigError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.stages, self.steps_per_epoch = stages, int(steps_per_epoch)
        self.seg_len = [max(1, steps_per_epoch // min(st.val_per_epoch, steps_per_epoch)) for st in stages]
        self.n_segments = [max(1, int(round(st.epochs * st.val_per_epoch))) for st in stages]
        for i, st in enumerate(stages):  # a stage shorter than one segment is one short segment
            if st.epochs * st.val_per_epoch < 1:
                self.seg_len[i] = max(1, int(round(st.epochs * steps_per_epoch)))
        self.stage_start = [0]
        for n, L in zip(self.n_segments, self.seg_len):
            self.stage_start.append(self.stage_start[-1] + n * L)
        self.total_steps = self.stage_start[-1]

    def position(self, step: int) -> tuple[int, int, int]:
        """(stage, segment within the stage, steps already done in that segment) at a global step."""
        si = self.stage_at(step)
        t = step - self.stage_start[si]
        return si, t // self.seg_len[si], t % self.seg_len[si]

    def epoch_of(self, si: int, seg: int) -> float:
        """Epochs completed in stage ``si`` at the end of segment ``seg`` (0-based)."""
        return (seg + 1) * self.seg_len[si] / self.steps_per_epoch

    def stage_steps(self, si: int) -> int:
        return self.stage_start[si + 1] - self.stage_start[si]

    def stage_at(self, step: int) -> int:
        for si in range(len(self.stages)):
            if step < self.stage_start[si + 1]:
                return si
        return len(self.stages) - 1

    def lr_at(self, step: int) -> float:
        """Learning rate at a global step (plain Python: the same formula as ``tf_lr``)."""
        si = self.stage_at(step)
        st = self.stages[si]
        t = step - self.stage_start[si]
        n = self.stage_steps(si)
        w = int(round(st.warmup_epochs * self.steps_per_epoch))
        if t < w:
            return st.lr * (t + 1) / w
        if st.decay == "cosine":
            frac = (t - w) / max(1, n - w - 1)
            return st.lr_end + 0.5 * (st.lr - st.lr_end) * (1 + math.cos(math.pi * frac))
        if st.decay == "step":  # halfway and three quarters: lr, lr/10-ish toward lr_end
            frac = (t - w) / max(1, n - w - 1)
            end = st.lr_end or st.lr * 0.01
            return st.lr if frac < 0.5 else (math.sqrt(st.lr * end) if frac < 0.75 else end)
        return st.lr

    def summary(self) -> dict:
        return {"stages": len(self.stages), "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
                "stage_steps": [self.stage_steps(i) for i in range(len(self.stages))],
                "validations": sum(self.n_segments)}


def plan_lr_schedule(schedule: PlanSchedule, accumulate: int = 1):
    """A Keras LearningRateSchedule computing ``schedule.lr_at`` in the graph from the optimizer's
    step counter (no per-step Python callback). With gradient accumulation Keras counts updates,
    while the plan counts micro-batches: update u takes the plan's lr at micro-batch u*N + N-1 (the
    one that triggers it)."""
    import keras
    import numpy as np
    from keras import ops

    st = schedule.stages
    starts = np.asarray(schedule.stage_start, np.float32)
    lr0 = np.asarray([s.lr for s in st], np.float32)
    warm = np.asarray([round(s.warmup_epochs * schedule.steps_per_epoch) for s in st], np.float32)
    kind = np.asarray([DECAYS.index(s.decay) for s in st], np.int32)
    end = np.asarray([s.lr_end for s in st], np.float32)
    step_end = np.asarray([s.lr_end or s.lr * 0.01 for s in st], np.float32)

    @keras.saving.register_keras_serializable(package="recface")
    class PlanLR(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = ops.cast(step, "float32") * accumulate + (accumulate - 1)
            si = ops.minimum(ops.sum(ops.cast(step >= starts[1:-1], "int32")) if len(st) > 1 else 0, len(st) - 1)
            take = lambda a: ops.take(ops.convert_to_tensor(a), si)  # noqa: E731
            t = step - take(starts[:-1])
            n = take(starts[1:]) - take(starts[:-1])
            w, lr, k = take(warm), take(lr0), take(kind)
            frac = (t - w) / ops.maximum(1.0, n - w - 1.0)
            cosine = take(end) + 0.5 * (lr - take(end)) * (1.0 + ops.cos(np.pi * frac))
            se = take(step_end)
            stepped = ops.where(frac < 0.5, lr, ops.where(frac < 0.75, ops.sqrt(lr * se), se))
            decayed = ops.where(k == 1, cosine, ops.where(k == 2, stepped, lr))
            return ops.where(t < w, lr * (t + 1.0) / ops.maximum(w, 1.0), decayed)

        def get_config(self):
            return {}

    return PlanLR()
