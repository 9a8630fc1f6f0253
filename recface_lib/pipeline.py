"""``recface pipeline --scenario demo [--from STAGE] [--to STAGE]``: run the stage notebooks in
order with papermill, parameters from ``papermill_params/<scenario>/<stage>.yaml``.

Every YAML is validated against its stage's dataclass before anything runs (a misspelt parameter
fails at once, listing the valid names). Executed notebooks, each stage's summary JSON and a
Markdown summary of all stages go to ``runs/<scenario>/``. The first failing stage stops the run
with its error. A stage whose parameters (and the summaries of the stages before it) are unchanged
since its last successful run is skipped."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

from .errors import ConfigError, RecfaceError
from .io_utils import atomic_write_bytes, atomic_write_json
from .stages import NOTEBOOKS, STAGE_ORDER, stage_config
from .workspace import find_scenario, notebook_path


VARIANTS_FILE = "variants.yaml"  # a scenario's extra runs (scenario_variants)
VARIANT_FILE = "variant.json"    # in a variant's folder: its name and overrides


class StageFailed(RecfaceError):
    pass


def kernel_manager(log_path: Path, progress_path: Path):
    """A kernel manager whose kernel writes its own stderr (the kernel-transport warning, TensorFlow's
    start-up lines) to ``log_path`` instead of the user's console, and reports its progress bars to
    ``progress_path`` (``progress.RECFACE_PROGRESS_FILE``)."""
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            log = open(log_path, "ab")
            kw["stderr"] = log
            kw["env"] = {**(kw.get("env") or os.environ), "RECFACE_PROGRESS_FILE": str(progress_path),
                         "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
            try:
                return await super()._async_launch_kernel(kernel_cmd, **kw)
            finally:
                log.close()  # the kernel holds its own descriptor

    return QuietKernelManager


class ConsoleRelay:
    """While a stage's notebook runs: one console line with the stage's current progress bar and
    its ETA, read from the kernel's progress file."""

    def __init__(self, stage: str, path: Path):
        self.stage, self.path = stage, path

    def __enter__(self):
        import threading

        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        from .progress import progress, relay_line

        bar, desc = None, None
        while not self.stop.wait(0.5):
            st = relay_line(str(self.path))
            if st is None:
                continue
            d, n, total, unit = st
            if d != desc or bar is None:
                if bar is not None:
                    bar.close()
                bar = progress(total=total, desc=f"[{self.stage}] {d}", unit=unit)
                if bar.disable:
                    return
                desc = d
            bar.update(n - bar.n)
        if bar is not None:
            bar.close()

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)


def _expand(v):
    """``$RECFACE_DATA`` / ``${VAR}`` in string values (data and Drive locations differ per machine;
    ``$RECFACE_SCENARIO`` is the scenario's own folder)."""
    if isinstance(v, str):
        return os.path.expandvars(v)
    if isinstance(v, list):
        return [_expand(x) for x in v]
    if isinstance(v, dict):
        return {k: _expand(x) for k, x in v.items()}
    return v


def _data_paths(v):
    if isinstance(v, str):
        if v.startswith(("$RECFACE_DATA", "${RECFACE_DATA}")):
            yield v
    elif isinstance(v, list):
        for x in v:
            yield from _data_paths(x)
    elif isinstance(v, dict):
        for x in v.values():
            yield from _data_paths(x)


def _check_data(raw: dict, where) -> None:
    """Every ``$RECFACE_DATA/...`` path of a stage file exists; else one line saying where the data
    folder is and the command that fills it."""
    for v in _data_paths(raw):
        p = Path(os.path.expandvars(v))
        if not p.exists():
            raise ConfigError(f"{p}: not found ({where} reads {v}; RECFACE_DATA is {os.environ['RECFACE_DATA']}): "
                              "fetch LFW there with `recface data lfw` (or `recface data lfw --from PATH` for a local "
                              "copy), or set RECFACE_DATA to a folder holding lfw/ and lfw_friends16/")


def scenario_params(scenario: str, params_dir: str | os.PathLike | None = None) -> dict[str, dict]:
    import yaml

    from .data.datasets import shared_data_dir

    if "RECFACE_DATA" not in os.environ:
        os.environ["RECFACE_DATA"] = str(shared_data_dir())
    os.environ.setdefault("RECFACE_DRIVE", "/content/drive/MyDrive/recface")  # the colab scenario's Drive folder
    d = find_scenario(scenario, params_dir)
    os.environ["RECFACE_SCENARIO"] = str(d.resolve())  # files shipped beside the YAMLs (a schedule file)
    out = {}
    for stage in STAGE_ORDER:
        p = d / f"{stage}.yaml"
        if p.is_file():
            raw = yaml.safe_load(p.read_text()) or {}
            _check_data(raw, p)
            data = _expand(raw)
            stage_config(stage, data, source=str(p))  # validate now
            out[stage] = data
    unknown = [p.stem for p in d.glob("*.yaml") if p.stem not in STAGE_ORDER and p.name != VARIANTS_FILE]
    if unknown:
        raise ConfigError(f"{d}: unknown stage file(s) {', '.join(unknown)}; valid: {', '.join(STAGE_ORDER)}")
    return out


def _rewrite(value, moved: dict[str, str]):
    """Paths equal to (or inside) a moved output point at its new place."""
    if isinstance(value, str):
        for old, new in moved.items():
            if value == old or value.startswith(old.rstrip("/") + "/"):
                return new + value[len(old):]
        return value
    if isinstance(value, list):
        return [_rewrite(v, moved) for v in value]
    if isinstance(value, dict):
        return {k: _rewrite(v, moved) for k, v in value.items()}
    return value


def variant_params(base: dict, axes_values: dict[tuple[str, str], object], stages: list[str], folder: Path) -> dict:
    """The scenario's parameters with the variant's values, the outputs of ``stages`` moved into
    ``folder`` (and every later reference to them rewritten)."""
    p = copy.deepcopy(base)
    for (st, field), v in axes_values.items():
        p[st][field] = v
    moved = {}
    for st in stages:
        old = str(p[st].get("output", ""))
        if old:
            moved[old] = str(folder / Path(old).name)
    for st in stages:
        p[st] = _rewrite(p[st], moved)
    return p


def run_variant(scenario: str, base: dict, name: str, values: dict[tuple[str, str], object], shared: list[str],
                swept: list[str], folder: Path, runs, force: bool) -> dict:
    """One variant of a scenario (a sweep's grid point, or a ``variants.yaml`` entry): the stages
    ``swept`` with ``values`` in ``folder/name`` (the outputs moved there), the ``shared`` stages'
    summaries copied in to key them. A rerun skips what is unchanged."""
    root = Path(runs) / scenario
    vdir = folder / name
    vdir.mkdir(parents=True, exist_ok=True)
    for st in shared:  # the shared stages' results feed the variant's stage keys
        s = root / f"{st}.summary.json"
        if s.is_file():
            atomic_write_bytes(vdir / s.name, s.read_bytes())
    overrides = {f"{st}.{f}": v for (st, f), v in values.items()}
    atomic_write_json(vdir / VARIANT_FILE, {"name": name, "overrides": overrides})
    res = run_pipeline(scenario, start=swept[0], stop=swept[-1], runs=runs, force=force,
                       params=variant_params(base, values, swept, vdir), out=vdir)
    return {"name": name, "folder": name, "overrides": overrides,
            "stages": {s["stage"]: s["status"] for s in res["stages"]}}


def scenario_variants(scenario: str, params: dict, params_dir=None) -> dict[str, dict[tuple[str, str], object]]:
    """``variants.yaml`` beside a scenario's stage files: ``name: {stage.field: value, ...}``, the
    runs that ``recface pipeline`` makes beside the scenario's own (an ArcFace model beside a
    softmax one, on the same data and budget). {} when there is none."""
    import yaml

    p = find_scenario(scenario, params_dir) / VARIANTS_FILE
    if not p.is_file():
        return {}
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) and v for v in data.values()):
        raise ConfigError(f"{p}: expected name: {{stage.field: value, ...}} entries")
    out = {}
    for name, over in data.items():
        if not re.fullmatch(r"[A-Za-z0-9._+-]+", str(name)):
            raise ConfigError(f"{p}: variant name {name!r}: letters, digits and ._+- only (it names a folder)")
        vals = {}
        for key, v in over.items():
            st, _, fld = str(key).partition(".")
            if st not in params or st == "compare":
                raise ConfigError(f"{p}: {name}: {key}: {st!r} is not a stage of scenario {scenario} that a "
                                  f"variant can change: {', '.join(s for s in params if s != 'compare')}")
            if fld not in stage_config(st, params[st]).field_names():
                raise ConfigError(f"{p}: {name}: {key}: stage {st} has no field {fld!r}; valid: "
                                  f"{', '.join(stage_config(st, params[st]).field_names())}")
            vals[(st, fld)] = v
        out[str(name)] = vals
    return out


def run_with_variants(scenario: str, params: dict, variants: dict, start, stop, runs, force, params_dir=None) -> dict:
    """The scenario's stages (but compare) in ``runs/<scenario>``, then each variant from its first
    changed stage in ``runs/<scenario>/variants/<name>``, then the compare stage (rerun every time:
    it reads the variants). ``--from``/``--to`` bound the scenario's own stages; the variants and
    compare run when the range reaches the end."""
    order = [s for s in STAGE_ORDER if s in params]
    own = {k: v for k, v in params.items() if k != "compare"}
    last = [s for s in order if s != "compare"][-1]
    res = None
    if start != "compare":
        res = run_pipeline(scenario, start, None if stop == "compare" else stop, runs, force, params_dir, params=own)
    variants_out = []
    if stop in (None, "compare", last):
        for name, values in variants.items():
            first = min(order.index(st) for st, _ in values)
            swept = [s for s in order[first:] if s != "compare"]
            print(f"[variant] {name}: {', '.join(f'{st}.{f}={v!r}' for (st, f), v in values.items())}", flush=True)
            variants_out.append(run_variant(scenario, own, name, values, order[:first], swept,
                                            Path(runs) / scenario / "variants", runs, force))
    stages = list(res["stages"]) if res else []
    if "compare" in params and stop in (None, "compare"):
        res = run_pipeline(scenario, "compare", "compare", runs, True, params_dir, params=params)
        stages += res["stages"]
    return {"scenario": scenario, "stages": stages, "variants": variants_out,
            "summary": str(Path(runs) / scenario / "summary.md")}


def _key(params: dict, upstream: list[str]) -> str:
    return hashlib.sha256(json.dumps([params, upstream], sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_pipeline(scenario: str = "demo", start: str | None = None, stop: str | None = None,
                 runs: str | os.PathLike = "runs", force: bool = False, params_dir=None,
                 params: dict | None = None, out: str | os.PathLike | None = None) -> dict:
    """``params`` (stage -> parameters) replaces the scenario's YAMLs and ``out`` the state folder
    ``runs/<scenario>`` (a sweep's variants); stages outside ``start``..``stop`` contribute the
    summary found in ``out`` to the keys of later stages."""
    import papermill as pm

    from .progress import import_tensorflow_quietly

    import_tensorflow_quietly()  # validating a train YAML imports it: no start-up lines on the console
    if params is None:
        params = scenario_params(scenario, params_dir)
        variants = scenario_variants(scenario, params, params_dir)
        if variants:
            return run_with_variants(scenario, params, variants, start, stop, runs, force, params_dir)
    else:
        for stage, p in params.items():
            stage_config(stage, p, source=f"{scenario}: {stage}")
    stages = [s for s in STAGE_ORDER if s in params]
    for name, s in (("--from", start), ("--to", stop)):
        if s and s not in stages:
            raise ConfigError(f"{name}: {s!r} is not a stage of scenario {scenario}: {', '.join(stages)}")
    if start:
        stages = stages[stages.index(start):]
    if stop:
        stages = stages[:stages.index(stop) + 1]
    out = Path(out) if out is not None else Path(runs) / scenario
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "params.json", params)  # what `recface compare` reads
    done, upstream = [], []
    for stage in STAGE_ORDER:
        if stage not in params:
            continue
        summary_p = out / f"{stage}.summary.json"
        state_p = out / f"{stage}.state.json"
        key = _key({**params[stage], **stage_config(stage, params[stage]).content_params()}, upstream)
        if stage not in stages:
            if summary_p.is_file():  # outside --from/--to: its last result still belongs in the summary
                upstream.append(summary_p.read_text())
                done.append({"stage": stage, "status": "not run now", "summary": json.loads(summary_p.read_text())})
            continue
        if not force and state_p.is_file() and summary_p.is_file() and json.loads(state_p.read_text()).get("key") == key:
            print(f"[{stage}] unchanged since the last run: skipped ({summary_p})", flush=True)
            done.append({"stage": stage, "status": "skipped", "summary": json.loads(summary_p.read_text())})
            upstream.append(summary_p.read_text())
            continue
        prev = Path(str(params[stage].get("output", "")))
        if state_p.is_file() and prev.parts and prev.exists() and out.resolve() in prev.resolve().parents:
            # parameters or inputs changed: the pipeline's own old output would be resumed or mixed in
            print(f"[{stage}] inputs or parameters changed: removing the old {prev}", flush=True)
            shutil.rmtree(prev) if prev.is_dir() else prev.unlink()
        nb = notebook_path(NOTEBOOKS[stage])
        executed = out / f"{NOTEBOOKS[stage]}.ipynb"
        t0 = time.time()
        print(f"[{stage}] running {nb.name} -> {executed}", flush=True)
        kernel_log = out / f"{stage}.kernel.log"
        prog = out / f".{stage}.progress.json"
        prog.unlink(missing_ok=True)
        try:
            with ConsoleRelay(stage, prog):
                pm.execute_notebook(str(nb), str(executed), parameters={**params[stage], "show_panel": False,
                                                                         "summary_path": str(summary_p.resolve())},
                                    cwd=str(Path.cwd()), kernel_name="python3", progress_bar=False, log_output=False,
                                    kernel_manager_class=kernel_manager(kernel_log, prog))
        except pm.PapermillExecutionError as e:
            raise StageFailed(f"stage {stage} failed ({executed}): {e.ename}: {e.evalue}") from None
        except RuntimeError as e:  # the kernel died (out of memory...): its own output is in the log
            raise StageFailed(f"stage {stage}: the notebook kernel stopped ({e}); see {kernel_log}") from None
        finally:
            prog.unlink(missing_ok=True)
        summary = json.loads(summary_p.read_text())
        atomic_write_json(state_p, {"key": key, "seconds": round(time.time() - t0, 1)})
        done.append({"stage": stage, "status": "ran", "seconds": round(time.time() - t0, 1), "summary": summary})
        upstream.append(summary_p.read_text())
        print(f"[{stage}] done in {time.time() - t0:.0f} s", flush=True)
    md = summary_markdown(scenario, done, out)
    atomic_write_bytes(out / "summary.md", md.encode())
    return {"scenario": scenario, "stages": [{k: v for k, v in d.items() if k != "summary"} for d in done
                                             if d["status"] != "not run now"],
            "summary": str(out / "summary.md")}


KEY_FIGURES = {
    "convert": ("pairs", "images", "positives", "output"),
    "align": ("items", "counts", "aligned_grid"),
    "build": ("num_samples", "num_classes", "shards"),
    "train": ("global_step", "loss", "accuracy", "validation", "best", "curves"),
    "evaluate": ("table", "plots"),
    "classify": ("embedder", "classifier", "closed_set_accuracy", "others_false_accept_rate", "wrong_person_accepts", "threshold",
                 "confusion"),
    "export": ("bundle", "checks", "identified"),
}


def summary_markdown(scenario: str, done: list[dict], out: Path) -> str:
    lines = [f"# recface pipeline: scenario `{scenario}`", ""]
    for d in done:
        s = d["summary"]
        lines.append(f"## {d['stage']} ({d['status']}{', %.0f s' % d['seconds'] if 'seconds' in d else ''})")
        for k in KEY_FIGURES.get(d["stage"], ()):
            if k in s and s[k] is not None:
                v = s[k]
                if isinstance(v, float):
                    v = f"{v:.4f}"
                elif isinstance(v, (dict, list)):
                    v = json.dumps(v, default=str)[:400]
                lines.append(f"- {k}: {v}")
        if d["stage"] == "evaluate" and s.get("table") and Path(s["table"]).is_file():
            lines += ["", Path(s["table"]).read_text()]
        for k in ("aligned_grid", "curves", "confusion"):
            if s.get(k):
                lines.append(f"\n![{k}]({os.path.relpath(s[k], out)})")
        for p in s.get("plots") or []:
            lines.append(f"\n![roc]({os.path.relpath(p, out)})")
        lines.append("")
    return "\n".join(lines)
