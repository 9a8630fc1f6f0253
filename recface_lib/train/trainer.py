"""``train(cfg)``: the staged plan with Keras ``fit``, checkpoints, resume, validation, strategy.

One ``fit`` per stage (segments of equal length are its Keras epochs); a resumed run first
finishes the interrupted segment. The data pipeline restarts at the exact sample where the
checkpoint was taken (``make_dataset(start=...)``), so in deterministic mode a killed and resumed
run ends with the same weights as an uninterrupted one."""
from __future__ import annotations

import math
import time
from pathlib import Path

from ..errors import ConfigError, FormatError, RecfaceError
from ..io_utils import atomic_write_json
from ..manifest import write_manifest
from ..progress import progress
from .config import TrainConfig
from .plan import PlanSchedule, parse_plan, plan_lr_schedule


class TrainingError(RecfaceError):
    """Training could not go on (e.g. the loss became NaN); the last good checkpoint is kept."""


def model_contract(cfg: TrainConfig, meta: dict) -> dict | None:
    """The data's preprocessing contract (from metadata.json) plus what the model adds: its input
    size and normalisation. None when the data has none (such a model cannot be exported)."""
    data = meta.get("preprocessing")
    if data is None:
        return None
    return {**data, "input_size": cfg.input_size, "normalization": cfg.normalization}


def model_spec(cfg: TrainConfig, meta: dict) -> dict:
    """What export and evaluation need to rebuild the embedding model (``model.json``)."""
    from ..models.build import head_name

    return {"backbone": cfg.backbone, "input_size": cfg.input_size, "embd_shape": cfg.embd_shape,
            "dropout": cfg.dropout, "normalization": cfg.normalization, "color_order": "RGB",
            "head": head_name(cfg.head), "head_params": cfg.head_params, "num_classes": int(meta["num_classes"]),
            "class_names": meta.get("class_names"), "dataset": str(cfg.dataset),
            "preprocessing": model_contract(cfg, meta)}


class TrainRun:
    def __init__(self, cfg: TrainConfig, show_progress: bool = True):
        from ..data.tfrecord import load_metadata

        self.cfg, self.show_progress = cfg, show_progress
        self.out = Path(cfg.output)
        self.meta = load_metadata(cfg.dataset)
        self.stages = parse_plan(cfg.plan)
        spe = cfg.steps_per_epoch or max(1, int(self.meta["num_samples"]) // cfg.batch_size)
        self.plan = PlanSchedule(self.stages, spe)
        self.history: list[dict] = []
        self.best: dict[str, dict] = {}
        self.validators = []
        self.global_step = 0
        self.t0 = time.time()
        self.resumed_from = None
        self.extra_callbacks: list = []  # user callbacks, appended to the trainer's own

    # -- set-up -------------------------------------------------------------------------------
    def build(self):
        import keras
        import tensorflow as tf

        from ..models.build import build_backbone, build_head, build_train_model, head_name
        from .optim import make_optimizer
        from .strategy import make_strategy

        cfg = self.cfg
        self.strategy = make_strategy(cfg.strategy, cfg.cpu_replicas)
        keras.config.set_dtype_policy(cfg.precision)
        keras.utils.set_random_seed(cfg.seed)
        if cfg.deterministic:
            tf.config.experimental.enable_op_determinism()
        name = head_name(cfg.head)
        with self.strategy.scope():
            self.backbone = build_backbone(cfg.backbone, cfg.input_size, cfg.embd_shape, cfg.dropout)
            self.head = build_head(name, int(self.meta["num_classes"]), cfg.scale, cfg.margin, **cfg.head_params)
            self.model = build_train_model(self.backbone, self.head)
            self.optimizer = make_optimizer(cfg.optimizer, plan_lr_schedule(self.plan), cfg.weight_decay,
                                            cfg.momentum, cfg.nesterov)
            self.model.compile(optimizer=self.optimizer,
                               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                               metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                               jit_compile=cfg.jit_compile)
            self.model.optimizer.build(self.model.trainable_variables)
        if cfg.pretrained:
            self.load_pretrained(cfg.pretrained)
        if cfg.resume:
            self.try_resume()
        for v in cfg.val_sets:
            from .callbacks import PairSetValidator
            self.validators.append(PairSetValidator(v, cfg.input_size, cfg.val_flip))
        return self

    def load_pretrained(self, src: str):
        p = Path(src)
        if p.is_dir():
            p = p / "final" / "backbone.weights.h5"
        if not p.is_file():
            raise ConfigError(f"pretrained: {src}: no backbone weights (a .weights.h5 file or a run folder with final/)")
        try:
            self.backbone.load_weights(str(p))
        except Exception as e:
            raise FormatError(f"{p}: cannot load into backbone {self.cfg.backbone} "
                              f"(input {self.cfg.input_size}, embedding {self.cfg.embd_shape}): {e}") from e

    def fingerprint(self) -> dict:
        """What a checkpoint must share with this run to be resumed."""
        from ..models.build import head_name

        c = self.cfg
        return {"backbone": c.backbone, "head": head_name(c.head), "input_size": c.input_size, "embd_shape": c.embd_shape,
                "num_classes": int(self.meta["num_classes"]), "num_samples": int(self.meta["num_samples"]),
                "shards": [[s["name"], s["bytes"]] for s in self.meta["shards"]]}

    def ckpt_roots(self):
        return [self.out / "checkpoints", self.cfg.copy_to or None]

    def try_resume(self):
        from .checkpoint import find_latest, load_checkpoint

        ck = find_latest(*self.ckpt_roots())
        if ck is None:
            return
        from .checkpoint import read_state
        old = read_state(ck).get("fingerprint")
        if old is not None and old != self.fingerprint():
            diff = [k for k in old if old.get(k) != self.fingerprint().get(k)]
            raise ConfigError(f"{ck}: this checkpoint belongs to a different run (differs in {', '.join(diff)}); "
                              f"give a new output folder, or resume: false to start over in this one")
        with self.strategy.scope():
            state = load_checkpoint(ck, self.model, self.model.optimizer)
        self.global_step = int(state["global_step"])
        self.history, self.best = state.get("history", []), state.get("best", {})
        self.resumed_from = str(ck)

    # -- during training ----------------------------------------------------------------------
    def state(self, step, si, seg) -> dict:
        return {"global_step": step, "stage": si, "segment": seg, "history": self.history, "best": self.best,
                "seed": self.cfg.seed, "plan": self.cfg.plan, "time": time.time(), "fingerprint": self.fingerprint()}

    def checkpoint(self, step, si, seg):
        from .checkpoint import save_checkpoint

        save_checkpoint(self.out / "checkpoints", self.model, self.model.optimizer, self.state(step, si, seg),
                        self.cfg.keep_checkpoints, (Path(self.cfg.copy_to) if self.cfg.copy_to else None))

    def embedder(self):
        """The live backbone behind the one embedder interface (validation images are pre-aligned)."""
        from ..embedders.model import KerasBackend, ModelEmbedder

        return ModelEmbedder(model_spec(self.cfg, self.meta), KerasBackend(model=self.backbone), name="validation",
                             batch_size=self.cfg.val_batch_size, align_unaligned=False)

    def end_segment(self, step, si, seg, logs):
        from .callbacks import save_backbone, write_history_csv

        st = self.stages[si]
        row = {"stage": si + 1, "epoch": round(self.plan.epoch_of(si, seg), 4), "global_step": step,
               "lr": self.plan.lr_at(max(step - 1, 0)), "loss": float(logs.get("loss", math.nan)),
               "accuracy": float(logs.get("accuracy", math.nan)), "time_s": round(time.time() - self.t0, 1)}
        for v in self.validators:
            res = v(self.embedder())
            row[f"val_{v.name}"] = res.accuracy
            row[f"val_{v.name}_std"] = res.accuracy_std
            if st.val_save and res.accuracy > self.best.get(v.name, {}).get("accuracy", -1):
                save_backbone(self.backbone, self.out / "best" / f"{v.name}.weights.h5")
                self.best[v.name] = {"accuracy": res.accuracy, "threshold": res.threshold, "global_step": step}
        self.history.append(row)
        self.checkpoint(step, si, seg)
        write_history_csv(self.history, self.out / "history.csv")
        if self.cfg.tensorboard:
            self.tensorboard(row)

    def tensorboard(self, row):
        import tensorflow as tf

        if not hasattr(self, "_tb"):
            self._tb = tf.summary.create_file_writer(str(self.out / "tensorboard"))
        with self._tb.as_default():
            for k, v in row.items():
                if k not in ("stage", "global_step") and isinstance(v, (int, float)) and math.isfinite(v):
                    tf.summary.scalar(k, v, step=row["global_step"])
        self._tb.flush()

    def dataset(self, start_step: int):
        from ..data.input_pipeline import make_dataset

        c = self.cfg
        ds = make_dataset(c.dataset, c.batch_size, training=True, image_size=c.input_size,
                          normalization=c.normalization, augment=c.augment(),
                          shuffle_buffer=c.shuffle_buffer, deterministic=c.deterministic, seed=c.seed,
                          start=start_step * c.batch_size)
        return ds.map(lambda x, y: ((x, y), y))

    def fit(self):
        from .callbacks import PlanCallback
        from .optim import set_weight_decay

        bar = progress(total=self.plan.total_steps, initial=min(self.global_step, self.plan.total_steps),
                       desc=f"train {self.cfg.backbone}+{self.cfg.head}", unit="step", disable=not self.show_progress)
        try:
            while self.global_step < self.plan.total_steps:
                si, seg, done = self.plan.position(self.global_step)
                st = self.stages[si]
                set_weight_decay(self.model.optimizer, self.cfg.weight_decay if st.weight_decay is None else st.weight_decay)
                if self.backbone.trainable == st.freeze_backbone:
                    self.backbone.trainable = not st.freeze_backbone
                self.model.train_function = None  # retrace: weight-decay set or trainable flags may differ
                L = self.plan.seg_len[si]
                if done:  # finish the interrupted segment first
                    steps, epochs = L - done, 1
                else:
                    steps, epochs = L, self.plan.n_segments[si] - seg
                cb = PlanCallback(self, si, seg, bar)
                self.model.fit(self.dataset(self.global_step), epochs=epochs, steps_per_epoch=steps, verbose=0, shuffle=False,
                               callbacks=[cb, *self.extra_callbacks])
                if cb.nan_step is not None:
                    from .checkpoint import find_latest
                    last = find_latest(*self.ckpt_roots())
                    raise TrainingError(f"{self.out}: the loss became NaN/Inf at step {cb.nan_step} (stage {si + 1}, "
                                        f"lr {self.plan.lr_at(cb.nan_step):g}); training stopped, the last good "
                                        f"checkpoint is kept: {last or 'none yet'}. Lower the learning rate or check the data.")
        finally:
            bar.close()
        return self

    # -- results ------------------------------------------------------------------------------
    def finish(self) -> dict:
        from ..plots import plot_training_curves
        from .callbacks import save_backbone, write_history_csv

        final = save_backbone(self.backbone, self.out / "final" / "backbone.weights.h5")
        spec = model_spec(self.cfg, self.meta)
        atomic_write_json(self.out / "model.json", spec)
        if self.history:
            write_history_csv(self.history, self.out / "history.csv")
            plot_training_curves(self.history, self.out / "curves.png", title=f"{self.cfg.backbone} + {self.cfg.head}")
        last = self.history[-1] if self.history else {}
        summary = {"output": str(self.out), "final_weights": str(final), "global_step": self.global_step,
                   "total_steps": self.plan.total_steps, "plan": self.plan.summary(), "resumed_from": self.resumed_from,
                   "loss": last.get("loss"), "accuracy": last.get("accuracy"),
                   "validation": {k[4:]: v for k, v in last.items() if k.startswith("val_") and not k.endswith("_std")},
                   "best": self.best, "history": str(self.out / "history.csv"),
                   "curves": str(self.out / "curves.png") if self.history else None,
                   "num_classes": spec["num_classes"], "replicas": self.strategy.num_replicas_in_sync,
                   "precision": self.cfg.precision, "jit_compile": self.cfg.jit_compile}
        write_manifest(self.out, "train", self.cfg.to_dict(), {"dataset": Path(self.cfg.dataset) / "metadata.json"},
                       {"global_step": self.global_step}, spec["preprocessing"], summary=summary)
        return summary


def train(cfg: TrainConfig | dict, show_progress: bool = True) -> dict:
    import keras

    if isinstance(cfg, dict):
        cfg = TrainConfig.from_dict(cfg)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "train_config.json", cfg.to_dict())
    policy = keras.config.dtype_policy()
    try:
        return TrainRun(cfg, show_progress).build().fit().finish()
    finally:
        keras.config.set_dtype_policy(policy)


__all__ = ["TrainConfig", "TrainRun", "TrainingError", "train"]
