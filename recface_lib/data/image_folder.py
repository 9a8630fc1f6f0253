"""Identity folders ``root/<identity>/<image>``: scanning, counts, class selection, splits."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FormatError
from ..io_utils import IMAGE_EXTENSIONS


@dataclass
class ImageFolder:
    root: Path
    classes: list[str]
    files: dict[str, list[Path]] = field(repr=False)

    @property
    def counts(self) -> dict[str, int]:
        return {c: len(self.files[c]) for c in self.classes}

    @property
    def num_images(self) -> int:
        return sum(len(v) for v in self.files.values())

    def samples(self) -> list[tuple[Path, int]]:
        """(path, label) with labels in class order."""
        return [(p, lab) for lab, c in enumerate(self.classes) for p in self.files[c]]

    def select(self, min_images: int = 0, max_images: int = 0, num_classes: int = 0,
               random_classes: bool = False, seed: int = 0) -> "ImageFolder":
        """The recface guide's class selection: drop classes with fewer than ``min_images``, keep
        at most ``max_images`` per class (the first ones), at most ``num_classes`` classes (the first,
        or a seeded random choice)."""
        classes = [c for c in self.classes if len(self.files[c]) >= max(min_images, 1)]
        if num_classes and num_classes < len(classes):
            if random_classes:
                classes = sorted(random.Random(seed).sample(classes, num_classes))
            else:
                classes = classes[:num_classes]
        files = {c: (self.files[c][:max_images] if max_images else list(self.files[c])) for c in classes}
        return ImageFolder(self.root, classes, files)

    def split(self, test_fraction: float = 0.0, test_last: int = 0) -> tuple["ImageFolder", "ImageFolder"]:
        """Deterministic per-class split taking the test images from the end of each class:
        ``test_last`` images, or ``round(fraction * n)`` of them. A class keeps at least one train image
        unless the fraction is 1 (everything to test, the recface guide's ``test_split: 1``)."""
        if not 0.0 <= test_fraction <= 1.0:
            raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
        train, test = {}, {}
        for c in self.classes:
            fs = self.files[c]
            if test_last:
                k = min(test_last, len(fs) - 1) if len(fs) > 1 else 0
            elif test_fraction >= 1.0:
                k = len(fs)
            else:
                k = min(int(round(test_fraction * len(fs))), len(fs) - 1)
            train[c], test[c] = fs[: len(fs) - k], fs[len(fs) - k:]
        return (ImageFolder(self.root, [c for c in self.classes if train[c]], {c: v for c, v in train.items() if v}),
                ImageFolder(self.root, [c for c in self.classes if test[c]], {c: v for c, v in test.items() if v}))


def is_image_file(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def scan_folder(root: str | os.PathLike, allow_empty_classes: bool = False) -> ImageFolder:
    """Scan ``root/<identity>/*.<image ext>`` in sorted order (labels are stable across runs)."""
    root = Path(root)
    if not root.is_dir():
        raise FormatError(f"{root}: not a directory of identity folders")
    classes, files = [], {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        imgs = sorted(p for p in d.iterdir() if p.is_file() and is_image_file(p))
        if not imgs and not allow_empty_classes:
            continue
        classes.append(d.name)
        files[d.name] = imgs
    if not classes:
        loose = [p for p in root.iterdir() if p.is_file() and is_image_file(p)]
        hint = f" ({len(loose)} images lie directly in it: expected one sub-folder per identity)" if loose else ""
        raise FormatError(f"{root}: no identity folders with images found{hint}")
    return ImageFolder(root, classes, files)


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files below ``root`` (any depth), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FormatError(f"{root}: not a directory")
    return sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))
