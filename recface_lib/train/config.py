"""TrainConfig: the training stage's parameters (the recface guide's ``train_plan`` + ``cfg``)."""
from __future__ import annotations

import typing
from dataclasses import dataclass

from ..config import StageConfig, choice, param
from ..data.input_pipeline import NORMALIZATIONS, Augmentation
from ..data.samplers import BATCH_SAMPLERS
from ..errors import ConfigError
from ..models.build import BACKBONES, HEAD_ALIASES, HEAD_NAMES
from .distill import DISTILL_LOSSES
from .optim import DEFAULT_EPSILON, OPTIMIZERS
from .plan import parse_plan
from .triplet_losses import TRIPLET_LOSSES

GUIDE_PLAN = [[8, 0.01, False, 1], [6, 0.005, False, 1], [8, 0.0025, True, 1],
              [10, 1e-3, True, 4], [10, 1e-4, True, 4], [10, 1e-5, True, 4]]
STRATEGIES = ("auto", "default", "mirrored", "tpu", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16", "auto")


@dataclass
class TrainConfig(StageConfig):
    # how the widget panel groups the fields (tests/test_notebooks.py: every field in exactly one)
    GROUPS: typing.ClassVar[dict] = {
        "data": ("dataset", "dataset_weights", "output", "val_sets", "val_flip", "val_batch_size", "validation_split",
                 "validation_every", "augmentation", "shuffle_buffer"),
        "model": ("backbone", "input_size", "embd_shape", "dropout", "normalization", "pretrained", "sync_batchnorm"),
        "head": ("head", "margin", "scale", "head_params", "sample_rate"),
        "distillation": ("teacher", "distill_loss", "distill_center", "distill_weight", "head_weight"),
        "auxiliary losses": ("center_loss_factor", "center_loss_alfa", "prelogits_norm_loss_factor", "prelogits_norm_p"),
        "triplet": ("triplet_weight", "triplet_loss", "triplet_margin", "triplet_squared", "triplet_soft", "collapse_spread",
                    "collapse_steps", "sampler", "sampler_params"),
        "plan": ("plan", "steps_per_epoch"),
        "optimisation": ("batch_size", "accumulate", "optimizer", "momentum", "nesterov", "epsilon", "weight_decay", "ema"),
        "devices": ("precision", "jit_compile", "strategy", "cpu_replicas", "deterministic", "seed"),
        "checkpoints": ("checkpoint_every", "keep_checkpoints", "copy_to", "resume", "tensorboard"),
    }

    dataset: str | list = param("", "build output folder (metadata.json + shards), or a list of them trained as one "
                                    "dataset (labels offset per part, the same preprocessing required)", role="input")
    dataset_weights: list = param([], "several datasets: each one's sampling weight, in the order of dataset (e.g. "
                                      "[1, 2]); []: the union read as one, each part in proportion to its size")
    output: str = param("", "run folder: checkpoints, history, curves, best and final weights", role="output")
    backbone: str = choice("MobileFaceNetV2", tuple(BACKBONES), "backbone network")
    input_size: int = param(112, "input side in pixels", lo=32, hi=1024)
    embd_shape: int = param(512, "embedding size", lo=2, hi=65536)
    dropout: float = param(0.0, "dropout before the embedding layer", lo=0.0, hi=0.99)
    normalization: str = choice("-1:1", NORMALIZATIONS, "input scaling")
    sync_batchnorm: bool = param(False, "batch-norm statistics over the global batch, across all replicas and workers "
                                        "(false: each replica's own, as insightface and arcface_torch train)")
    head: str = choice("ArcFace", HEAD_NAMES + tuple(HEAD_ALIASES), "margin head (Softmax: facenet's plain "
                                                                        "classifier, no margin)")
    margin: float | None = param(None, "margin (None: the head's default: ArcFace 0.5, CosFace 0.35, SphereFace 1.35, AdaFace 0.4)", lo=0.0, hi=4.0)
    scale: float = param(64.0, "logit scale s (AdaCos: its maximum; the guide's logist_scale)", lo=1.0, hi=1024.0)
    head_params: dict = param({}, "head-specific parameters, checked by the head: ArcFace {easy_margin}, "
                                  "Combined {margin1, margin3}, AdaFace {h, t_alpha}")
    sample_rate: float = param(1.0, "Partial FC: fraction of the class centres scored per step (the batch's own plus "
                                    "random others; 0.1 for millions of identities); 1.0: every centre", lo=1e-6, hi=1.0)
    teacher: str = param("", "distillation: a `recface teach` output folder (a teacher's embeddings of this "
                             "dataset); '' trains with the margin head alone", role="input")
    distill_loss: str = choice("cosine", DISTILL_LOSSES, "distillation: embedding matching on L2-normalised "
                               "vectors, cosine (1 - cos) or mse (a learned projection when the sizes differ)")
    distill_center: bool = param(True, "distillation: match the teacher's embeddings minus their mean over the data "
                                       "(re-normalised); dlib's lie in a narrow cone, different people at cosine ~0.84, "
                                       "so uncentred targets reward predicting the mean")
    distill_weight: float = param(1.0, "distillation: weight of the embedding matching (a plan stage may override it)",
                                  lo=0.0, hi=1e3)
    head_weight: float = param(0.0, "with a teacher or a triplet loss: weight of the margin head's loss on the labels "
                                    "(0: no head; a plan stage may override it); otherwise the head is the loss",
                               lo=0.0, hi=1e3)
    center_loss_factor: float = param(0.0, "facenet's center loss on the prelogits: its weight (0: none; facenet's "
                                           "recipes 0.01-0.02; a plan stage may override it)", lo=0.0, hi=1e3)
    center_loss_alfa: float = param(0.95, "center loss: each sample moves its class centre by (1 - alfa)(x - c); a class "
                                         "seen more than 2 / (1 - alfa) times in a batch stops the run", lo=0.0, hi=0.999999)
    prelogits_norm_loss_factor: float = param(0.0, "facenet's prelogits norm loss: its weight (0: none; facenet "
                                                   "5e-4; a plan stage may override it)", lo=0.0, hi=1e3)
    prelogits_norm_p: float = param(1.0, "prelogits norm loss: the p of the p-norm", lo=0.5, hi=16.0)
    triplet_weight: float = param(0.0, "triplet loss on the batch's embeddings: its weight (0: none; then the margin "
                                       "head weighs head_weight, 0 by default; a plan stage may override it)",
                                  lo=0.0, hi=1e3)
    triplet_loss: str = choice("batch_hard", tuple(TRIPLET_LOSSES), "which triplets: batch_hard (hardest positive and "
                               "negative per anchor), batch_all (every active triplet), semi_hard (FaceNet's), facenet "
                               "(facenet's select_triplets), margin_filter[_semi_hard] (glint360k's random triplets "
                               "inside the margin)")
    triplet_margin: float = param(0.2, "triplet loss margin (facenet's alpha 0.2)", lo=0.0, hi=4.0)
    triplet_squared: bool = param(False, "triplet loss on squared distances (facenet) or distances (Hermans)")
    triplet_soft: bool = param(False, "soft margin ln(1 + e^x) instead of the hinge (Hermans et al.)")
    collapse_spread: float = param(0.01, "triplet: the batch's embedding spread (mean distance of the normalised "
                                         "embeddings to their mean) below which a step counts as collapsed", lo=0.0, hi=2.0)
    collapse_steps: int = param(200, "triplet: stop the run after this many collapsed steps in a row (0: never)",
                                lo=0, hi=10 ** 9)
    sampler: str = choice("shuffle", ("shuffle", *BATCH_SAMPLERS), "how records make batches: shuffle (the shuffled "
                          "stream) or pk (batch_size / k identities x k images each, for triplet losses)")
    sampler_params: dict = param({}, "the sampler's parameters, checked by it: pk {k: 4, short: replace | skip} "
                                     "(short: a class with fewer than k images drawn with replacement, or left out)")
    plan: list | str = param(GUIDE_PLAN, "stages: (epochs, lr, val_save, val_per_epoch[, weight_decay]) or mappings; "
                                         "or a facenet schedule file ('epoch: lr' lines, -1 stops)")
    batch_size: int = param(256, "global batch size", lo=1, hi=1 << 20)
    accumulate: int = param(1, "gradient accumulation: average N micro-batches of batch_size into one update (effective "
                                "batch N x batch_size; plan steps still count micro-batches)", lo=1, hi=4096)
    ema: float = param(0.0, "exponential moving average of the weights, momentum per update (e.g. 0.999; 0: none); "
                            "validation, best/ and final/ then use the average", lo=0.0, hi=0.999999)
    steps_per_epoch: int = param(0, "0: num_samples // batch_size from metadata", lo=0)
    optimizer: str = choice("sgd", OPTIMIZERS, "sgd (momentum), adamw, or facenet's adam / rmsprop / adagrad "
                            "(TF1's updates, slim's L2 scaling: train.optim)")
    momentum: float = param(0.9, "SGD and RMSProp momentum", lo=0.0, hi=0.999)
    epsilon: float = param(DEFAULT_EPSILON, "adam / adamw / rmsprop / adagrad epsilon (facenet's recipes: adam 0.1, "
                                            "rmsprop 1.0; 0 gives TF1's adagrad exactly)", lo=0.0, hi=10.0)
    nesterov: bool = param(False, "SGD Nesterov momentum")
    weight_decay: float = param(5e-4, "the guide's w_decay: L2 on kernels for sgd (wd * sum w^2); decoupled for "
                                      "adamw; slim's L2 for adam, rmsprop, adagrad (wd/2 * sum w^2, facenet's)",
                                lo=0.0, hi=1.0)
    augmentation: dict = param({}, "training augmentation, checked by data.input_pipeline.Augmentation: "
                                   "train_crop, flip (default true), color_jitter, random_erasing, low_res")
    shuffle_buffer: int = param(8192, "records in the shuffle buffer", lo=1)
    val_sets: list = param([], "pair sets validated during training: .bin files or folders with pairs.txt", role="input", runtime=True)
    validation_split: float = param(0.0, "facenet's held-out validation: this fraction of each class's images is "
                                         "not trained on but scored by the classifier (cross-entropy, accuracy); one "
                                         "image per class always trains (facenet 0.05; 0: none)", lo=0.0, hi=0.9)
    validation_every: int = param(1, "held-out validation at every Nth segment end, and at the last (facenet: every "
                                     "5 epochs)", lo=1, hi=100000, runtime=True)
    val_flip: bool = param(True, "flip test-time augmentation in validation", runtime=True)
    val_batch_size: int = param(64, "batch size for validation embedding", lo=1, hi=65536, runtime=True)
    checkpoint_every: int = param(1000, "also checkpoint every N steps (0: only at segment ends)", lo=0, runtime=True)
    keep_checkpoints: int = param(2, "checkpoints kept (older ones deleted)", lo=1, hi=1000, runtime=True)
    copy_to: str = param("", "also copy each checkpoint here (a Google Drive mount on Colab); resume looks here too", runtime=True)
    resume: bool = param(True, "continue from the newest checkpoint in output/ or copy_to/ (refused when it was made with other data or parameters); false: start fresh, old checkpoints removed", runtime=True)
    pretrained: str = param("", "transfer learning: backbone weights (.weights.h5) or a previous run folder", role="input")
    precision: str = choice("float32", PRECISIONS, "mixed precision policy (auto: mixed_float16 on GPUs of compute "
                            "capability 7 or newer, mixed_bfloat16 on a TPU, else float32)")
    jit_compile: bool = param(False, "XLA-compile the train step", runtime=True)
    strategy: str = param("auto", "tf.distribute strategy", choices=STRATEGIES, runtime=True)
    cpu_replicas: int = param(0, "testing: split the CPU into N logical devices and mirror over them", lo=0, hi=64, runtime=True)
    deterministic: bool = param(False, "seeded data order and op determinism (reproducible runs)", runtime=True)
    seed: int = param(0, "seed for weights, data order and augmentation", lo=0)
    tensorboard: bool = param(True, "write TensorBoard scalars to output/tensorboard", runtime=True)

    def validate(self, where=""):
        from ..models.build import check_head_params

        parse_plan(self.plan, f"{where}plan")
        check_head_params(self.head, self.head_params, f"{where}head_params")
        Augmentation.from_dict(self.augmentation, source=f"{where}augmentation")
        if self.sample_rate < 1.0 and self.teacher:
            raise ConfigError(f"{where}sample_rate: Partial FC is for the margin head alone; with a teacher use 1.0")
        if self.cpu_replicas > 1 and self.jit_compile:
            raise ConfigError(f"{where}jit_compile with cpu_replicas: XLA cannot compile a step over logical CPU "
                              "devices (variables on another device); test them separately")
        if self.deterministic and self.jit_compile:
            raise ConfigError(f"{where}jit_compile with deterministic: Keras compiles no XLA step under op "
                              "determinism (it would quietly run without XLA); choose one")
        if self.strategy == "multi_worker" and self.cpu_replicas > 1:
            raise ConfigError(f"{where}cpu_replicas: a testing device split for one process; not with strategy multi_worker")
        if self.dataset_weights:
            if len(self.dataset_weights) != len(self.dataset_paths()):
                raise ConfigError(f"{where}dataset_weights: {len(self.dataset_weights)} weights for "
                                  f"{len(self.dataset_paths())} datasets (one each, in the order of dataset)")
            if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in self.dataset_weights):
                raise ConfigError(f"{where}dataset_weights: {self.dataset_weights!r}: positive numbers expected")
        if self.sampler != "shuffle":
            BATCH_SAMPLERS[self.sampler].check_params(self.sampler_params, f"{where}sampler_params")
            if self.strategy == "multi_worker":
                raise ConfigError(f"{where}sampler: {self.sampler} batches are not split across workers yet "
                                  "(each worker would keep every other record); use one machine's replicas")
        elif self.sampler_params:
            raise ConfigError(f"{where}sampler_params: the shuffle sampler takes none")
        if self.validation_split > 0 and self.sample_rate < 1.0:
            raise ConfigError(f"{where}validation_split: the held-out cross-entropy scores every class centre; "
                              "with Partial FC (sample_rate < 1) use pair sets (val_sets) instead")
        for k in ("dataset", "output"):
            if not getattr(self, k):
                raise ConfigError(f"{where}{k}: required")

    def dataset_paths(self) -> list[str]:
        """The build output(s) trained on, as a list (one, or the parts of a union)."""
        return [str(d) for d in self.dataset] if isinstance(self.dataset, list) else [str(self.dataset)]

    def content_params(self) -> dict:
        from .plan import resolve_plan

        return {"plan": resolve_plan(self.plan)} if isinstance(self.plan, str) else {}

    def augment(self) -> Augmentation:
        return Augmentation.from_dict(self.augmentation, source="augmentation")
