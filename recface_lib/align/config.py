"""Parameters of the align stage."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import StageConfig, choice, param


@dataclass
class AlignConfig(StageConfig):
    input: str = param("", "identity folder (root/<identity>/<image>) or a verification .bin", role="input")
    output: str = param("", "new folder (for a folder input) or new .bin; never the input", role="output")
    detector: str = choice("mtcnn", ("mtcnn", "dlib_hog", "dlib_mmod", "yunet", "dlib_hog+dlib_mmod", "mtcnn+dlib_mmod",
                                     "yunet+mtcnn"),
                           "face detector ('+' chains a fallback detector)")
    method: str = choice("landmarks", ("landmarks", "box", "margin"),
                         "landmarks: 5-point similarity to the ArcFace template; box: detector box crop; "
                         "margin: box plus a pixel margin (facenet)")
    size: int = param(112, "output side in pixels", lo=16, hi=1024)
    square: bool = param(False, "box method: make the box square first (the recface guide's face_detector_square)")
    margin: int = param(32, "margin method: pixels added around the box (facenet: 32 at 160, 44 at 182)", lo=0, hi=1024)
    on_failure: str = choice("error", ("error", "keep", "drop"),
                             "no face: error stops naming the file; keep writes the whole image resized; "
                             "drop leaves it out and lists it")
    select: str = choice("center", ("center", "largest", "score"), "which face when several are found")
    min_prob: float = param(0.4, "MTCNN: least final probability (the recface guide's face_detector_prob); "
                                 "yunet: its score threshold (low: the select rule chooses)", lo=0.0, hi=1.0)
    max_side: int = param(0, "yunet: images whose longer side exceeds this are shrunk for detection "
                             "(0: each image at its own size)", lo=0, hi=16384)
    min_face_size: int = param(20, "MTCNN: smallest face in pixels", lo=4, hi=4096)
    upsample: int = param(1, "dlib detectors: image upsampling count", lo=0, hi=4)
    landmarks: str = choice("5", ("5", "68"), "dlib landmark model ('68' is iBUG-licensed: non-commercial)")
    manual_boxes: dict = param({}, "image path (relative to input) or .bin index -> [x1, y1, x2, y2] replacing detection")
    image_format: str = choice("jpg", ("jpg", "png"), "encoding of the aligned images")
    jpeg_quality: int = param(95, "JPEG quality", lo=1, hi=100)
    min_images: int = param(0, "folder input: only identities with at least this many images", lo=0)
    max_images: int = param(0, "folder input: at most the first N images of each identity (0: all)", lo=0)
    exclude_pairs: str = param("", "folder input: leave out people of this pairs.txt (keep evaluation people unseen)", role="input")
    exclude_folds: list = param([], "folds (1-based, as LFW numbers them) of exclude_pairs whose people are left out ([]: all folds)")
    exclude_people_of: str = param("", "folder input: leave out people who have a sub-folder here (e.g. friends16/train)", role="input")
    workers: int = param(1, "worker processes", lo=1, hi=256, runtime=True)
    batch_size: int = param(16, "images per detector call (MTCNN batches same-size images)", lo=1, hi=4096, runtime=True)
    grid_samples: int = param(32, "aligned faces shown in the report grid", lo=0, hi=1024, runtime=True)
    force: bool = param(False, "start fresh: an output made from other inputs or parameters is removed "
                               "(moved aside if recface did not make it) instead of refused", runtime=True)

    def validate(self, where: str = "") -> None:
        from ..data.lfw_pairs import fold_set

        fold_set(self.exclude_folds, f"{where}exclude_folds")

    def detector_params(self) -> dict:
        return {"min_prob": self.min_prob, "min_face_size": self.min_face_size, "upsample": self.upsample,
                "landmarks": self.landmarks, "max_side": self.max_side}

    def contract(self) -> dict:
        """The preprocessing contract of faces aligned with these parameters (see ``manifest``)."""
        from ..manifest import template_at

        if self.method != "landmarks":
            lm = "none"
        else:
            dlib_lm = "dlib68" if self.landmarks == "68" else "dlib5"
            lm = {"mtcnn": "mtcnn", "mtcnn+dlib_mmod": f"mtcnn, else {dlib_lm}", "yunet": "yunet",
                  "yunet+mtcnn": "yunet, else mtcnn"}.get(self.detector, dlib_lm)
        return {"detector": self.detector, "landmark_model": lm, "method": self.method, "size": self.size,
                "template": template_at(self.size) if self.method == "landmarks" else None,
                "square": self.square, "margin": self.margin if self.method == "margin" else 0,
                "select": self.select, "min_prob": self.min_prob, "min_face_size": self.min_face_size,
                "upsample": self.upsample, "color_order": "RGB", "source": "recface align",
                # optional key, only when set: a contract without it equals one from before it existed
                **({"max_side": self.max_side} if self.max_side else {})}

    @classmethod
    def from_contract(cls, contract: dict, **overrides) -> "AlignConfig":
        """The parameters that reproduce a contract's alignment (inference, evaluation)."""
        c = contract
        lm = str(c.get("landmark_model", ""))
        return cls.from_dict({"detector": c["detector"], "method": c["method"], "size": int(c["size"]),
                              "square": bool(c.get("square", False)), "margin": int(c.get("margin") or 0),
                              "select": c.get("select", "center"), "min_prob": float(c.get("min_prob", 0.4)),
                              "min_face_size": int(c.get("min_face_size", 20)), "upsample": int(c.get("upsample", 1)),
                              "max_side": int(c.get("max_side") or 0),
                              "landmarks": "68" if "dlib68" in lm else "5", **overrides},
                             source="preprocessing contract")
