"""``recface <verb> ...``. Stage verbs are generated from the stage registry (``stages.py``): each
config field is one option (``--field-name``), plus ``--params FILE.yaml`` and ``--set KEY=VALUE``;
options override ``--set``, which overrides the YAML. Tools (``bin-info``, ``scan``, ``models``,
``identify``, ``pipeline``) have their own few options. Every verb accepts ``--json`` and then
prints a one-line JSON summary as its last line (``{"ok": false, "error": ...}`` on failure)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from typing import Callable

from .errors import ConfigError, RecfaceError

COMMON = ("params", "set", "json", "no_progress", "help")
TF_STAGES = ("train", "export")  # always need TensorFlow: imported quietly first (no start-up log lines)
TOOLS: dict[str, tuple[Callable, Callable, str]] = {}


class ArgsError(Exception):
    """A command line argparse cannot read (kept as an exception so --json can report it)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ArgsError(f"{self.prog}: {message} (see {self.prog} --help)")


def tool(name: str, help: str, parser: Callable):
    def deco(fn):
        TOOLS[name] = (fn, parser, help)
        return fn
    return deco


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a one-line JSON summary as the last line")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


# -- stage verbs: options from the config's fields -----------------------------------------------
def _yaml_value(text: str):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot read {text!r} as a value ({e})") from e


def _kind(tp) -> str:
    """bool, int, float, str, list, dict or any (YAML) for a field's type hint."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _kind(args[0]) if len(args) == 1 and args[0] in (list, dict) else "any"
    origin = typing.get_origin(tp) or tp
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}.get(origin, "any")


def add_config_options(p: argparse.ArgumentParser, cls, fixed: dict | None = None) -> list[str]:
    """One option per field of ``cls`` (except ``fixed`` ones); returns the option dests."""
    hints = typing.get_type_hints(cls)
    dests = []
    for f in dataclasses.fields(cls):
        if fixed and f.name in fixed:
            continue
        kind = _kind(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        h = f.metadata.get("help", "")
        kw: dict = {"dest": f.name, "default": None, "help": h}
        if f.metadata.get("choices"):
            kw.update(choices=list(f.metadata["choices"]), type=type(f.metadata["choices"][0]))
        elif kind == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        elif kind in ("int", "float", "str"):
            kw["type"] = {"int": int, "float": float, "str": str}[kind]
        elif kind == "list":
            kw.update(nargs="+", action="extend", type=_yaml_value, metavar="VALUE",
                      help=f"{h} (several values, or one YAML list)")
        else:  # dict, optional scalars
            kw.update(type=_yaml_value, metavar="YAML")
        p.add_argument(flag, **kw)
        dests.append(f.name)
    p.add_argument("--params", help=f"YAML of {cls.__name__} fields; --set and options override it")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any parameter (YAML value), repeatable")
    return dests


def _overrides(pairs: list[str] | None) -> dict:
    out = {}
    for kv in pairs or []:
        if "=" not in kv:
            raise ConfigError(f"--set {kv!r}: expected KEY=VALUE")
        k, v = kv.split("=", 1)
        out[k.strip()] = _yaml_value(v)
    return out


def config_from_args(stage_name: str, a: argparse.Namespace, fixed: dict | None = None):
    """The stage config from a parsed command line: YAML < --set < options (< the alias' fixed values)."""
    from .stages import stage

    cls = stage(stage_name).config_class
    hints = typing.get_type_hints(cls)
    over = _overrides(a.set)
    for f in dataclasses.fields(cls):
        v = getattr(a, f.name, None)
        if v is not None:
            if _kind(hints[f.name]) == "list" and isinstance(v, list) and len(v) == 1 and isinstance(v[0], list):
                v = v[0]  # one YAML list given to a list option (several values); a YAML option is as given
            over[f.name] = v
    over.update(fixed or {})
    src = f"recface {a.verb}"
    return cls.from_yaml(a.params, **over) if a.params else cls.from_dict(over, source=src)


def _stage_verbs() -> dict[str, tuple[str, dict, str]]:
    """verb -> (stage, fixed fields, help)."""
    from .stages import STAGES

    out = {}
    for st in STAGES.values():
        out[st.name] = (st.name, {}, st.help)
        for alias, fixed in st.aliases.items():
            what = f"mode {fixed['mode']}" if "mode" in fixed else "the same options"
            out[alias] = (st.name, fixed, f"the {st.name} stage with {what}")
    return out


def _human(res) -> None:
    from pathlib import Path

    for k, v in res.summary.items():
        if k in ("rows", "history", "comparison"):
            continue
        print(f"{k}: {v}")
    for t in res.tables:
        print(Path(t).read_text())


# -- tools ---------------------------------------------------------------------------------------
def _p_bin_info(p):
    p.add_argument("bin", help="verification .bin file")


@tool("bin-info", "pairs, positives, negatives and image sizes of a verification .bin", _p_bin_info)
def _bin_info(a):
    from .convert import bin_info
    return bin_info(a.bin)



def _p_scan(p):
    p.add_argument("root", help="identity folder root/<identity>/<images>, or a .rec (+ .idx)")
    p.add_argument("--min-images", type=int, default=0)


@tool("scan", "count identities and images of an identity folder", _p_scan)
def _scan(a):
    from pathlib import Path

    from .data.image_folder import scan_folder
    from .data.recordio import rec_as_folder
    src = rec_as_folder(a.root) if Path(a.root).suffix == ".rec" else scan_folder(a.root)
    f = src.select(min_images=a.min_images)
    counts = sorted(f.counts.values())
    return {"root": a.root, "classes": len(f.classes), "images": f.num_images,
            "min_per_class": counts[0] if counts else 0, "max_per_class": counts[-1] if counts else 0}



def _p_models(p):
    p.add_argument("--input-size", type=int, default=112)
    p.add_argument("--embd-shape", type=int, default=512)
    p.add_argument("names", nargs="*", help="backbones (default: all)")


@tool("models", "backbones, heads, objective terms, triplet losses and batch samplers", _p_models)
def _models(a):
    from .data.samplers import BATCH_SAMPLERS
    from .models.build import HEAD_NAMES, describe_backbones
    from .train.terms import TERMS
    from .train.triplet_losses import TRIPLET_LOSSES
    return {"backbones": describe_backbones(a.input_size, a.embd_shape, a.names or None), "heads": list(HEAD_NAMES),
            "terms": {name: cls.weight_field for name, cls in TERMS.items()}, "triplet_losses": list(TRIPLET_LOSSES),
            "samplers": ["shuffle", *BATCH_SAMPLERS]}



def _embedder_options(p, what: str):
    """The options enroll and identify share: which embedder, which gallery."""
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--bundle", help=f"export bundle .zip ({what})")
    g.add_argument("--embedder", help="any embedder: a bundle .zip, a training run folder, or a reference "
                   "(sface, dlib_resnet); with --gallery")
    p.add_argument("--gallery", help="gallery folder (gallery.npz + gallery.json; default: beside the bundle)")
    p.add_argument("--backend", default="onnx", choices=("onnx", "keras"), help="a bundle's: onnx runs without TensorFlow")


def _recognizer(a):
    from .inference import FaceRecognizer

    return FaceRecognizer.from_embedder(a.bundle or a.embedder, a.gallery, a.backend)


def _p_identify(p):
    _embedder_options(p, "its contract, classifier, threshold and gallery")
    p.add_argument("images", nargs="+", help="photos")


@tool("identify", "name the faces in photos with an export bundle or any embedder and a gallery", _p_identify)
def _identify(a):
    rec = _recognizer(a)
    res = {img: [f.to_json() for f in rec.identify(img)] for img in a.images}
    if not a.json:
        for img, faces in res.items():
            print(img + ": " + (", ".join(f"{f['name'] or 'unknown'} ({f['score']:.3f})" for f in faces) or "no face"))
    return {"images": res, "tensorflow_imported": "tensorflow" in sys.modules}



def _scenario_options(p, default: str, runs_help: str):
    """The options `pipeline` and `sweep` share."""
    p.add_argument("--scenario", default=default, help="papermill_params/<scenario>/ of the current folder, else a "
                   "shipped one (demo, tiny, colab, ms1mv2)")
    p.add_argument("--to", dest="stop", help="last stage to run")
    p.add_argument("--runs", default="runs", help=runs_help)
    p.add_argument("--force", action="store_true", help="rerun stages even when unchanged")
    p.add_argument("--params-dir", help="folder of scenarios (default: ./papermill_params/, then the shipped ones)")


def _p_enroll(p):
    _embedder_options(p, "the gallery is kept beside it")
    p.add_argument("--person", help="the name to enrol the photos under")
    p.add_argument("--remove", metavar="NAME", help="remove this person from the gallery")
    p.add_argument("--threshold", type=float, help="cosine above which a face is named (default: the bundle's "
                   "verification threshold); kept with the gallery")
    p.add_argument("photos", nargs="*", help="photos of the person (several: one face each)")


@tool("enroll", "enrol a person from a few photos into a gallery (a bundle's, or --gallery FOLDER for any embedder; "
      "or --remove NAME); identify and watch use it",
      _p_enroll)
def _enroll(a):
    from .errors import ConfigError
    from .gallery import Gallery

    if bool(a.person) == bool(a.remove) or (a.person and not a.photos) or (a.remove and a.photos):
        raise ConfigError("enroll: give --person NAME with photos, or --remove NAME alone")
    rec = _recognizer(a)
    g = rec.gallery or Gallery(rec.embedder.dim, rec.identity)
    if a.threshold is not None:
        from .config import check_number
        check_number("--threshold", a.threshold, -1.0, 1.0)
        g.threshold = a.threshold
    if a.person:
        g.add(a.person, rec.enroll_vectors(a.photos), [str(p) for p in a.photos])
        done = {"enrolled": a.person, "photos": len(a.photos)}
    else:
        done = {"removed": a.remove, "photos": g.remove(a.remove)}
    g.save(a.gallery or a.bundle or a.embedder)
    return {**done, "people": g.counts(), "threshold": g.threshold if g.threshold is not None else rec.threshold}



def _p_pipeline(p):
    _scenario_options(p, "demo", "executed notebooks and reports go to RUNS/<scenario>/")
    p.add_argument("--from", dest="start", help="first stage to run")


@tool("pipeline", "run the stage notebooks of a scenario in order with papermill (skips unchanged stages)", _p_pipeline)
def _pipeline(a):
    from .pipeline import run_pipeline
    return run_pipeline(a.scenario, a.start, a.stop, a.runs, a.force, a.params_dir)



def _p_sweep(p):
    _scenario_options(p, "tiny", "variants go to RUNS/<scenario>/sweeps/<grid>/<variant>/")
    p.add_argument("--grid", nargs="+", required=True, metavar="STAGE.FIELD=V1,V2",
                   help="values to sweep, e.g. train.head=ArcFace,CosFace train.margin=0.3,0.5 (every combination)")


@tool("sweep", "run a scenario's variants over a parameter grid (resumable), then compare them", _p_sweep)
def _sweep(a):
    from .experiments import sweep
    return sweep(a.scenario, a.grid, a.runs, a.params_dir, a.stop, a.force)



def _p_data(p):
    p.add_argument("dataset", choices=["lfw"], help="lfw: LFW deep-funneled + pairs.txt, and lfw_friends16 derived from it")
    p.add_argument("--from", dest="source", default="", metavar="PATH",
                   help="a local copy instead of the official site: a folder (lfw-deepfunneled/ + pairs.txt) or "
                        "lfw-deepfunneled.tgz (pairs.txt beside it)")
    p.add_argument("--pairs", default="", help="pairs.txt, where it is not beside --from")
    p.add_argument("--output", default="", help="the data folder (default: $RECFACE_DATA, else shared/data beside "
                                                "the repository, else data/ in the user cache)")


@tool("data", "fetch a public dataset into the scenarios' data folder, checked (LFW: MD5 and image counts)", _p_data)
def _data(a):
    from .data.fetch import fetch_lfw
    return fetch_lfw(a.output, a.source, a.pairs, show_progress=not a.no_progress)


def _p_init(p):
    p.add_argument("folder", help="the working folder to write (created; existing files are kept)")


@tool("init", "write a working folder: the stage notebooks, every scenario (papermill_params/) and runs/", _p_init)
def _init(a):
    from .workspace import init_workdir
    return init_workdir(a.folder)



# -- the parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="recface",
        description="recface: convert, align, build, train, evaluate and export face-recognition models.",
        epilog="Each verb has its own --help. With --json the last line printed is a JSON summary.")
    parser.add_argument("--version", action="version", version=f"recface {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    from .stages import stage

    for verb, (name, fixed, help_) in _stage_verbs().items():
        p = sub.add_parser(verb, help=help_, description=help_)
        add_config_options(p, stage(name).config_class, fixed)
        _add_common(p)
    for name, (_, parser_fn, help_) in TOOLS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        parser_fn(p)
        _add_common(p)
    return parser


def _fail(verb: str, msg: str, as_json: bool) -> int:
    msg = " ".join(str(msg).split()).removeprefix(f"recface {verb}: ") or "failed"  # one line
    print(f"recface {verb}: error: {msg}", file=sys.stderr)
    if as_json:
        print(json.dumps(strict_json({"ok": False, "error": msg}), allow_nan=False))
    return 1


def strict_json(o):
    """``o`` with NaN/Inf as null and numpy/Path values as plain ones: what ``--json`` prints is
    strict JSON (``jq`` and JavaScript read it)."""
    import math

    from .io_utils import _json_default

    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): strict_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [strict_json(v) for v in o]
    if o is None or isinstance(o, (str, int, bool)):
        return o
    try:
        return strict_json(_json_default(o))
    except TypeError:
        return str(o)


def error_message(e: BaseException) -> str | None:
    """The one-line message for a failure recface expects (bad input, a full disk, a file that
    exists, TensorFlow or onnxruntime refusing data); None for anything else (a bug)."""
    if isinstance(e, RecfaceError):
        return str(e)
    if isinstance(e, ModuleNotFoundError) and e.name:
        from .stack import missing
        return missing(e.name)
    if isinstance(e, OSError):
        what = e.strerror or type(e).__name__
        where = e.filename or ""
        if getattr(e, "filename2", None):
            where = f"{where} -> {e.filename2}"
        return f"{where}: {what}" if where else f"{what} ({e})"
    if isinstance(e, MemoryError):
        return "out of memory (MemoryError): the input is larger than this machine can hold; use smaller batches or files"
    mod = type(e).__module__ or ""
    if mod.startswith(("tensorflow", "onnxruntime", "yaml", "h5py", "keras")):
        first = (str(getattr(e, "message", "")) or str(e)).strip().splitlines()
        return f"{type(e).__name__}: {first[0][:400] if first else ''}"
    if isinstance(e, (ValueError, KeyError, UnicodeError, EOFError)):
        return f"{type(e).__name__}: {e}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except ArgsError as e:
        print(f"error: {e}", file=sys.stderr)
        if "--json" in argv:
            print(json.dumps({"ok": False, "error": str(e)}))
        return 2
    if not args.verb:
        parser.print_help()
        return 2
    try:
        verbs = _stage_verbs()
        if args.verb in verbs:
            from .stages import run_stage

            name, fixed, _ = verbs[args.verb]
            if name in TF_STAGES:
                from .progress import import_tensorflow_quietly
                import_tensorflow_quietly()
            res = run_stage(name, config_from_args(name, args, fixed), show_progress=not args.no_progress)
            summary = res.summary
            if not args.json:
                _human(res)
        else:
            summary = TOOLS[args.verb][0](args)
            if not args.json:
                for k, v in summary.items():
                    print(f"{k}: {v}")
    except KeyboardInterrupt:
        return _fail(args.verb, "interrupted (Ctrl-C); a rerun resumes where it stopped", args.json)
    except Exception as e:  # noqa: BLE001 - the --json contract: every failure ends in one JSON line
        msg = error_message(e)
        if msg is None:
            if not args.json:
                raise  # a bug: the traceback is what we need to see
            import traceback
            traceback.print_exc()
            msg = f"internal error ({type(e).__name__}: {e}); please report it with the traceback above"
        return _fail(args.verb, msg, args.json)
    if args.json:
        print(json.dumps(strict_json({"ok": True, **summary}), allow_nan=False))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
