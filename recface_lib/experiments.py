"""Experiments you can compare: ``recface sweep`` runs a scenario's variants over a grid of
parameters, ``recface compare`` (the ``compare`` stage, notebook ``07_compare``) puts runs side by
side: one table of the parameters that differ and the metrics (every validation set, final and
best; evaluation and identification figures), training curves overlaid, ROC curves of all runs on
one figure per pair set.

A sweep (``--grid train.head=ArcFace,CosFace train.margin=0.3,0.5``) runs the stages before the
first swept one once, as the scenario itself does (``runs/<scenario>/``), then each variant from
that stage on in ``runs/<scenario>/sweeps/<grid>/<variant>/``, named after its values, with every
output of those stages moved into the variant's folder, the comparison beside it in
``<grid>_compare/``. Each variant is a pipeline run of its own: a rerun skips finished variants and stages and resumes an interrupted training. TensorBoard
shows every variant side by side: ``tensorboard --logdir runs/<scenario>/sweeps/<grid>``."""
from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .config import StageConfig, param
from .errors import ConfigError
from .io_utils import atomic_write_bytes, atomic_write_json
from .pipeline import VARIANT_FILE, run_variant
from .stages import STAGE_ORDER, stage

SWEEP_FILE = "sweep.json"


# -- sweep -----------------------------------------------------------------------------------------
def parse_grid(items: list[str]) -> list[tuple[str, str, list]]:
    """``["train.head=ArcFace,CosFace", "train.margin=0.3,0.5"]`` -> [(stage, field, values)], each
    value read as YAML (``0.3`` a number, ``true`` a boolean)."""
    import yaml

    axes = []
    for it in items:
        if "=" not in it or "." not in it.split("=", 1)[0]:
            raise ConfigError(f"--grid {it!r}: expected STAGE.FIELD=V1,V2,... (e.g. train.head=ArcFace,CosFace)")
        key, vals = it.split("=", 1)
        st, field = key.split(".", 1)
        cls = stage(st).config_class
        if field not in cls.field_names():
            raise ConfigError(f"--grid {it!r}: {cls.__name__} has no field {field!r}; valid: {', '.join(cls.field_names())}")
        values = [yaml.safe_load(v) for v in vals.split(",") if v.strip()]
        if not values:
            raise ConfigError(f"--grid {it!r}: no values")
        axes.append((st, field, values))
    return axes


def _slug(v) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", v if isinstance(v, str) else json.dumps(v)).strip("-") or "x"


def sweep(scenario: str, grid: list[str], runs: str | os.PathLike = "runs", params_dir=None, stop: str | None = None,
          force: bool = False) -> dict:
    from .pipeline import run_pipeline, scenario_params

    base = scenario_params(scenario, params_dir)
    axes = parse_grid(grid)
    missing = sorted({st for st, _, _ in axes if st not in base})
    if missing:
        raise ConfigError(f"--grid: scenario {scenario} has no {', '.join(missing)} stage")
    order = [s for s in STAGE_ORDER if s in base]
    first = min(order.index(st) for st, _, _ in axes)
    last = order.index(stop) if stop else len(order) - 1
    if stop and stop not in order or last < first:
        raise ConfigError(f"--to {stop}: not a stage of {scenario} at or after the swept stage {order[first]}")
    shared, swept = order[:first], order[first:last + 1]
    root = Path(runs) / scenario
    if shared:
        print(f"[sweep] shared stages {', '.join(shared)} (as the scenario itself runs them)", flush=True)
        run_pipeline(scenario, stop=shared[-1], runs=runs, force=force, params=base)
    folder = root / "sweeps" / "_".join(f"{st}.{f}" for st, f, _ in axes)
    combos = list(itertools.product(*[vals for _, _, vals in axes]))
    variants = []
    for k, combo in enumerate(combos, 1):
        values = {(st, f): v for (st, f, _), v in zip(axes, combo)}
        name = "_".join(f"{f}-{_slug(v)}" for (_, f), v in values.items())
        print(f"[sweep] variant {k}/{len(combos)}: {name}", flush=True)
        variants.append(run_variant(scenario, base, name, values, shared, swept, folder, runs, force))
        atomic_write_json(folder / SWEEP_FILE, {"scenario": scenario, "grid": grid, "swept_stages": swept,
                                                "variants": variants, "planned": len(combos)})
    # beside the sweep, not inside it: outputs never land in a folder a stage reads
    comp = compare(CompareConfig(runs=[str(folder)], output=f"{folder}_compare"), show_progress=False)
    return {"sweep": str(folder), "variants": len(variants), "ran": sum(any(v == "ran" for v in d["stages"].values())
                                                                        for d in variants),
            "table": comp["table"], "plots": comp["plots"]}


# -- compare ---------------------------------------------------------------------------------------
@dataclass
class CompareConfig(StageConfig):
    runs: list = param([], "training run folders, pipeline folders (runs/<scenario>, a sweep variant) or sweep folders",
                       role="input")
    output: str = param("", "report folder (compare.md/.csv/.json, compare_curves.png, compare_roc_<set>.png)",
                        role="output")

    def validate(self, where=""):
        if not self.runs or not self.output:
            raise ConfigError(f"{where}runs and output: give at least one run and a report folder")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v
    return out


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _train_metrics(s: dict) -> dict:
    m = {"train loss": s.get("loss"), "train accuracy": s.get("accuracy"), "steps": s.get("global_step")}
    for k, v in (s.get("validation") or {}).items():
        m[f"val {k} (final)"] = v
    for k, v in (s.get("best") or {}).items():
        m[f"val {k} (best)"] = v.get("accuracy") if isinstance(v, dict) else v
    if s.get("heldout"):  # facenet's held-out validation (validation_split)
        m["held-out accuracy"] = s["heldout"].get("accuracy")
        m["held-out xent"] = s["heldout"].get("xent")
    return m


def records(paths: list[str]) -> list[dict]:
    """One record per run: name, parameters (flattened ``stage.field``), metrics, curves."""
    out = []
    for p in map(Path, paths):
        if (p / SWEEP_FILE).is_file():
            out += records([str(p / v["folder"]) for v in _load(p / SWEEP_FILE).get("variants", [])])
        elif list(p.glob("*.summary.json")):  # a pipeline folder (a scenario's, or a sweep variant's)
            params = _load(p / "params.json")
            rec = {"name": _load(p / VARIANT_FILE).get("name") or p.name, "params": {}, "metrics": {},
                   "history": None, "roc": None}
            for st, ps in params.items():
                rec["params"].update(_flat(ps, f"{st}."))
            tr = _load(p / "train.summary.json")
            if tr:
                rec["metrics"].update(_train_metrics(tr))
                rec["history"] = tr.get("history")
            ev = _load(p / "evaluate.summary.json")
            for r in ev.get("rows", []):
                if r.get("flip") in (True, "yes"):
                    rec["metrics"][f"{r['pair_set']} accuracy"] = r.get("accuracy")
                    rec["metrics"][f"{r['pair_set']} TAR@1e-3"] = r.get("tar_far_1e-3")
            if ev.get("output"):
                rec["roc"] = str(Path(ev["output"]) / "roc_curves.npz")
            cl = _load(p / "classify.summary.json")
            if cl:
                rec["metrics"]["closed-set accuracy"] = cl.get("closed_set_accuracy")
            out.append(rec)
        elif (p / "model.json").is_file():  # a training run
            m = _load(p / "manifest.json")
            out.append({"name": p.name, "params": _flat(m.get("parameters") or _load(p / "train_config.json"), "train."),
                        "metrics": _train_metrics(m.get("summary") or {}), "history": str(p / "history.csv"), "roc": None})
        else:
            raise ConfigError(f"compare: {p} is neither a training run (model.json), a pipeline folder "
                              f"(*.summary.json) nor a sweep ({SWEEP_FILE})")
    return out


def _history(path) -> list[dict]:
    if not path or not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def compare(cfg: CompareConfig | dict, show_progress: bool = True) -> dict:
    from .manifest import check_not_input, write_manifest
    from .plots import plot_compare_curves, plot_roc

    if isinstance(cfg, dict):
        cfg = CompareConfig.from_dict(cfg)
    check_not_input(cfg.output, cfg.input_paths(), "compare")
    recs = records(cfg.runs)
    if not recs:
        raise ConfigError(f"compare: no runs found in {', '.join(cfg.runs)}")
    names = [r["name"] for r in recs]
    if len(set(names)) != len(names):  # same folder names from different places: number them
        for i, r in enumerate(recs):
            r["name"] = f"{i + 1}:{r['name']}"
    keys = sorted({k for r in recs for k in r["params"]})
    differ = [k for k in keys if len({json.dumps(r["params"].get(k), sort_keys=True, default=str) for r in recs}) > 1
              and not k.endswith((".output", ".dataset", ".models", ".embedder", ".run", ".val_sets", ".pair_sets"))
              and not k.startswith("compare.")  # the comparison itself (a scenario's own folder lists it)
              and k not in ("export.check_images",)]
    metrics = list(dict.fromkeys(k for r in recs for k in r["metrics"]))
    rows = [{"run": r["name"], **{k: r["params"].get(k) for k in differ}, **{k: r["metrics"].get(k) for k in metrics}}
            for r in recs]
    out = Path(cfg.output)
    cols = ["run", *differ, *metrics]
    fmt = lambda v: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(fmt(row.get(c)) for c in cols) + " |" for row in rows]
    atomic_write_bytes(out / "compare.md", ("\n".join(md) + "\n").encode())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(out / "compare.csv", buf.getvalue().encode())
    plots = []
    hist = {r["name"]: _history(r["history"]) for r in recs}
    if any(hist.values()):
        plots.append(str(plot_compare_curves(hist, out / "compare_curves.png")))
    by_set: dict[str, dict] = {}
    for r in recs:
        if r["roc"] and Path(r["roc"]).is_file():
            with np.load(r["roc"], allow_pickle=False) as z:
                for key in z.files:
                    ps, label, kind = key.rsplit("|", 2)
                    if kind != "fpr" or "+flip" not in label:
                        continue
                    fpr, tpr = z[key].astype(np.float64), z[f"{ps}|{label}|tpr"].astype(np.float64)
                    acc = r["metrics"].get(f"{ps} accuracy") or float("nan")
                    by_set.setdefault(ps, {})[r["name"]] = SimpleNamespace(
                        roc_fpr=fpr, roc_tpr=tpr, accuracy=acc, auc=float(np.trapezoid(tpr, fpr)))
    for ps, curves in by_set.items():
        p = out / f"compare_roc_{ps}.png"
        plot_roc(curves, p, title=f"ROC: {ps}, {len(curves)} runs")
        plots.append(str(p))
    summary = {"runs": len(recs), "differing": differ, "metrics": metrics, "rows": rows, "table": str(out / "compare.md"),
               "plots": plots}
    atomic_write_json(out / "compare.json", summary)
    write_manifest(out, "compare", {}, {"runs": cfg.runs}, {"runs": len(recs)})
    return summary
