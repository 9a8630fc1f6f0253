"""LFW ``pairs.txt`` (View 2) and the folder layout ``<root>/<Name>/<Name>_<NNNN>.jpg``."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import FormatError


@dataclass(frozen=True)
class Pair:
    path1: Path
    path2: Path
    same: bool
    fold: int  # 1-based (LFW's "fold 10" is 10): the one fold numbering of recface
    line: int


def fold_set(folds, where: str = "folds") -> set[int] | None:
    """Fold numbers as given by a user (1-based, as LFW numbers them), checked; None: all folds."""
    from ..errors import ConfigError

    if folds is None or (isinstance(folds, (list, tuple, set)) and not folds):
        return None
    bad = [f for f in folds if not isinstance(f, int) or f < 1]
    if bad:
        raise ConfigError(f"{where}: folds are numbered from 1 (LFW: 1..10), got {bad}")
    return set(folds)


def lfw_image_path(root: Path, name: str, index: int, ext: str = ".jpg") -> Path:
    return root / name / f"{name}_{index:04d}{ext}"


def read_pairs(pairs_file: str | os.PathLike, images_root: str | os.PathLike, check_exists: bool = True,
               ext: str = ".jpg") -> list[Pair]:
    """Parse a pairs file. The header is ``folds<TAB>n`` (View 2: ``10 300``: each fold has n same
    then n different pairs) or a single count (View 1). Errors name the file and line."""
    pf = Path(pairs_file)
    root = Path(images_root)
    try:
        lines = pf.read_text().splitlines()
    except OSError as e:
        raise FormatError(f"{pf}: cannot read ({e.strerror})") from e
    if not lines:
        raise FormatError(f"{pf}: empty pairs file")
    head = lines[0].split()
    if not head or not all(h.isdigit() for h in head) or len(head) > 2:
        raise FormatError(f"{pf}: line 1: expected a header 'folds<TAB>pairs_per_half' or a count, got {lines[0][:60]!r}")
    folds, per = (int(head[0]), int(head[1])) if len(head) == 2 else (1, int(head[0]))
    pairs: list[Pair] = []
    body = [(i + 2, ln) for i, ln in enumerate(lines[1:]) if ln.strip()]
    for k, (lineno, ln) in enumerate(body):
        parts = ln.split()
        fold = (k // (2 * per) if per else 0) + 1  # folds are numbered 1..10, as everywhere in recface
        try:
            if len(parts) == 3:
                name, i, j = parts[0], int(parts[1]), int(parts[2])
                p = Pair(lfw_image_path(root, name, i, ext), lfw_image_path(root, name, j, ext), True, fold, lineno)
            elif len(parts) == 4:
                n1, i, n2, j = parts[0], int(parts[1]), parts[2], int(parts[3])
                p = Pair(lfw_image_path(root, n1, i, ext), lfw_image_path(root, n2, j, ext), False, fold, lineno)
            else:
                raise FormatError(f"{pf}: line {lineno}: expected 3 fields (same person) or 4 (different), got {len(parts)}: {ln[:80]!r}")
        except ValueError as e:
            if isinstance(e, FormatError):
                raise
            raise FormatError(f"{pf}: line {lineno}: image numbers must be integers: {ln[:80]!r}") from e
        if check_exists:
            for q in (p.path1, p.path2):
                if not q.is_file():
                    raise FormatError(f"{pf}: line {lineno}: referenced image {q} does not exist")
        pairs.append(p)
    expected = folds * 2 * per
    if per and len(pairs) != expected:
        raise FormatError(f"{pf}: header announces {folds} folds x {2 * per} pairs = {expected}, found {len(pairs)}")
    return pairs


def write_pairs(path: str | os.PathLike, pairs_by_fold: list[tuple[list[tuple[str, int, int]], list[tuple[str, int, str, int]]]]) -> Path:
    """Write a View-2 style pairs file: per fold, same pairs then different pairs (equal counts)."""
    from ..io_utils import atomic_write_bytes

    per = len(pairs_by_fold[0][0]) if pairs_by_fold else 0
    out = [f"{len(pairs_by_fold)}\t{per}"]
    for same, diff in pairs_by_fold:
        if len(same) != per or len(diff) != per:
            raise ValueError("every fold needs the same number of same and different pairs")
        out += [f"{n}\t{i}\t{j}" for n, i, j in same]
        out += [f"{a}\t{i}\t{b}\t{j}" for a, i, b, j in diff]
    return atomic_write_bytes(path, ("\n".join(out) + "\n").encode())
