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
from ..manifest import check_not_input, write_manifest
from ..progress import progress
from .config import TrainConfig
from .plan import PlanSchedule, parse_plan, plan_lr_schedule, resolve_plan


class TrainingError(RecfaceError):
    """Training could not go on (e.g. the loss became NaN); the last good checkpoint is kept."""


class NonFinite(Exception):
    """Raised inside ``fit`` when weights are not finite; turned into a TrainingError by the run."""

    def __init__(self, step: int, what: str):
        super().__init__(what)
        self.step, self.what = step, what


def nonfinite(variables) -> int:
    """How many values of ``variables`` are NaN or Inf (integer variables: none)."""
    import numpy as np

    n = 0
    for v in variables:
        t = getattr(v, "value", v)  # a Keras variable's tensor (its .numpy() warns under numpy 2)
        a = t.numpy() if hasattr(t, "numpy") else np.asarray(t)
        if a.dtype.kind == "f":
            n += int(a.size - np.count_nonzero(np.isfinite(a)))
    return n


def model_contract(cfg: TrainConfig, meta: dict) -> dict | None:
    """The data's preprocessing contract (from metadata.json) plus what the model adds: its input
    size and normalisation (and a per-channel mode's constants). None when the data has none (such
    a model cannot be exported)."""
    data = meta.get("preprocessing")
    if data is None:
        return None
    from ..data.input_pipeline import NORMALIZATION_VALUES

    values = NORMALIZATION_VALUES.get(cfg.normalization)
    return {**data, "input_size": cfg.input_size, "normalization": cfg.normalization,
            **({"normalization_values": values} if values else {})}


def model_spec(cfg: TrainConfig, meta: dict) -> dict:
    """What export and evaluation need to rebuild the embedding model (``model.json``)."""
    from ..models.build import head_name

    teacher = meta.get("_teacher")
    return {"backbone": cfg.backbone, "input_size": cfg.input_size, "embd_shape": cfg.embd_shape,
            "distilled_from": None if not teacher else {k: teacher.get(k) for k in ("teacher", "teacher_id", "dim", "images", "views")}
            | {"loss": cfg.distill_loss, "centred": cfg.distill_center, "embeddings": str(cfg.teacher)},
            "dropout": cfg.dropout, "normalization": cfg.normalization, "color_order": "RGB",
            "head": head_name(cfg.head), "head_params": cfg.head_params, "num_classes": int(meta["num_classes"]),
            "class_names": meta.get("class_names"),
            "dataset": cfg.dataset_paths() if isinstance(cfg.dataset, list) else cfg.dataset_paths()[0],
            "datasets": meta.get("_parts"),
            "preprocessing": model_contract(cfg, meta)}


def center_targets(targets):
    """A teacher's targets (embeddings and mirrored ones, or views) minus their common mean,
    re-normalised (float16)."""
    import dataclasses

    import numpy as np

    from ..data.input_pipeline import ViewTargets
    from ..protocol.verification import l2_normalize

    if isinstance(targets, ViewTargets):
        v = targets.views.astype(np.float32)
        mu = v.reshape(-1, v.shape[-1]).mean(0)
        return dataclasses.replace(targets, views=l2_normalize(v - mu).astype(np.float16))
    e, ef = targets[0].astype(np.float32), targets[1].astype(np.float32)
    mu = (e.mean(0) + ef.mean(0)) / 2
    return l2_normalize(e - mu).astype(np.float16), l2_normalize(ef - mu).astype(np.float16)


class TrainRun:
    def __init__(self, cfg: TrainConfig, show_progress: bool = True):
        from ..data.tfrecord import load_metadata

        from .strategy import is_chief, is_multi_worker

        self.cfg = cfg
        self.multi_worker = is_multi_worker(cfg.strategy, cfg.cpu_replicas)
        self.chief = is_chief(cfg.strategy, cfg.cpu_replicas)  # in a multi-worker run only the chief writes files
        self.show_progress = show_progress and self.chief
        self.out = Path(cfg.output)
        self.meta = load_metadata(cfg.dataset)
        self.plan_stages = resolve_plan(cfg.plan)  # a schedule file read once: its stages are the plan
        self.stages = parse_plan(self.plan_stages)
        self.heldout = None  # facenet's held-out validation: True for each record kept out of training
        if cfg.validation_split > 0:
            from .heldout import split_heldout
            self.heldout = split_heldout(self.labels(), cfg.validation_split, cfg.seed)
        trained = int(self.meta["num_samples"]) - (int(self.heldout.sum()) if self.heldout is not None else 0)
        spe = cfg.steps_per_epoch or max(1, trained // cfg.batch_size)
        self.plan = PlanSchedule(self.stages, spe)
        self.history: list[dict] = []
        self.best: dict[str, dict] = {}
        self.validators = []
        self.global_step = 0
        self.t0 = time.time()
        self.resumed_from = None
        self.teacher = None  # (embeddings, mirrored embeddings) per record, or ViewTargets, when distilling
        if cfg.teacher:
            from ..teach import load_teacher
            targets, info = load_teacher(cfg.teacher, self.meta)
            if info.get("views") and cfg.augmentation:
                raise ConfigError(f"augmentation: {cfg.teacher} holds the teacher's views of every face "
                                  "(teach views); they are the augmentation (teacher.json): leave augmentation out")
            self.teacher = center_targets(targets) if cfg.distill_center else targets
            self.meta["_teacher"] = info
        from .distill import check_distillation
        check_distillation(cfg, self.meta, self.stages)
        self.extra_callbacks: list = []  # user callbacks, appended to the trainer's own

    # -- set-up -------------------------------------------------------------------------------
    def build(self):
        import keras
        import tensorflow as tf

        from ..models.build import build_backbone
        from .optim import make_optimizer
        from .strategy import make_strategy, resolve_precision

        cfg = self.cfg
        self.strategy = make_strategy(cfg.strategy, cfg.cpu_replicas)
        self.sampler = None  # a batch sampler (P x K) chooses each batch's records; checked before the model is built
        if cfg.sampler != "shuffle":
            from ..data.samplers import make_sampler
            self.sampler = make_sampler(cfg.sampler, self.labels(), cfg.batch_size, cfg.seed,
                                        self.strategy.num_replicas_in_sync,
                                        None if self.heldout is None else ~self.heldout, str(cfg.dataset),
                                        **cfg.sampler_params)
        self.precision = resolve_precision(cfg.precision)
        keras.config.set_dtype_policy(self.precision)
        keras.utils.set_random_seed(cfg.seed)
        # each run gets the determinism it asks for, not what an earlier run in this process (a
        # notebook kernel, a sweep, the test suite) left on: Keras turns XLA off under it
        from tensorflow.python.framework import config as tf_config
        (tf_config.enable_op_determinism if cfg.deterministic else tf_config.disable_op_determinism)()
        from .terms import active_terms, build_objective_model

        with self.strategy.scope():
            self.backbone = build_backbone(cfg.backbone, cfg.input_size, cfg.embd_shape, cfg.dropout, cfg.sync_batchnorm)
            self.terms = active_terms(self)
            for t in self.terms:
                t.build(self.backbone, self.strategy.num_replicas_in_sync)
            self.optimizer = make_optimizer(cfg.optimizer, plan_lr_schedule(self.plan, cfg.accumulate), cfg.weight_decay,
                                            cfg.momentum, cfg.nesterov, ema=cfg.ema, accumulate=cfg.accumulate,
                                            epsilon=cfg.epsilon)
            self.model = build_objective_model(self.backbone, self.terms,
                                               {"teacher": int(self.meta["_teacher"]["dim"])} if self.needs_teacher() else {})
            self.model.compile(optimizer=self.optimizer, jit_compile=cfg.jit_compile)
            self.model.optimizer.build(self.model.trainable_variables)
        if self.multi_worker:
            from .strategy import keras_multi_worker
            keras_multi_worker(self.model, self.strategy)
        if cfg.pretrained:
            self.load_pretrained(cfg.pretrained)
        if cfg.resume:
            self.try_resume()
        aligner = self.embedder(align_unaligned=True)
        prepare = aligner.prepare_many if aligner.contract else None  # photos aligned once, as evaluate does
        for v in cfg.val_sets if self.chief else ():  # the other workers need not validate: they write nothing
            from .callbacks import PairSetValidator
            self.validators.append(PairSetValidator(v, cfg.input_size, cfg.val_flip, prepare))
        return self

    def labels(self):
        """Every record's label in shard order, read once (the held-out split and the sampler use it)."""
        if not hasattr(self, "_labels"):
            from ..data.samplers import record_labels
            self._labels = record_labels(self.meta)
        return self._labels

    def needs_teacher(self) -> bool:
        """Whether a term reads the teacher's target of each record (the data then carries it)."""
        return any(t.needs_teacher for t in self.terms)

    def stage_weights(self) -> dict[str, list[float]]:
        """Each term's weight in every plan stage (a stage's own, else the run's)."""
        return {t.name: t.stage_weights(self.cfg, self.stages) for t in self.terms}

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
        """What a checkpoint must share with this run to be resumed: every parameter that changes
        the model or its input (``TrainConfig.output_params``: not the runtime ones, and the plan
        is compared separately so that a plan may be extended), and the data's content."""
        from ..data.tfrecord import dataset_key
        from ..models.build import head_name
        from ..teach import targets_key

        if not hasattr(self, "_fp"):
            p = self.cfg.output_params()
            p.pop("plan")
            p["head"] = head_name(p["head"])
            t = self.meta.get("_teacher")
            self._fp = {**p, "num_classes": int(self.meta["num_classes"]), "num_samples": int(self.meta["num_samples"]),
                        "data": dataset_key(self.meta),
                        **({"teacher": targets_key(t["teacher_id"], t["data_key"], t["images"], t.get("views"))}
                           if t else {})}
        return self._fp

    def ckpt_roots(self):
        return [self.out / "checkpoints", self.cfg.copy_to or None]

    def try_resume(self):
        from .checkpoint import find_latest, load_checkpoint

        ck = find_latest(*self.ckpt_roots())
        if ck is None:
            return
        from .checkpoint import read_state
        st = read_state(ck)
        old, new = st.get("fingerprint") or {}, self.fingerprint()
        dflt = TrainConfig().output_params()  # a field added since the checkpoint: its default is what it ran with
        diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                if old.get(k, dflt.get(k)) != new.get(k)]
        done = self.stages[:int(st.get("stage", 0)) + 1]
        if parse_plan(st.get("plan") or self.plan_stages)[:len(done)] != done:
            diff.append("plan: the stages already trained differ (only later stages may be changed or added)")
        if diff:
            raise ConfigError(f"{ck}: this checkpoint was made with other data or parameters ({'; '.join(diff)}); "
                              f"give a new output folder, or resume: false to start over in this one")
        with self.strategy.scope():
            state = load_checkpoint(ck, self.model, self.model.optimizer)
        bad = nonfinite(self.model.weights)
        if bad:
            raise TrainingError(f"{ck}: holds {bad} non-finite weights (written before recface checked); "
                                "delete it to resume from an older one, or resume: false")
        self.global_step = int(state["global_step"])
        self.history, self.best = state.get("history", []), state.get("best", {})
        self.resumed_from = str(ck)

    # -- during training ----------------------------------------------------------------------
    def state(self, step, si, seg) -> dict:
        return {"global_step": step, "stage": si, "segment": seg, "history": self.history, "best": self.best,
                "seed": self.cfg.seed, "plan": self.plan_stages, "time": time.time(), "fingerprint": self.fingerprint()}

    def checkpoint(self, step, si, seg):
        from .checkpoint import save_checkpoint

        bad = nonfinite(self.model.weights) + nonfinite(self.model.optimizer.variables)
        if bad:  # never write a poisoned checkpoint
            raise NonFinite(step, f"{bad} non-finite weights or optimizer variables")
        if not self.chief:
            return
        save_checkpoint(self.out / "checkpoints", self.model, self.model.optimizer, self.state(step, si, seg),
                        self.cfg.keep_checkpoints, (Path(self.cfg.copy_to) if self.cfg.copy_to else None))

    def embedder(self, align_unaligned: bool = False):
        """The live backbone behind the one embedder interface (validation images are aligned when
        the validator is made: ``align_unaligned`` is for that step)."""
        from ..embedders.model import KerasBackend, ModelEmbedder

        return ModelEmbedder(model_spec(self.cfg, self.meta), KerasBackend(model=self.backbone), name="validation",
                             batch_size=self.cfg.val_batch_size, align_unaligned=align_unaligned)

    def averaged(self):
        """Context: the backbone holds its moving-average weights (ema > 0), else nothing changes."""
        import contextlib

        from .optim import ema_values

        @contextlib.contextmanager
        def swap():
            if not self.cfg.ema:
                yield
                return
            vs = self.backbone.trainable_variables
            live = [v.numpy() for v in vs]
            for v, a in zip(vs, ema_values(self.model.optimizer, vs)):
                v.assign(a)
            try:
                yield
            finally:
                for v, x in zip(vs, live):
                    v.assign(x)
        return swap()

    def end_segment(self, step, si, seg, logs):
        from .callbacks import save_backbone, write_history_csv

        st = self.stages[si]
        bad = nonfinite(self.model.weights)
        if bad:  # before validation can save a poisoned "best"
            raise NonFinite(step, f"{bad} non-finite weights")
        row = {"stage": si + 1, "epoch": round(self.plan.epoch_of(si, seg), 4), "global_step": step,
               "lr": self.plan.lr_at(max(step - 1, 0)), "loss": float(logs.get("loss", math.nan)),
               "accuracy": float(logs.get("accuracy", math.nan)), "time_s": round(time.time() - self.t0, 1)}
        for m in [m for t in self.terms for m in t.metrics()] + list(self.model.loss_parts.values()):
            if m.name in logs and m.name not in row:  # each term's own (distillation's cosine to the teacher, ...)
                row[m.name] = float(logs[m.name])
        with self.averaged():
            if self.heldout is not None and ((len(self.history) + 1) % self.cfg.validation_every == 0
                                             or step >= self.plan.total_steps):
                row.update({f"heldout_{k}": v for k, v in self.validate_heldout().items()})
            for v in self.validators:
                res = v(self.embedder())
                row[f"val_{v.name}"] = res.accuracy
                row[f"val_{v.name}_std"] = res.accuracy_std
                row[f"threshold_{v.name}"] = res.threshold  # the folds' best thresholds' mean (cosine)
                if st.val_save and res.accuracy > self.best.get(v.name, {}).get("accuracy", -1):
                    save_backbone(self.backbone, self.out / "best" / f"{v.name}.weights.h5")
                    self.best[v.name] = {"accuracy": res.accuracy, "threshold": res.threshold, "global_step": step}
        self.history.append(row)
        self.checkpoint(step, si, seg)
        if not self.chief:
            return
        write_history_csv(self.history, self.out / "history.csv")
        if self.cfg.tensorboard:
            self.tensorboard(row)

    def validate_heldout(self) -> dict[str, float]:
        """The terms' held-out figures (the classifier's cross-entropy and accuracy), each the mean
        over every held-out record, without augmentation."""
        import numpy as np
        import tensorflow as tf

        from ..data.input_pipeline import make_dataset

        if not hasattr(self, "_heldout_step"):
            c = self.cfg
            self._heldout_ds = make_dataset(c.dataset, c.val_batch_size, training=False, image_size=c.input_size,
                                            normalization=c.normalization, keep=self.heldout)

            @tf.function
            def step(x, y):
                emb = tf.cast(self.backbone(x, training=False), tf.float32)
                return {k: v for t in self.terms for k, v in t.heldout(emb, y).items()}
            self._heldout_step = step
        sums, n = {}, 0
        for x, y in self._heldout_ds:
            for k, v in self._heldout_step(x, y).items():
                sums[k] = sums.get(k, 0.0) + float(np.sum(v.numpy()))
            n += int(y.shape[0])
        return {k: v / max(n, 1) for k, v in sums.items()}

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
        import tensorflow as tf

        from ..data.input_pipeline import make_dataset

        c = self.cfg
        targets = self.needs_teacher()  # a term reads each record's teacher target: the data carries it
        ds = make_dataset(c.dataset, c.batch_size, training=True, image_size=c.input_size,
                          normalization=c.normalization, augment=c.augment(),
                          shuffle_buffer=c.shuffle_buffer, deterministic=c.deterministic, seed=c.seed,
                          start=start_step * c.batch_size, teacher=self.teacher if targets else None,
                          keep=None if self.heldout is None else ~self.heldout, part_weights=c.dataset_weights or None,
                          sampler=self.sampler)
        if self.multi_worker:
            # every worker reads the whole stream and keeps its part of each global batch: the
            # batches are those of a one-process run (file sharding would change them)
            opts = tf.data.Options()
            opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
            ds = ds.with_options(opts)
        if targets:
            return ds.map(lambda x, y, t: ((x, y, t), y))
        return ds.map(lambda x, y: ((x, y), y))

    def fit(self):
        import tensorflow as tf

        from ..data.tfrecord import data_error
        from .callbacks import PlanCallback
        from .checkpoint import find_latest
        from .optim import set_weight_decay

        bar = progress(total=self.plan.total_steps, initial=min(self.global_step, self.plan.total_steps),
                       desc=self.describe(), unit="step", disable=not self.show_progress)
        try:
            while self.global_step < self.plan.total_steps:
                si, seg, done = self.plan.position(self.global_step)
                st = self.stages[si]
                set_weight_decay(self.model.optimizer, self.cfg.weight_decay if st.weight_decay is None else st.weight_decay)
                for name, ws in self.stage_weights().items():
                    self.model.term_weights[name].assign(ws[si])
                if self.backbone.trainable == st.freeze_backbone:
                    self.backbone.trainable = not st.freeze_backbone
                    # retrace: the trainable variables differ. Nothing else a stage changes is in
                    # the graph (weight decay, loss weights and the plan's rate are variables or
                    # in-graph), so the other stages reuse the traced step (tracing is most of a
                    # short segment's time on a CPU)
                    self.model.train_function = None
                L = self.plan.seg_len[si]
                if done:  # finish the interrupted segment first
                    steps, epochs = L - done, 1
                else:
                    steps, epochs = L, self.plan.n_segments[si] - seg
                cb = PlanCallback(self, si, seg, bar)
                try:
                    self.model.fit(self.dataset(self.global_step), epochs=epochs, steps_per_epoch=steps, verbose=0,
                                   shuffle=False, callbacks=[cb, *self.extra_callbacks])
                except NonFinite as e:
                    self.stop_nonfinite(e.step, e.what)
                except tf.errors.OpError as e:
                    from .strategy import peer_lost
                    msg = next((m for m in (t.explain(str(e)) for t in self.terms) if m), None)
                    if msg:  # a term's own guard (the center loss' divergence): one line, the rule and the cure
                        raise TrainingError(f"{self.out}: at step {self.global_step}: {msg}; newest checkpoint: "
                                            f"{find_latest(*self.ckpt_roots()) or 'none yet'}") from None
                    if self.multi_worker and peer_lost(e):
                        raise TrainingError(
                            f"{self.out}: another worker stopped at step {self.global_step} ({type(e).__name__}); "
                            f"restart every worker with the same command to resume from the newest checkpoint "
                            f"({find_latest(*self.ckpt_roots()) or 'none yet'})") from None
                    raise data_error(self.meta, e) from None
                if cb.nan_step is not None:
                    self.stop_nonfinite(cb.nan_step, "the loss became NaN/Inf")
        finally:
            bar.close()
        return self

    def describe(self) -> str:
        c = self.cfg
        start = f"train {c.backbone}" if self.teacher is None else f"distil {c.backbone} from {self.meta['_teacher']['teacher']}"
        return start + "".join(t.label() for t in self.terms)

    def stop_nonfinite(self, step: int, what: str):
        from .checkpoint import find_latest

        si = self.plan.stage_at(max(step - 1, 0))
        last = find_latest(*self.ckpt_roots())
        raise TrainingError(f"{self.out}: {what} at step {step} (stage {si + 1} of the plan, lr {self.plan.lr_at(max(step - 1, 0)):g}); "
                            f"training stopped. Newest finite checkpoint: {last or 'none yet'} (every checkpoint is "
                            "checked finite before it is written). Lower that stage's learning rate, then rerun to resume.")

    # -- results ------------------------------------------------------------------------------
    def thresholds(self) -> dict:
        """{weights: {pair set: threshold_entry}} for the weights export can take: ``final`` (its
        validation at the last step; none if the last step was not validated) and each set's best."""
        last = self.history[-1] if self.history else {}
        done = last.get("global_step") == self.global_step
        final = {k[10:]: threshold_entry(last[k], last[f"val_{k[10:]}"], self.global_step)
                 for k in last if k.startswith("threshold_")} if done else {}
        return {"final": final, **{name: {name: threshold_entry(b["threshold"], b["accuracy"], b["global_step"])}
                                   for name, b in self.best.items()}}

    def finish(self) -> dict:
        from ..plots import plot_training_curves
        from .callbacks import save_backbone, write_history_csv

        bad = nonfinite(self.backbone.weights)
        if bad:
            self.stop_nonfinite(self.global_step, f"{bad} non-finite backbone weights")
        spec = model_spec(self.cfg, self.meta) | {"verification_thresholds": self.thresholds()}
        if not any(t.name == "margin" for t in self.terms):  # no margin head was trained (a triplet loss alone)
            spec |= {"head": None, "head_params": {}}
        summary = {"output": str(self.out), "global_step": self.global_step, "total_steps": self.plan.total_steps,
                   "replicas": self.strategy.num_replicas_in_sync, "chief": self.chief}
        if not self.chief:  # the chief writes the run's results
            return summary
        if self.cfg.ema:  # final/ is the average (what export uses); the live weights beside it
            save_backbone(self.backbone, self.out / "final" / "live.weights.h5")
        with self.averaged():
            final = save_backbone(self.backbone, self.out / "final" / "backbone.weights.h5")
        atomic_write_json(self.out / "model.json", spec)
        if self.history:
            write_history_csv(self.history, self.out / "history.csv")
            plot_training_curves(self.history, self.out / "curves.png", title=f"{self.cfg.backbone} + {self.cfg.head}")
        last = self.history[-1] if self.history else {}
        plan = self.plan.summary() | ({"schedule_file": self.cfg.plan, "stages": self.plan_stages}
                                      if isinstance(self.cfg.plan, str) else {})
        summary |= {"final_weights": str(final), "plan": plan, "resumed_from": self.resumed_from,
                   "loss": last.get("loss"), "accuracy": last.get("accuracy"),
                   "validation": {k[4:]: last[k] for k in val_keys(last)},
                   "validation_last10": last_mean(self.history),
                   "heldout": None if self.heldout is None else {
                       "images": int(self.heldout.sum()), "trained_images": int((~self.heldout).sum()),
                       **{k[8:]: last[k] for k in last if k.startswith("heldout_")}},
                   "best": self.best, "history": str(self.out / "history.csv"),
                   "curves": str(self.out / "curves.png") if self.history else None,
                   "num_classes": spec["num_classes"], "precision": self.precision, "jit_compile": bool(self.model.jit_compile), "ema": self.cfg.ema,
                   "effective_batch": self.cfg.batch_size * self.cfg.accumulate}
        write_manifest(self.out, "train", self.cfg.to_dict(),
                       {"dataset": [Path(d) / "metadata.json" for d in self.cfg.dataset_paths()]},
                       {"global_step": self.global_step}, spec["preprocessing"], summary=summary)
        return summary


def threshold_entry(cosine: float, accuracy: float, step: int) -> dict:
    """One pair set's verification threshold for a model.json: the mean of its 10 folds' best
    thresholds (glint360k's ``best_distance_threshold``), as a cosine similarity (same above it)
    and as the euclidean distance of the normalised embeddings (same below it)."""
    return {"cosine": cosine, "l2": math.sqrt(max(2.0 - 2.0 * cosine, 0.0)), "accuracy": accuracy, "global_step": step}


def val_keys(row: dict) -> list[str]:
    """A history row's validation accuracies (``val_<set>``, not their ``_std``)."""
    return [k for k in row if k.startswith("val_") and not k.endswith("_std")]


def last_mean(history: list[dict], n: int = 10) -> dict:
    """Each pair set's mean accuracy over its last ``n`` validations (facenet's wiki compares
    settings by it: one evaluation is noisy)."""
    out = {}
    for k in val_keys(history[-1] if history else {}):
        vals = [r[k] for r in history if isinstance(r.get(k), (int, float))][-n:]
        if vals:
            out[k[4:]] = {"mean": sum(vals) / len(vals), "of": len(vals)}
    return out


RUN_MEMBERS = ("checkpoints", "best", "final", "tensorboard", "history.csv", "curves.png", "model.json", "manifest.json")


def fresh_start(out: Path, copy_to: str = "") -> None:
    """``resume: false``: what an earlier run left in ``out`` (and its checkpoints in ``copy_to``) is
    removed, so nothing of it is resumed, exported or mixed into the new history."""
    import shutil

    for name in RUN_MEMBERS:
        q = out / name
        shutil.rmtree(q) if q.is_dir() else q.unlink(missing_ok=True)
    if copy_to and Path(copy_to).is_dir():
        for q in Path(copy_to).glob("ckpt-*"):
            shutil.rmtree(q)
        (Path(copy_to) / "latest.json").unlink(missing_ok=True)


def train(cfg: TrainConfig | dict, show_progress: bool = True) -> dict:
    import keras

    if isinstance(cfg, dict):
        cfg = TrainConfig.from_dict(cfg)
    from .strategy import is_chief

    out = Path(cfg.output)
    check_not_input(out, {**cfg.input_paths(), "copy_to": cfg.copy_to}, "train")
    if is_chief(cfg.strategy, cfg.cpu_replicas):  # a multi-worker run's other workers write nothing
        if not cfg.resume:
            fresh_start(out, cfg.copy_to)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "train_config.json", cfg.to_dict())
    policy = keras.config.dtype_policy()
    try:
        return TrainRun(cfg, show_progress).build().fit().finish()
    finally:
        keras.config.set_dtype_policy(policy)


__all__ = ["TrainConfig", "TrainRun", "TrainingError", "train"]
