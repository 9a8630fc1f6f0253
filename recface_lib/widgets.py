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


def described(name: str, tip: str) -> dict:
    """Widget keywords for a field's label whose hover shows the field's help. ipywidgets 8 puts a
    widget's ``tooltip`` on its input only when the description is empty, so the help goes into the
    label itself (an HTML description with a ``title``)."""
    import html

    if not tip:
        return {"description": name}
    return {"description": f'<span class="recface-help" title="{html.escape(tip, quote=True)}">{html.escape(name)}</span>',
            "description_allow_html": True}


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
    an untouched row gives back exactly the stage it was given. A facenet schedule file named in
    the file box is the plan (its stages are shown in the rows; edit the file, or clear the box to
    edit the rows)."""

    def __init__(self, plan, on_change):
        import ipywidgets as w

        from .train.plan import resolve_plan

        self.w, self.on_change = w, on_change
        self.file = w.Text(value=plan if isinstance(plan, str) else "", description="schedule file",
                           placeholder="facenet 'epoch: lr' file (optional)", layout=w.Layout(width="520px"))
        self.file.observe(lambda _c: self.on_change(), names="value")
        if isinstance(plan, str):
            try:
                plan = resolve_plan(plan)
            except Exception:  # the summary line shows the error when the config is checked
                plan = []
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
        self.widget = w.VBox([head, self.file, self.box, w.HBox([self.add, self.remove])])

    def _add_row(self, st):
        w = self.w
        if isinstance(st, dict):
            import yaml
            row = [w.Text(value=yaml.safe_dump(st, default_flow_style=True, sort_keys=False).strip(),
                          layout=w.Layout(width="520px"))]
        else:
            v = list(st) + LIST_DEFAULTS[len(st):]
            row = [w.FloatText(value=float(v[0]), layout=w.Layout(width="80px")),
                   w.FloatText(value=float(v[1]), layout=w.Layout(width="100px")).add_class("recface-plan-lr"),
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
        if self.file.value.strip():
            return self.file.value.strip()
        return [self._row_value(st, row) for st, row in self.rows]


class HeadParams:
    """The chosen head's own parameters (``models.build.head_param_defaults``), one widget each;
    rebuilt when the head changes, so only that head's fields are shown."""

    def __init__(self, head: str, values: dict, on_change):
        import ipywidgets as w

        self.w, self.on_change = w, on_change
        self.widget = w.VBox()
        self.inputs: dict = {}
        self.show(head, values)

    def show(self, head: str, values: dict | None = None):
        from .models.build import head_param_defaults

        w, values = self.w, values or {}
        try:
            defaults = head_param_defaults(head)
        except Exception:  # an unknown head: the summary line says so
            defaults = {}
        self.defaults, self.inputs = defaults, {}
        for k, d in defaults.items():
            v = values.get(k, d)
            style, lay = {"description_width": "150px"}, w.Layout(width="460px")
            x = (w.Checkbox(value=bool(v), description=k, style=style) if isinstance(d, bool)
                 else w.FloatText(value=float(v), description=k, style=style, layout=lay))
            x.add_class(f"recface-head-param-{k}")
            x.observe(lambda _c: self.on_change(), names="value")
            self.inputs[k] = x
        self.widget.children = list(self.inputs.values()) or [w.HTML(f"<i>{head}: no parameters of its own</i>")]

    @property
    def value(self) -> dict:
        """Only what differs from the head's defaults (what the YAML would say)."""
        return {k: x.value for k, x in self.inputs.items() if x.value != self.defaults[k]}


class Panel:
    def __init__(self, cfg: StageConfig):
        import ipywidgets as w

        self.cls, self.inputs = type(cfg), {}
        hints = typing.get_type_hints(self.cls)
        items = {}
        self.summary = w.HTML()
        self.plan = self.head_params = self.plan_plot = None
        for f in dataclasses.fields(self.cls):
            v = getattr(cfg, f.name)
            tip = f.metadata.get("help", "")
            style = {"description_width": "150px"}
            lay = w.Layout(width="460px")
            if f.name == "plan":
                self.plan = PlanEditor(v, self.update)
                self.plan_plot = w.Image(format="png", layout=w.Layout(width="520px"))
                self.plan_plot.add_class("recface-plan-plot")
                items[f.name] = w.VBox([self.plan.widget, self.plan_plot])
                continue
            if f.name == "head_params":
                self.head_params = HeadParams(cfg.head, v, self.update)
                items[f.name] = self.head_params.widget
                continue
            if f.metadata.get("choices"):
                x = w.Dropdown(options=list(f.metadata["choices"]), value=v, **described(f.name, tip), style=style, layout=lay)
            elif hints[f.name] is bool:
                x = w.Checkbox(value=v, **described(f.name, tip), style=style)
            elif hints[f.name] is int:
                x = w.IntText(value=v, **described(f.name, tip), style=style, layout=lay)
            elif hints[f.name] is float:
                x = w.FloatText(value=v, **described(f.name, tip), style=style, layout=lay)
            elif hints[f.name] is str:
                x = w.Text(value=v, **described(f.name, tip), style=style, layout=lay)
            else:  # lists, dicts, optionals: JSON
                x = w.Text(value=json.dumps(v), **described(f.name, tip), style=style, layout=lay)
                x._json = True
            x.add_class(f"recface-field-{f.name}")
            x.observe(lambda _c: self.update(), names="value")
            self.inputs[f.name] = x
            items[f.name] = x
        if self.head_params is not None and "head" in self.inputs:
            self.inputs["head"].observe(lambda c: self.head_params.show(c["new"]), names="value")
        groups = getattr(self.cls, "GROUPS", None)
        if groups:  # sections read at a glance: data, model, head, plan, optimisation, devices, ...
            sections = [w.VBox([w.HTML(f"<b>{name}</b>"), *[items[k] for k in names]]) for name, names in groups.items()]
        else:
            sections = list(items.values())
        self._last_plot = None
        extra = []
        if self.cls.__name__ == "AlignConfig":  # a few faces aligned with the current settings
            self.preview = w.Image(format="png", layout=w.Layout(width="520px"))
            button = w.Button(description="preview faces", tooltip="align the first 8 images with these settings")
            button.on_click(lambda _b: self.show_preview())
            extra = [w.HBox([button]), self.preview]
        self.widget = w.VBox([self.summary, *extra, *sections])
        self.update()

    def show_preview(self):
        from .align.pipeline import preview
        from .io_utils import encode_image

        try:
            self.preview.value = encode_image(preview(self.config()), ".png")
        except Exception as e:  # shown, not raised from a callback
            self.summary.value = f"<span style='color:#b00'>preview: {e}</span>"

    def values(self) -> dict:
        d = {}
        for k, x in self.inputs.items():
            d[k] = json.loads(x.value) if getattr(x, "_json", False) else x.value
        if self.plan is not None:
            d["plan"] = self.plan.value
        if self.head_params is not None:
            d["head_params"] = self.head_params.value
        return d

    def config(self) -> StageConfig:
        return self.cls.from_dict(self.values(), source="panel")

    def update(self):
        try:
            cfg = self.config()
            self.summary.value = f"<b>{self.describe(cfg)}</b>"
            self.draw_plan(cfg)
        except Exception as e:  # show the validation error in the panel instead of raising from a callback
            self.summary.value = f"<span style='color:#b00'>{e}</span>"

    def draw_plan(self, cfg):
        """The learning-rate plan as a small plot (lr against steps, stage boundaries, validation points)."""
        if self.plan_plot is None or not getattr(self, "_steps_per_epoch", 0):
            return
        import io

        from .plots import plot_lr_plan
        from .train.plan import PlanSchedule, parse_plan

        key = json.dumps([cfg.plan, self._steps_per_epoch], default=str)
        if key == self._last_plot:
            return
        fig = plot_lr_plan(PlanSchedule(parse_plan(cfg.plan), self._steps_per_epoch))
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        import matplotlib.pyplot as plt
        plt.close(fig)
        self.plan_plot.value = buf.getvalue()
        self._last_plot = key

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
            self._steps_per_epoch = spe
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
