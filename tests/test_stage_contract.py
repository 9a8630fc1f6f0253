"""The stage contract, without training: one declaration per stage (CLI options, YAML and notebook
parameters derived from the config dataclass), imports in stage order, the widget plan editor, and
the preprocessing contract's bookkeeping (declared contracts, refusals)."""
import ast
import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from conftest import REPO, last_json, run_cli
from recface_lib.stages import STAGES

# the stage order of the package, earliest first; a module may import its own layer or earlier ones
LAYERS = [
    ("base", {"__init__", "errors", "stack", "config", "io_utils", "progress", "parallel", "manifest", "plots", "bundle",
              "zoo"}),
    ("data", {"data"}),
    ("protocol", {"protocol"}),
    ("convert", {"convert"}),
    ("align", {"align"}),
    ("build", {"build"}),
    ("models", {"models"}),
    ("embedders", {"embedders"}),
    ("teach", {"teach"}),
    ("train", {"train"}),
    ("evaluate", {"evaluate"}),
    ("inference", {"gallery", "inference"}),
    ("export", {"export", "quantize"}),
    ("watch", {"watch"}),
    ("workbench", {"stages", "workspace", "pipeline", "experiments", "notebook", "widgets", "cli", "demo"}),
]


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for i, (_, names) in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: not placed in a layer of tests/test_stage_contract.py (add it)")


def _import_graph() -> dict[str, set[str]]:
    pkg = REPO / "recface_lib"
    mods = {}
    for f in pkg.rglob("*.py"):
        rel = f.relative_to(pkg).with_suffix("")
        parts = ["recface_lib", *rel.parts]
        is_pkg = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_pkg else parts)
        mods[name] = (f, is_pkg)
    graph: dict[str, set[str]] = {}
    for name, (f, is_pkg) in mods.items():
        base = name if is_pkg else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base.split(".")
                    assert node.level - 1 < len(anchor), f"{f}: relative import beyond the package (line {node.lineno})"
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    mod = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            if node.__class__ is ast.ImportFrom and node.level:
                assert targets[0] in mods, f"{f}: line {node.lineno} imports {targets[0]}, which does not exist"
            for t in targets:
                if t in mods and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def test_imports_follow_the_stage_order_and_have_no_cycle():
    graph = _import_graph()
    upward = [f"{m} ({LAYERS[_layer(m)][0]}) imports {d} ({LAYERS[_layer(d)][0]})"
              for m, ds in graph.items() for d in ds if _layer(d) > _layer(m)]
    assert not upward, "imports against the stage order:\n" + "\n".join(sorted(upward))
    # cycles between modules (a package's __init__ re-exporting its own modules is not a cycle)
    state: dict[str, int] = {}
    cycles = []

    def visit(m, path):
        state[m] = 1
        for d in graph[m]:
            if d.startswith(m + "."):
                continue
            if state.get(d) == 1:
                cycles.append(path[path.index(d):] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import cycles: {cycles}"


def test_the_graph_test_can_fail(tmp_path, monkeypatch):
    """Control: an upward import (align -> evaluate) is caught."""
    graph = _import_graph()
    graph["recface_lib.align.pipeline"].add("recface_lib.evaluate.report")
    assert any(_layer(d) > _layer(m) for m, ds in graph.items() for d in ds)


# -- one declaration per stage ---------------------------------------------------------------------
def _subparsers():
    from recface_lib.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "verb")
    return sub.choices


@pytest.mark.parametrize("name", list(STAGES))
def test_cli_options_equal_config_fields(name):
    from recface_lib.cli import COMMON

    st = STAGES[name]
    fields = st.config_class.field_names()
    subs = _subparsers()
    for verb, fixed in [(name, {}), *st.aliases.items()]:
        dests = [a.dest for a in subs[verb]._actions if a.dest not in COMMON]
        assert dests == [f for f in fields if f not in fixed], verb
        for a in subs[verb]._actions:
            if a.dest in fields:  # one spelling: --field-name
                assert a.option_strings[0] == "--" + a.dest.replace("_", "-")


def name_needs_16(name: str) -> bool:
    """Fields where 0 means 'off' and a size starts at 16 px (validated across values)."""
    return name in ("size", "assume_aligned")


def _sample_values(cls):
    """A non-default value for every field, of the right type."""
    import typing

    hints = typing.get_type_hints(cls)
    vals = {}
    for f in dataclasses.fields(cls):
        default = getattr(cls(), f.name)
        ch = f.metadata.get("choices")
        tp = hints[f.name]
        if ch:
            vals[f.name] = ch[-1] if ch[-1] != default else ch[0]
        elif tp is bool:
            vals[f.name] = not default
        elif tp in (int, float):  # inside the field's bounds (lo, hi)
            step = 3 if tp is int else 0.25
            lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
            v = default + step
            if hi is not None and v > hi:
                v = default - step if lo is None or default - step >= lo else (lo + hi) / 2
            if lo is not None and v < lo:
                v = lo
            vals[f.name] = tp(v) if v != default else tp(lo if lo != default else hi)
            if name_needs_16(f.name) and 0 < vals[f.name] < 16:
                vals[f.name] = 16 + step * 4
        elif tp is str or str in typing.get_args(tp):  # a path, or a path or a list of them
            vals[f.name] = f"some/{f.name}"
    return vals


@pytest.mark.parametrize("name", list(STAGES))
def test_yaml_cli_and_notebook_give_the_same_config(name, tmp_path):
    from recface_lib.cli import build_parser, config_from_args
    from recface_lib.stages import check_namespace

    cls = STAGES[name].config_class
    vals = _sample_values(cls)
    # fields a stage's validation needs filled or consistent
    extra = {"convert": {"mode": "pairs2bin"}, "build": {"test_split": 0.0, "contract_file": "", "unlabelled": False},
             "train": {"head": "ArcFace", "precision": "float32", "cpu_replicas": 0, "jit_compile": False,
                       "plan": [[2, 0.1, True, 2], {"epochs": 1, "lr": 0.01, "decay": "cosine"}],
                       "head_params": {"easy_margin": True}, "sample_rate": 1.0,
                       "strategy": "mirrored", "sampler_params": {"k": 2},  # pk batches: one machine's replicas
                       "dataset": ["some/a", "some/b"]},  # several build outputs as one
             "evaluate": {"folds": [1, 10], "models": ["dlib_resnet", "runs/x"], "pair_sets": ["a.bin"]},
             "export": {"formats": ["onnx", "tflite"]}, "compare": {"runs": ["runs/a", "runs/b"]}}.get(name, {})
    vals.update(extra)
    from_dict = cls.from_dict(vals)
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(vals))
    from_yaml = cls.from_yaml(p)
    argv = [name]
    for k, v in vals.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            argv.append(flag if v else "--no-" + k.replace("_", "-"))
        elif isinstance(v, list):
            argv += [flag, json.dumps(v)]
        elif isinstance(v, dict):
            argv += [flag, json.dumps(v)]
        else:
            argv += [flag, str(v)]
    from_cli = config_from_args(name, build_parser().parse_args(argv))
    from_nb = check_namespace(name, {**vals, "show_panel": False, "summary_path": "", "mount_drive": False})
    assert from_dict == from_yaml == from_cli == from_nb
    # --params + an option: the option wins
    over = config_from_args(name, build_parser().parse_args([name, "--params", str(p), "--output", "elsewhere"]))
    assert over.output == "elsewhere" and over.replace(output=from_yaml.output) == from_yaml


def test_unknown_parameter_in_set_is_named():
    proc = run_cli("build", "--set", "inptu=x", "--json", check=False)
    assert proc.returncode == 1 and "unknown parameter(s) 'inptu'" in last_json(proc)["error"]


def test_head_parameters_are_checked_by_the_head():
    from recface_lib.errors import ConfigError
    from recface_lib.train.config import TrainConfig

    cfg = TrainConfig.from_dict({"dataset": "d", "output": "o", "head": "CombinedHead",
                                 "head_params": {"margin1": 1.0, "margin3": 0.2}})
    assert cfg.head_params == {"margin1": 1.0, "margin3": 0.2}
    with pytest.raises(ConfigError, match="ArcFace has no parameter.*margin3.*valid: easy_margin"):
        TrainConfig.from_dict({"dataset": "d", "output": "o", "head": "ArcFace", "head_params": {"margin3": 0.2}})


# -- widgets ---------------------------------------------------------------------------------------
def test_plan_editor_round_trips_every_scenario_plan_unchanged():
    pytest.importorskip("ipywidgets")
    from recface_lib.train.config import TrainConfig
    from recface_lib.widgets import panel

    from recface_lib.pipeline import scenario_params

    plans = [scenario_params(p.parent.name, REPO / "papermill_params")["train"]["plan"]  # $RECFACE_SCENARIO expanded
             for p in sorted((REPO / "papermill_params").glob("*/train.yaml"))]
    assert any(isinstance(x, str) for x in plans)  # facenet_casia's schedule file
    plans += [[[2, 0.1], [1, 0.01, True, 2, 1e-4],
               {"epochs": 3, "lr": 0.1, "warmup_epochs": 1, "decay": "cosine", "lr_end": 1e-4, "weight_decay": 5e-4},
               {"epochs": 1, "lr": 0.01, "freeze_backbone": True}]]
    assert len(plans) >= 5
    for plan in plans:
        cfg = TrainConfig.from_dict({"dataset": "d", "output": "o", "steps_per_epoch": 10, "plan": plan})
        assert panel(cfg).config().plan == plan
    # an edit in a mapping-style stage's YAML box keeps its other keys
    cfg = TrainConfig.from_dict({"dataset": "d", "output": "o", "steps_per_epoch": 10, "plan": plans[-1]})
    p = panel(cfg)
    box = p.plan.rows[2][1][0]
    box.value = box.value.replace("lr: 0.1", "lr: 0.05")
    assert p.config().plan[2] == {**plans[-1][2], "lr": 0.05}
    p.plan.rows[1][1][4].value = ""  # blank weight decay: the run's default
    assert p.config().plan[1] == [1, 0.01, True, 2]


# -- notebooks -------------------------------------------------------------------------------------
def test_extra_user_cells_do_not_fail_the_drift_check(tmp_path):
    import sys

    import nbformat
    sys.path.insert(0, str(REPO / "notebooks"))
    from build_notebooks import parameters_cell, parameters_source

    nb = nbformat.read(str(REPO / "notebooks" / "04_evaluate.ipynb"), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("my_plot = 1  # a researcher's own cell"))
    assert parameters_cell(nb).source == parameters_source("evaluate")
    parameters_cell(nb).source += "\nnew_field = 1"
    assert parameters_cell(nb).source != parameters_source("evaluate")


# -- the preprocessing contract's bookkeeping ------------------------------------------------------
def test_declared_contracts(tmp_path):
    from recface_lib.errors import ConfigError
    from recface_lib.manifest import CONTRACT_KEYS, check_contract, declared_contract

    c = declared_contract(assume_aligned=112)
    assert set(c) == set(CONTRACT_KEYS) and c["template"][0] == [38.2946, 51.6963] and "assumed" in c["source"]
    f = tmp_path / "c.yaml"
    f.write_text("size: 96\ndetector: dlib_hog\nmethod: box\nsquare: true\nlandmark_model: none\n")
    c = declared_contract(contract_file=str(f))
    assert (c["size"], c["detector"], c["method"], c["square"]) == (96, "dlib_hog", "box", True)
    assert check_contract(c, "x") is c
    f.write_text("size: 96\ndetecter: dlib_hog\n")
    with pytest.raises(ConfigError, match="unknown contract key.*detecter"):
        declared_contract(contract_file=str(f))
    from recface_lib.errors import FormatError
    with pytest.raises(FormatError, match="no preprocessing contract"):
        check_contract(None, "run/model.json")
    with pytest.raises(FormatError, match="lacks input_size, normalization"):
        check_contract(declared_contract(assume_aligned=112), "b.zip", model=True)


def test_build_records_the_align_contract_and_refuses_a_second_one(tmp_path):
    from recface_lib.align.config import AlignConfig
    from recface_lib.io_utils import encode_image
    from recface_lib.manifest import write_manifest

    import numpy as np
    src = tmp_path / "aligned"
    for person in ("a", "b"):
        for i in range(3):
            (src / person).mkdir(parents=True, exist_ok=True)
            (src / person / f"{i}.png").write_bytes(encode_image(np.full((96, 96, 3), 40 * i, np.uint8), ".png"))
    cfg = AlignConfig.from_dict({"input": "x", "output": str(src), "detector": "dlib_hog", "method": "box",
                                 "square": True, "size": 96})
    write_manifest(src, "align", cfg.output_params(), {}, {}, cfg.contract())
    s = last_json(run_cli("build", "--input", str(src), "--output", str(tmp_path / "ds"), "--json"))
    meta = json.loads((tmp_path / "ds" / "metadata.json").read_text())
    assert meta["preprocessing"] == cfg.contract() and "dlib_hog/box at 96 px" in s["preprocessing"]
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["inputs"]["input"]["kind"] == "folder"
    proc = run_cli("build", "--input", str(src), "--output", str(tmp_path / "ds2"), "--assume-aligned", "112",
                   "--json", check=False)
    assert proc.returncode == 1 and "do not declare another contract" in last_json(proc)["error"]
    Path(src / "manifest.json").unlink()
    s = last_json(run_cli("build", "--input", str(src), "--output", str(tmp_path / "ds3"), "--json"))
    assert s["preprocessing"].startswith("none")


def test_bad_fold_numbers_and_missing_bundle_fail_before_any_work(tmp_path):
    for argv in (["pairs2bin", "--images", "a", "--pairs", "b", "--output", str(tmp_path / "c.bin"), "--folds", "0"],
                 ["align", "--input", "a", "--output", "b", "--exclude-folds", "0"],
                 ["evaluate", "--pair-sets", "x.bin", "--folds", "-1", "--output", "o"]):
        proc = run_cli(*argv, "--json", check=False)
        assert proc.returncode == 1 and "folds are numbered from 1" in last_json(proc)["error"], argv
    proc = run_cli("identify", "--bundle", str(tmp_path / "nope.zip"), "x.jpg", "--json", check=False)
    assert proc.returncode == 1 and last_json(proc)["error"] == f"{tmp_path / 'nope.zip'}: no such bundle file"
