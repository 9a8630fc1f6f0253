"""``recface <verb> ...``: the stages for scripts. Every verb accepts ``--json`` and then prints a
one-line JSON summary as its last line (counts, output paths) so scripts can read it."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from .errors import RecfaceError

VERBS: dict[str, tuple[Callable[[argparse.Namespace], dict], str]] = {}


def verb(name: str, help: str):
    def deco(fn):
        VERBS[name] = (fn, help)
        return fn
    return deco


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a one-line JSON summary as the last line")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


# -- convert -------------------------------------------------------------------------------------
def _p_rec2jpg(p):
    p.add_argument("--rec", required=True, help="InsightFace train.rec (train.idx beside it is used)")
    p.add_argument("--idx", help="the .idx file, if not beside the .rec")
    p.add_argument("--out", required=True, help="output folder: OUT/<label>/<n>.jpg")
    p.add_argument("--limit-classes", type=int, default=0, help="only the first N identities (0 = all)")


@verb("rec2jpg", "InsightFace .rec/.idx -> identity folders of JPEGs (raw bytes, resumable)")
def _rec2jpg(a):
    from .convert import rec2jpg
    return rec2jpg(a.rec, a.out, a.idx, a.limit_classes, show_progress=not a.no_progress)


def _p_bin_info(p):
    p.add_argument("bin", help="verification .bin file")


@verb("bin-info", "pairs, positives, negatives and image sizes of a verification .bin")
def _bin_info(a):
    from .convert import bin_info
    return bin_info(a.bin)


def _p_bin2jpg(p):
    p.add_argument("bin", help="verification .bin file")
    p.add_argument("--out", required=True, help="output folder (same/, diff/, pairs.csv)")


@verb("bin2jpg", "dump a verification .bin to image folders and pairs.csv")
def _bin2jpg(a):
    from .convert import bin2jpg
    return bin2jpg(a.bin, a.out, show_progress=not a.no_progress)


def _p_pairs2bin(p):
    p.add_argument("--images", required=True, help="image root: IMAGES/<Name>/<Name>_<NNNN>.jpg")
    p.add_argument("--pairs", required=True, help="pairs.txt (LFW View 2 layout)")
    p.add_argument("--out", required=True, help="output .bin")
    p.add_argument("--size", type=int, default=None, help="square output size (re-encodes images of another size)")
    p.add_argument("--folds", type=int, nargs="*", default=None, help="keep only these folds (1-based)")


@verb("pairs2bin", "build an insightface-style .bin from an image folder + pairs.txt")
def _pairs2bin(a):
    from .convert import pairs2bin
    folds = [f - 1 for f in a.folds] if a.folds else None
    return pairs2bin(a.images, a.pairs, a.out, a.size, folds, show_progress=not a.no_progress)


def _p_carray2bin(p):
    p.add_argument("--root", required=True, help="folder holding NAME/ and NAME_list.npy")
    p.add_argument("--name", required=True, help="set name, e.g. lfw, agedb_30")
    p.add_argument("--out", required=True, help="output .bin")


@verb("carray2bin", "convert a bcolz carray verification set to a .bin (PNG, lossless)")
def _carray2bin(a):
    from .data.verification_bin import read_carray, write_bin
    from .io_utils import encode_image
    imgs, issame = read_carray(a.root, a.name)
    write_bin(a.out, [encode_image(x, ".png") for x in imgs], issame.tolist())
    return {"out": a.out, "pairs": int(len(issame)), "images": int(len(imgs)), "positives": int(issame.sum())}


def _p_scan(p):
    p.add_argument("root", help="identity folder root/<identity>/<images>")
    p.add_argument("--min-images", type=int, default=0)


@verb("scan", "count identities and images of an identity folder")
def _scan(a):
    from .data.image_folder import scan_folder
    f = scan_folder(a.root).select(min_images=a.min_images)
    counts = sorted(f.counts.values())
    return {"root": a.root, "classes": len(f.classes), "images": f.num_images,
            "min_per_class": counts[0] if counts else 0, "max_per_class": counts[-1] if counts else 0}


# -- align --------------------------------------------------------------------------------------------
def _p_align(p):
    p.add_argument("--params", help="YAML of AlignConfig fields; command-line options override it")
    p.add_argument("--input", help="identity folder or .bin")
    p.add_argument("--output", help="new folder or new .bin (never the input)")
    p.add_argument("--detector", help="mtcnn | dlib_hog | dlib_mmod | dlib_hog+dlib_mmod | mtcnn+dlib_mmod")
    p.add_argument("--method", help="landmarks | box | margin")
    p.add_argument("--size", type=int)
    p.add_argument("--square", action="store_true", default=None, help="box method: square the box first")
    p.add_argument("--margin", type=int, help="margin method: pixels around the box")
    p.add_argument("--on-failure", dest="on_failure", help="error | keep | drop")
    p.add_argument("--select", help="center | largest | score")
    p.add_argument("--min-prob", dest="min_prob", type=float, help="MTCNN least face probability (0.4)")
    p.add_argument("--landmarks", help="dlib landmark model: 5 | 68")
    p.add_argument("--workers", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)


_ALIGN_KEYS = ("input", "output", "detector", "method", "size", "square", "margin", "on_failure", "select",
               "min_prob", "landmarks", "workers", "batch_size")


@verb("align", "detect faces, 5 landmarks, align to the 112x112 ArcFace template (folders or .bin)")
def _align(a):
    from .align.config import AlignConfig
    from .align.pipeline import align
    over = {k: getattr(a, k) for k in _ALIGN_KEYS if getattr(a, k) is not None}
    cfg = AlignConfig.from_yaml(a.params, **over) if a.params else AlignConfig.from_dict(over, source="recface align")
    r = align(cfg, show_progress=not a.no_progress)
    return {k: v for k, v in r.items() if k != "failures"} | {"failures": len(r["failures"]),
                                                               "failed_items": [f["item"] for f in r["failures"][:20]]}


# -- verify -------------------------------------------------------------------------------------------
def _p_verify(p):
    p.add_argument("--pairs", required=True, help="a .bin, or pairs.txt (or the folder holding it)")
    p.add_argument("--images", help="image folder of pairs.txt (default: lfw-deepfunneled/ beside it)")
    p.add_argument("--embedder", default="dlib_resnet", help="dlib_resnet")
    p.add_argument("--flip", action="store_true", help="add the mirrored image's embedding (flip TTA)")
    p.add_argument("--metric", default="cosine", choices=["cosine", "euclidean"])
    p.add_argument("--folds", type=int, nargs="*", help="only these folds (1-based)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--plots", help="folder for roc_<set>.png and hist_<set>.png")


@verb("verify", "10-fold verification accuracy, TAR@FAR and ROC of an embedder on a pair set")
def _verify(a):
    from .evaluate.verify import verify
    folds = [f - 1 for f in a.folds] if a.folds else None
    res, info = verify(a.pairs, a.embedder, a.images, a.flip, a.metric, folds, a.workers, a.plots,
                       show_progress=not a.no_progress)
    if not a.json:
        print(res)
    return {**info, **res.summary()}


# -- build --------------------------------------------------------------------------------------------
def _p_build(p):
    p.add_argument("--params", help="YAML of BuildConfig fields; command-line options override it")
    p.add_argument("--input", help="identity folder")
    p.add_argument("--output", help="output folder (shards, metadata.json, test/, test .bin)")
    p.add_argument("--shards", type=int)
    p.add_argument("--shard-size-mb", dest="shard_size_mb", type=int)
    p.add_argument("--binary-img", dest="binary_img", action="store_true", default=None,
                   help="store encoded bytes (default)")
    p.add_argument("--path-img", dest="binary_img", action="store_false", help="store image paths instead")
    p.add_argument("--test-split", dest="test_split", type=float)
    p.add_argument("--test-samples", dest="test_samples", type=int)
    p.add_argument("--test-max-pairs", dest="test_max_pairs", type=int)
    p.add_argument("--min-images", dest="min_images", type=int)
    p.add_argument("--num-classes", dest="num_classes", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int)


_BUILD_KEYS = ("input", "output", "shards", "shard_size_mb", "binary_img", "test_split", "test_samples",
               "test_max_pairs", "min_images", "num_classes", "seed", "workers")


@verb("build", "identity folder -> shuffled sharded TFRecords + metadata.json (+ test folder and pair .bin)")
def _build(a):
    from .build import BuildConfig, build
    over = {k: getattr(a, k) for k in _BUILD_KEYS if getattr(a, k) is not None}
    cfg = BuildConfig.from_yaml(a.params, **over) if a.params else BuildConfig.from_dict(over, source="recface build")
    return build(cfg, show_progress=not a.no_progress)


# -- train --------------------------------------------------------------------------------------------
def _overrides(pairs: list[str] | None) -> dict:
    """``--set key=value`` pairs, values parsed as YAML (numbers, booleans, lists)."""
    import yaml

    from .errors import ConfigError

    out = {}
    for kv in pairs or []:
        if "=" not in kv:
            raise ConfigError(f"--set {kv!r}: expected KEY=VALUE")
        k, v = kv.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _p_train(p):
    p.add_argument("--params", help="YAML of TrainConfig fields (dataset, output, backbone, head, plan, ...)")
    p.add_argument("--dataset", help="build output folder (overrides the YAML)")
    p.add_argument("--output", help="run folder (overrides the YAML)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any parameter (YAML value), repeatable")


@verb("train", "train a backbone + margin head on TFRecords with the staged plan (resumes by default)")
def _train(a):
    from .train.config import TrainConfig
    from .train.trainer import train
    over = {k: getattr(a, k) for k in ("dataset", "output") if getattr(a, k)}
    over.update(_overrides(a.set))
    cfg = TrainConfig.from_yaml(a.params, **over) if a.params else TrainConfig.from_dict(over, source="recface train")
    return train(cfg, show_progress=not a.no_progress)


def _p_models(p):
    p.add_argument("--input-size", type=int, default=112)
    p.add_argument("--embd-shape", type=int, default=512)
    p.add_argument("names", nargs="*", help="backbones (default: all)")


@verb("models", "backbones and heads with their parameter counts")
def _models(a):
    from .models.build import HEAD_NAMES, describe_backbones
    return {"backbones": describe_backbones(a.input_size, a.embd_shape, a.names or None), "heads": list(HEAD_NAMES)}


# -- classify -----------------------------------------------------------------------------------------
def _p_classify(p):
    p.add_argument("--known", required=True, help="folder with train/<person>/ and test/<person>/")
    p.add_argument("--others", help="folder with train/ and test/ of unknown people (default: KNOWN/others)")
    p.add_argument("--embedder", default="dlib_resnet", help="dlib_resnet, a training run folder or a bundle .zip")
    p.add_argument("--classifier", default="svc_lin", help="svc_lin, svc_rbf, knn, logreg or centroid")
    p.add_argument("--target-far", type=float, default=0.01, help="share of train Others allowed past the threshold")
    p.add_argument("--no-compare", action="store_true", help="only the chosen classifier (no comparison table)")
    p.add_argument("--out", help="report folder (classifier, confusion.png, errors.png, comparison.md)")
    p.add_argument("--workers", type=int, default=1)


@verb("classify", "identify known people and reject unknown ones (threshold chosen on train data only)")
def _classify(a):
    from .evaluate.classify import classify
    return classify(a.known, a.others, a.embedder, a.classifier, a.out, a.target_far, not a.no_compare, a.workers,
                    show_progress=not a.no_progress)


# -- export / identify --------------------------------------------------------------------------------
def _p_export(p):
    p.add_argument("--checkpoint", "--run", dest="run", required=True, help="training run folder (model.json, final/)")
    p.add_argument("--out", required=True, help="bundle path, e.g. weights/NAME.zip")
    p.add_argument("--check-images", required=True, help="face photos the formats are checked on (aligned or not)")
    p.add_argument("--classifier", help="a `recface classify --out` folder's classifier/ (fitted with this model)")
    p.add_argument("--weights", default="final", help="final, or the name of a validation set's best weights")
    p.add_argument("--formats", nargs="*", default=None, help="keras saved_model onnx tflite (default: all)")


@verb("export", "production bundle (.keras, SavedModel, ONNX, TFLite, recface.json, classifier), each format checked")
def _export(a):
    from .export import FORMATS, export
    return export(a.run, a.out, a.check_images, a.classifier, a.weights, tuple(a.formats or FORMATS))


def _p_identify(p):
    p.add_argument("--bundle", required=True, help="export bundle .zip")
    p.add_argument("--backend", default="onnx", choices=("onnx", "keras"), help="onnx runs without TensorFlow")
    p.add_argument("images", nargs="+", help="photos")


@verb("identify", "name the faces in photos with an export bundle (its classifier and threshold)")
def _identify(a):
    from .inference import FaceRecognizer
    rec = FaceRecognizer.from_bundle(a.bundle, a.backend)
    res = {img: [f.to_json() for f in rec.identify(img)] for img in a.images}
    if not a.json:
        for img, faces in res.items():
            print(img + ": " + (", ".join(f"{f['name'] or 'unknown'} ({f['score']:.3f})" for f in faces) or "no face"))
    import sys
    return {"images": res, "tensorflow_imported": "tensorflow" in sys.modules}


def _p_evaluate(p):
    p.add_argument("--params", help="YAML of EvalConfig fields (models, pair_sets, flip, folds, output)")
    p.add_argument("--model", action="append", dest="models", help="embedder (repeatable): dlib_resnet, run folder, bundle")
    p.add_argument("--pairs", action="append", dest="pair_sets", help="pair set (repeatable)")
    p.add_argument("--output", help="report folder")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any parameter (YAML value)")


@verb("evaluate", "models x pair sets: comparison table (accuracy, TAR@FAR, AUC) and ROC plots")
def _evaluate(a):
    from .evaluate.report import EvalConfig, evaluate
    over = {k: getattr(a, k) for k in ("models", "pair_sets", "output") if getattr(a, k)}
    over.update(_overrides(a.set))
    cfg = EvalConfig.from_yaml(a.params, **over) if a.params else EvalConfig.from_dict(over, source="recface evaluate")
    res = evaluate(cfg, show_progress=not a.no_progress)
    if not a.json:
        print(open(res["table"]).read())
    return {k: v for k, v in res.items() if k != "rows"} | {"results": [
        {k: r[k] for k in ("model", "pair_set", "flip", "accuracy", "std", "tar_far_1e-3", "auc")} for r in res["rows"]]}


def _p_pipeline(p):
    p.add_argument("--scenario", default="demo", help="papermill_params/<scenario>/ (demo, tiny, colab, ms1mv2)")
    p.add_argument("--from", dest="start", help="first stage to run")
    p.add_argument("--to", dest="stop", help="last stage to run")
    p.add_argument("--runs", default="runs", help="executed notebooks and reports go to RUNS/<scenario>/")
    p.add_argument("--force", action="store_true", help="rerun stages even when unchanged")
    p.add_argument("--params-dir", help="folder of scenarios (default: the repository's papermill_params/)")


@verb("pipeline", "run the stage notebooks of a scenario in order with papermill (skips unchanged stages)")
def _pipeline(a):
    from .pipeline import run_pipeline
    return run_pipeline(a.scenario, a.start, a.stop, a.runs, a.force, a.params_dir)


_PARSERS = {"pipeline": _p_pipeline, "evaluate": _p_evaluate, "export": _p_export, "identify": _p_identify, "classify": _p_classify, "train": _p_train, "models": _p_models, "build": _p_build, "align": _p_align, "verify": _p_verify, "rec2jpg": _p_rec2jpg, "bin-info": _p_bin_info, "bin2jpg": _p_bin2jpg, "pairs2bin": _p_pairs2bin,
            "carray2bin": _p_carray2bin, "scan": _p_scan}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="recface",
        description="recface: convert, align, build, train, evaluate and export face-recognition models.",
        epilog="Each verb has its own --help. With --json the last line printed is a JSON summary.")
    parser.add_argument("--version", action="version", version=f"recface {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, (_, help_) in VERBS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        _PARSERS[name](p)
        _add_common(p)
    return parser


def _print_human(summary: dict) -> None:
    for k, v in summary.items():
        print(f"{k}: {v}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help()
        return 2
    fn, _ = VERBS[args.verb]
    try:
        summary = fn(args)
    except RecfaceError as e:
        print(f"recface {args.verb}: error: {e}", file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "error": str(e)}))
        return 1
    except FileNotFoundError as e:
        print(f"recface {args.verb}: error: {e.filename}: {e.strerror}", file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "error": f"{e.filename}: {e.strerror}"}))
        return 1
    if args.json:
        from .io_utils import _json_default
        print(json.dumps({"ok": True, **summary}, default=_json_default))
    else:
        _print_human(summary)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
