"""``recface data lfw``: LFW (deep-funneled) and the View-2 ``pairs.txt`` into a data folder, checked,
and the ``lfw_friends16/`` identification split derived from it: what the scenarios read as
``$RECFACE_DATA/lfw`` and ``$RECFACE_DATA/lfw_friends16``.

Sources, in order: ``--from PATH`` (a folder holding ``lfw-deepfunneled/`` and ``pairs.txt``, the
``lfw-deepfunneled`` folder itself with ``pairs.txt`` beside it, or the ``lfw-deepfunneled.tgz``
archive with ``pairs.txt`` beside it or from ``--pairs``), else the official site (University of
Massachusetts, Amherst). Checks: the archive's MD5 (the published one, as torchvision pins it), the
pairs file's MD5, and 13,233 images of 5,749 people. Nothing is half-written: the images are
unpacked or copied into a hidden folder beside the target and renamed into place; a complete
target is left as it is. LFW is published for research use (see its site)."""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from ..errors import ConfigError, FormatError
from ..io_utils import atomic_path, file_digest

LFW_SITE = "http://vis-www.cs.umass.edu/lfw/"
ARCHIVE = ("lfw-deepfunneled.tgz", "68331da3eb755a505a502b5aacb3c201")
PAIRS = ("pairs.txt", "9f1ba174e4e1c508ff7cdf10ac338a7d")
IMAGES, PEOPLE = 13_233, 5_749
FRIENDS = {"people": 16, "min_images": 30, "train": 20, "test": 10, "others_train": 100, "others_test": 50, "seed": 0}


def md5_file(path: Path) -> str:
    return file_digest(path, "md5")


def _download(url: str, dest: Path, show_progress: bool) -> Path:
    import urllib.request

    from ..progress import progress

    try:
        with urllib.request.urlopen(url, timeout=60) as r, atomic_path(dest) as tmp, open(tmp, "wb") as f:
            bar = progress(total=int(r.headers.get("Content-Length") or 0) or None, desc=f"download {dest.name}",
                           unit="B", unit_scale=True, disable=not show_progress)
            for block in iter(lambda: r.read(1 << 20), b""):
                f.write(block)
                bar.update(len(block))
            bar.close()
    except OSError as e:
        raise FormatError(f"{url}: cannot download ({getattr(e, 'reason', None) or e}); fetch it by hand and give "
                          "`recface data lfw --from PATH`") from e
    return dest


def _check_md5(path: Path, want: str, what: str) -> None:
    got = md5_file(path)
    if got != want:
        raise FormatError(f"{path}: MD5 {got} is not the published {want} of {what}")


def count_images(folder: Path) -> tuple[int, int]:
    people = [p for p in folder.iterdir() if p.is_dir()]
    return sum(1 for p in people for f in p.iterdir() if f.suffix.lower() == ".jpg"), len(people)


def _check_images(folder: Path) -> None:
    n, people = count_images(folder)
    if (n, people) != (IMAGES, PEOPLE):
        raise FormatError(f"{folder}: {n:,} images of {people:,} people; LFW deep-funneled has {IMAGES:,} of {PEOPLE:,}")


def _complete(lfw: Path) -> bool:
    try:
        return md5_file(lfw / PAIRS[0]) == PAIRS[1] and count_images(lfw / "lfw-deepfunneled") == (IMAGES, PEOPLE)
    except OSError:
        return False


def _safe_extract(archive: Path, into: Path) -> Path:
    """Unpack ``archive`` (members outside ``into``, links and devices refused) and return its
    ``lfw-deepfunneled`` folder."""
    try:
        with tarfile.open(archive, "r:*") as t:
            t.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise FormatError(f"{archive}: cannot unpack ({e})") from e
    found = [p for p in into.rglob("lfw-deepfunneled") if p.is_dir()]
    if not found:
        raise FormatError(f"{archive}: holds no lfw-deepfunneled/ folder")
    return found[0]


def _locate(source: Path, pairs: str) -> tuple[Path | None, Path | None, Path | None]:
    """(images folder, archive, pairs file) of a ``--from`` path."""
    if not source.exists():
        raise ConfigError(f"{source}: no such file or folder (--from)")
    if source.is_file():
        if not source.name.endswith((".tgz", ".tar.gz", ".tar")):
            raise ConfigError(f"{source}: not a folder or a .tgz archive of LFW deep-funneled (--from)")
        return None, source, Path(pairs) if pairs else (source.parent / PAIRS[0])
    images = source / "lfw-deepfunneled" if (source / "lfw-deepfunneled").is_dir() else source
    p = Path(pairs) if pairs else next((q for q in (source / PAIRS[0], source.parent / PAIRS[0]) if q.is_file()),
                                       source / PAIRS[0])
    return images, None, p


def fetch_lfw(output: str | os.PathLike = "", source: str | os.PathLike = "", pairs: str | os.PathLike = "",
              show_progress: bool = True) -> dict:
    """LFW into ``<output>/lfw/`` (default: the scenarios' data folder) and friends16 beside it."""
    from .datasets import shared_data_dir

    data = Path(output) if output else shared_data_dir()
    lfw = data / "lfw"
    how = "already there"
    if not _complete(lfw):
        lfw.mkdir(parents=True, exist_ok=True)
        images = archive = pair_file = None
        if source:
            images, archive, pair_file = _locate(Path(source), str(pairs))
        with tempfile.TemporaryDirectory(prefix=".lfw-", dir=lfw) as tmp:
            tmp = Path(tmp)
            if not source:
                archive = _download(LFW_SITE + ARCHIVE[0], tmp / ARCHIVE[0], show_progress)
                pair_file = _download(LFW_SITE + PAIRS[0], tmp / PAIRS[0], show_progress)
            if pair_file is None or not pair_file.is_file():
                raise ConfigError(f"{pair_file}: pairs.txt not found beside the source; give --pairs FILE")
            _check_md5(pair_file, PAIRS[1], "LFW's View-2 pairs.txt")
            if archive is not None:
                _check_md5(archive, ARCHIVE[1], ARCHIVE[0])
                images = _safe_extract(archive, tmp / "unpacked")
                staged = images
            else:
                _check_images(images)
                staged = tmp / "copy"
                shutil.copytree(images, staged)
            _check_images(staged)
            target = lfw / "lfw-deepfunneled"
            if target.exists():  # incomplete from an older attempt: moved aside, then removed
                old = tmp / "old"
                os.replace(target, old)
            os.replace(staged, target)
            with atomic_path(lfw / PAIRS[0]) as t:
                shutil.copyfile(pair_file, t)
        how = f"from {source}" if source else f"downloaded from {LFW_SITE}"
    friends = derive_friends16(lfw / "lfw-deepfunneled", data / "lfw_friends16")
    n, people = count_images(lfw / "lfw-deepfunneled")
    return {"output": str(data), "lfw": str(lfw), "images": n, "people": people, "source": how,
            "pairs_md5": PAIRS[1], "friends16": friends}


def derive_friends16(images: Path, out: Path) -> dict:
    """The 16-person "friends" split: the 16 people with the fewest images among those with at
    least 30 (ties by name), images 1-20 to ``train/<person>/`` and 21-30 to ``test/<person>/``;
    "others" are people with exactly one image, 100 for ``others/train`` and 50 for ``others/test``
    (drawn with seed 0), none in both. Written once (a hidden folder renamed into place); a
    ``manifest.csv`` maps every file to its LFW source."""
    import numpy as np

    if (out / "manifest.csv").is_file():
        return {"folder": str(out), "status": "already there"}
    people = {p.name: sorted(f.name for f in p.iterdir() if f.suffix.lower() == ".jpg") for p in images.iterdir() if p.is_dir()}
    big = sorted((len(v), k) for k, v in people.items() if len(v) >= FRIENDS["min_images"])[:FRIENDS["people"]]
    singles = sorted(k for k, v in people.items() if len(v) == 1)
    rng = np.random.default_rng(FRIENDS["seed"])
    chosen = [singles[i] for i in rng.choice(len(singles), FRIENDS["others_train"] + FRIENDS["others_test"], replace=False)]
    rows = []
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".friends16-", dir=out.parent) as tmp:
        stage = Path(tmp) / "f"
        for _, name in sorted(big, key=lambda t: t[1]):
            files = people[name]
            for split, part in (("train", files[:FRIENDS["train"]]),
                                ("test", files[FRIENDS["train"]:FRIENDS["train"] + FRIENDS["test"]])):
                (stage / split / name).mkdir(parents=True, exist_ok=True)
                for f in part:
                    shutil.copyfile(images / name / f, stage / split / name / f)
                    rows.append((split, name, f"{split}/{name}/{f}", f"lfw-deepfunneled/{name}/{f}"))
        for k, name in enumerate(chosen):
            split = "train" if k < FRIENDS["others_train"] else "test"
            (stage / "others" / split).mkdir(parents=True, exist_ok=True)
            f = people[name][0]
            shutil.copyfile(images / name / f, stage / "others" / split / f)
            rows.append((f"others_{split}", name, f"others/{split}/{f}", f"lfw-deepfunneled/{name}/{f}"))
        (stage / "manifest.csv").write_text("split,identity,path,lfw_source\n" + "".join(",".join(r) + "\n" for r in rows))
        if out.exists():  # an incomplete earlier attempt (no manifest): replaced
            os.replace(out, Path(tmp) / "old")
        os.replace(stage, out)
    return {"folder": str(out), "status": "derived", "people": len(big), "others": len(chosen), "files": len(rows)}


__all__ = ["fetch_lfw", "derive_friends16", "count_images"]
