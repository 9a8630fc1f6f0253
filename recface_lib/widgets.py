"""ipywidgets panels built from a stage dataclass: ``p = panel(cfg); display(p.widget)``, then
``cfg = p.config()`` (validated). Dropdowns for choices (backbone, head, detector, method), number
boxes for numbers, a small table editor for the training plan, text boxes for paths, and a live
summary line (for training: backbone parameter count, steps per epoch, total steps of the plan)."""
from __future__ import annotations

import dataclasses
import json
import typing

from .config import StageConfig

_PARAMS_CACHE: dict[tuple, int] = {}


def _backbone_params(name: str, size: int, embd: int) -> int:
    key = (name, size, embd)
    if key not in _PARAMS_CACHE:
        from .models.build import describe_backbones
        _PARAMS_CACHE[key] = describe_backbones(size, embd, [name])[name]["params"]
    return _PARAMS_CACHE[key]


LIST_FIELDS = ("epochs", "lr", "val_save", "val_per_epoch", "weight_decay")
LIST_DEFAULTS = [1, 1e-3, False, 1, None]


class PlanEditor:
    """One row per plan stage. A list-style stage ``[epochs, lr, val_save, val_per_epoch[,
    weight_decay]]`` gets number boxes (weight_decay blank: the run's default); a mapping-style stage
    (warm-up, cosine decay, freezing, ...) gets a YAML box holding all its keys. Nothing is dropped:
    an untouched row gives back exactly the stage it was given."""

    def __init__(self, plan, on_change):
        import ipywidgets as w

        self.w, self.on_change = w, on_change
        self.rows: list[tuple[object, list]] = []  # (original stage, widgets)
        self.box = w.VBox()
        self.add = w.Button(description="+ stage", layout=w.Layout(width="90px"))
        self.remove = w.Button(description="- stage", layout=w.Layout(width="90px"))
        self.add.on_click(lambda _: self._add_row([1, 1e-3, True, 1]))
        self.remove.on_click(lambda _: self._remove_row())
        for st in plan:
            self._add_row(st)
        head = w.HTML("<b>plan</b>: epochs, lr, val_save, val_per_epoch, weight_decay (blank: default); "
                      "mapping-style stages as YAML")
        self.widget = w.VBox([head, self.box, w.HBox([self.add, self.remove])])

    def _add_row(self, st):
        w = self.w
        if isinstance(st, dict):
            import yaml
            row = [w.Text(value=yaml.safe_dump(st, default_flow_style=True, sort_keys=False).strip(),
                          layout=w.Layout(width="520px"))]
        else:
            v = list(st) + LIST_DEFAULTS[len(st):]
            row = [w.FloatText(value=float(v[0]), layout=w.Layout(width="80px")),
                   w.FloatText(value=float(v[1]), layout=w.Layout(width="100px")),
                   w.Checkbox(value=bool(v[2]), indent=False, layout=w.Layout(width="40px")),
                   w.IntText(value=int(v[3]), layout=w.Layout(width="60px")),
                   w.Text(value="" if v[4] is None else repr(v[4]), placeholder="default", layout=w.Layout(width="90px"))]
        for x in row:
            x.observe(lambda _c: self.on_change(), names="value")
        self.rows.append((st, row))
        self.box.children = [w.HBox(r) for _, r in self.rows]
        self.on_change()

    def _remove_row(self):
        if len(self.rows) > 1:
            self.rows.pop()
            self.box.children = [self.w.HBox(r) for _, r in self.rows]
            self.on_change()

    @staticmethod
    def _num(x):
        return int(x) if float(x).is_integer() else x

    def _row_value(self, st, row):
        import yaml

        if isinstance(st, dict):
            return yaml.safe_load(row[0].value)
        wd = row[4].value.strip()
        full = [self._num(row[0].value), row[1].value, row[2].value, row[3].value,
                None if not wd else yaml.safe_load(wd)]
        orig = list(st) + LIST_DEFAULTS[len(st):]
        if full == orig:
            return st  # untouched: exactly what was given (also its length)
        return full if full[4] is not None else full[:4]

    @property
    def value(self):
        return [self._row_value(st, row) for st, row in self.rows]


class Panel:
    def __init__(self, cfg: StageConfig):
        import ipywidgets as w

        self.cls, self.inputs = type(cfg), {}
        hints = typing.get_type_hints(self.cls)
        items = []
        self.summary = w.HTML()
        self.plan = None
        for f in dataclasses.fields(self.cls):
            v = getattr(cfg, f.name)
            tip = f.metadata.get("help", "")
            style = {"description_width": "150px"}
            lay = w.Layout(width="460px")
            if f.name == "plan":
                self.plan = PlanEditor(v, self.update)
                items.append(self.plan.widget)
                continue
            if f.metadata.get("choices"):
                x = w.Dropdown(options=list(f.metadata["choices"]), value=v, description=f.name, style=style, layout=lay)
            elif hints[f.name] is bool:
                x = w.Checkbox(value=v, description=f.name, style=style)
            elif hints[f.name] is int:
                x = w.IntText(value=v, description=f.name, style=style, layout=lay)
            elif hints[f.name] is float:
                x = w.FloatText(value=v, description=f.name, style=style, layout=lay)
            elif hints[f.name] is str:
                x = w.Text(value=v, description=f.name, style=style, layout=lay)
            else:  # lists, dicts, optionals: JSON
                x = w.Text(value=json.dumps(v), description=f.name, style=style, layout=lay)
                x._json = True
            x.tooltip = tip
            x.observe(lambda _c: self.update(), names="value")
            self.inputs[f.name] = x
            items.append(x)
        self.widget = w.VBox([self.summary, *items])
        self.update()

    def values(self) -> dict:
        d = {}
        for k, x in self.inputs.items():
            d[k] = json.loads(x.value) if getattr(x, "_json", False) else x.value
        if self.plan is not None:
            d["plan"] = self.plan.value
        return d

    def config(self) -> StageConfig:
        return self.cls.from_dict(self.values(), source="panel")

    def update(self):
        try:
            self.summary.value = f"<b>{self.describe(self.config())}</b>"
        except Exception as e:  # show the validation error in the panel instead of raising from a callback
            self.summary.value = f"<span style='color:#b00'>{e}</span>"

    def describe(self, cfg) -> str:
        if type(cfg).__name__ == "TrainConfig":
            from .train.plan import PlanSchedule, parse_plan
            spe = cfg.steps_per_epoch
            if not spe:
                try:
                    from .data.tfrecord import load_metadata
                    spe = max(1, load_metadata(cfg.dataset)["num_samples"] // cfg.batch_size)
                except Exception:
                    spe = 0
            n = _backbone_params(cfg.backbone, cfg.input_size, cfg.embd_shape)
            txt = f"{cfg.backbone} + {cfg.head}: {n / 1e6:.2f}M backbone parameters"
            if spe:
                p = PlanSchedule(parse_plan(cfg.plan), spe)
                txt += f"; {spe} steps per epoch; {p.total_steps} steps in {len(p.stages)} stages"
            else:
                txt += "; steps per epoch: unknown until the dataset exists"
            return txt
        base = type(cfg)()  # the dataclass defaults (no validation)
        changed = [f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(base, f.name)]
        return f"{type(cfg).__name__}: {len(changed)} parameter(s) differ from the defaults"


def panel(cfg: StageConfig) -> Panel:
    return Panel(cfg)
