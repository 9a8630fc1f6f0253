"""tf.data input pipeline over the TFRecord shards written by the build stage.

``make_dataset(path, batch_size)``: interleave shards, shuffle, parse, decode, augment, normalise,
batch, prefetch, and ``repeat`` for step-based training; labels are int32 class indices (no dense
one-hot). Augmentations run on a float image in [0, 1], so brightness/contrast/saturation deltas
mean the same thing whatever the normalisation (the old notebook added a brightness delta of
~0.1 to a 0-255 image: a no-op). Random choices use stateless ops seeded by (seed, element index),
so ``deterministic=True`` gives the same batches every run."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..config import StageConfig, param
from ..errors import ConfigError
from .tfrecord import check_shards, load_metadata

NORMALIZATIONS = ("-1:1", "0:1", "-0.99:0.99", "0:255", "fixed_standardization", "prewhiten", "glint360k_mean_std")
# per-channel (RGB) constants of a mode, recorded in the model's contract (train.model_contract) so
# that a consumer outside recface standardises the same way: facenet-pytorch-glint360k's transforms
NORMALIZATION_VALUES = {"glint360k_mean_std": {"mean": [0.6071, 0.4609, 0.3944], "std": [0.2457, 0.2175, 0.2129]}}


def normalize(x, mode: str):
    """x: float image(s) in [0, 1] (an image HxWxC or a batch, NumPy or TensorFlow) -> the model's
    input. facenet's two: ``fixed_standardization`` (255 x - 127.5) / 128, and ``prewhiten``,
    per image (y - mean(y)) / max(std(y), 1 / sqrt(y.size)) of y = 255 x over all its pixels and
    channels (facenet's ``prewhiten``; its floor is in 0-255 units, as facenet computed it).
    ``glint360k_mean_std``: per RGB channel (x - mean) / std with facenet-pytorch-glint360k's
    constants (``NORMALIZATION_VALUES``)."""
    if mode == "-1:1":
        return x * 2.0 - 1.0
    if mode == "fixed_standardization":
        return (x * 255.0 - 127.5) / 128.0
    if mode == "prewhiten":
        return _prewhiten(x * 255.0)
    if mode == "0:1":
        return x
    if mode in NORMALIZATION_VALUES:  # per channel: (x - mean) / std on [0, 1] values, as torchvision's Normalize
        v = NORMALIZATION_VALUES[mode]
        return (x - np.asarray(v["mean"], np.float32)) / np.asarray(v["std"], np.float32)
    if mode == "-0.99:0.99":
        return (x * 2.0 - 1.0) * 0.99
    if mode == "0:255":
        return x * 255.0
    raise ConfigError(f"normalization: unknown {mode!r}; valid: {', '.join(NORMALIZATIONS)}")


def _prewhiten(y):
    axes = (-3, -2, -1)
    if isinstance(y, np.ndarray):
        mean = y.mean(axis=axes, keepdims=True)
        std = y.std(axis=axes, keepdims=True)
        floor = 1.0 / np.sqrt(np.prod(y.shape[-3:]))
        return (y - mean) / np.maximum(std, floor)
    import tensorflow as tf

    mean = tf.reduce_mean(y, axis=axes, keepdims=True)
    std = tf.math.reduce_std(y, axis=axes, keepdims=True)
    floor = 1.0 / tf.sqrt(tf.cast(tf.reduce_prod(tf.shape(y)[-3:]), y.dtype))
    return (y - mean) / tf.maximum(std, floor)


@dataclass
class Augmentation(StageConfig):
    """Training-time augmentation, passed whole (``TrainConfig.augmentation`` is its mapping)."""

    train_crop: bool = param(False, "random resize to [size, size*8/7] + random size crop (the recface guide)")
    flip: bool = param(True, "random horizontal flip")
    color_jitter: float = param(0.0, "brightness/contrast/saturation jitter strength (0-1)")
    random_erasing: float = param(0.0, "probability of erasing a random box")
    low_res: float = param(0.0, "probability of low-resolution augmentation (AdaFace)")
    random_rotate: float = param(0.0, "random rotation, uniform in +-N degrees about the centre (facenet: 10; 0: none)",
                                 lo=0.0, hi=180.0)

    def validate(self, where=""):
        for k in ("color_jitter", "random_erasing", "low_res"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ConfigError(f"{where}{k}: must be in [0, 1], got {getattr(self, k)}")


def rotate_image(img, angle):
    """``img`` (HxWxC float) rotated by ``angle`` radians about its centre, counter-clockwise as
    shown (90 degrees is ``np.rot90``), bilinear, zeros outside (facenet rotated with scipy's
    imrotate, bicubic)."""
    import tensorflow as tf

    h, w = tf.cast(tf.shape(img)[0], tf.float32), tf.cast(tf.shape(img)[1], tf.float32)
    c, s_ = tf.cos(angle), tf.sin(angle)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    # output pixel (x, y) reads input (c x - s y + tx, s x + c y + ty): a rotation about the centre
    transform = tf.stack([c, -s_, cx - c * cx + s_ * cy, s_, c, cy - s_ * cx - c * cy, 0.0, 0.0])
    out = tf.raw_ops.ImageProjectiveTransformV3(images=img[tf.newaxis], transforms=transform[tf.newaxis],
                                                output_shape=tf.shape(img)[:2], fill_value=0.0,
                                                interpolation="BILINEAR", fill_mode="CONSTANT")
    return out[0]


@dataclass
class ViewTargets:
    """A teacher's embeddings of ``count`` augmented views of every record (``recface teach
    --views N``): ``views`` (records, count, dim) in shard order; view v of record r is
    ``augment_image`` of the stored face at its stored size with ``view_seed(seed, r, v, count)``
    under ``augmentation``. Training replays the same view and resizes it to the student's size."""

    views: np.ndarray
    seed: int
    augmentation: Augmentation

    @property
    def count(self) -> int:
        return int(self.views.shape[1])


def decode_face(data):
    """Encoded image bytes -> HxWx3 float32 in [0, 1] (the pipeline's and the teacher views' decode)."""
    import tensorflow as tf

    img = tf.io.decode_image(data, channels=3, expand_animations=False)
    img.set_shape([None, None, 3])
    return tf.image.convert_image_dtype(img, tf.float32)


def teacher_views(meta: dict, shard: int, targets_spec: tuple[int, int, Augmentation]):
    """The views the teacher embeds for one shard (index into ``meta['shards']``), record by record,
    views 0..count-1 of each: uint8 RGB arrays at the stored size, made exactly as training makes
    them (``augment_image`` of the decoded face, ``view_seed`` of its row; the float view is rounded
    to uint8 for the teacher). ``targets_spec``: (count, seed, augmentation)."""
    import tensorflow as tf

    count, seed, aug = targets_spec
    shards = [str(p) for p in check_shards(meta)]
    native = int(meta["image_size"][0])
    row0 = int(sum(int(s["records"]) for s in meta["shards"][:shard]))
    by_path = meta.get("image_storage") == "path"
    spec = {"image": tf.io.FixedLenFeature([], tf.string)}

    def view(v, item):
        j, rec = item
        data = tf.io.parse_single_example(rec, spec)["image"]
        img = decode_face(tf.io.read_file(data) if by_path else data)
        img, _ = augment_image(img, view_seed(seed, row0 + j, v, count), aug, native, False)
        img = tf.clip_by_value(tf.ensure_shape(img, [native, native, 3]), 0.0, 1.0)
        return tf.cast(tf.round(img * 255.0), tf.uint8)

    ds = tf.data.TFRecordDataset(shards[shard]).enumerate().flat_map(
        lambda j, rec: tf.data.Dataset.from_tensors((j, rec)).repeat(count).enumerate())
    ds = ds.map(view, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(64)
    for b in ds.as_numpy_iterator():
        yield from b


def view_seed(seed, row, v, count):
    """The stateless seed of view ``v`` of record ``row`` (of ``count`` views): the teach stage and
    the training pipeline draw the same view from it."""
    import tensorflow as tf

    return tf.stack([tf.cast(seed, tf.int64), tf.cast(row, tf.int64) * int(count) + tf.cast(v, tf.int64)])


def augment_image(img, s, a: Augmentation, size: int, resize: bool):
    """One training augmentation of ``img`` (HxWx3 float in [0, 1]) at ``size``, every random choice
    drawn from the stateless seed ``s`` (two int64): the same seed gives the same image. ``resize``:
    the image is not ``size`` x ``size`` yet (without ``train_crop``). -> (image, whether mirrored)."""
    import tensorflow as tf

    train_crop, flip, color_jitter, random_erasing, low_res = (a.train_crop, a.flip, a.color_jitter,
                                                               a.random_erasing, a.low_res)
    random_rotate = float(a.random_rotate)
    flipped = tf.constant(False)
    seeds = tf.random.experimental.stateless_split(s, 8)
    if train_crop:  # the recface guide: random resize to [size, size*8/7], random size crop
        side = tf.random.stateless_uniform([], seeds[0], size, size * 8 // 7 + 1, dtype=tf.int32)
        img = tf.image.resize(img, [side, side])
        img = tf.image.stateless_random_crop(img, [size, size, 3], seeds[1])
    else:
        img = tf.image.resize(img, [size, size]) if resize else img
    if random_rotate > 0:  # its own seed: the other augmentations draw what they drew before
        angle = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(s, 8),
                                            -random_rotate, random_rotate) * (np.pi / 180.0)
        img = rotate_image(img, angle)
    if flip:
        flipped = tf.random.stateless_uniform([], seeds[2]) < 0.5
        img = tf.cond(flipped, lambda: tf.image.flip_left_right(img), lambda: img)
    if color_jitter > 0:
        img = tf.image.stateless_random_brightness(img, 0.2 * color_jitter, seeds[3])
        img = tf.image.stateless_random_contrast(img, 1 - 0.3 * color_jitter, 1 + 0.3 * color_jitter, seeds[4])
        img = tf.image.stateless_random_saturation(img, 1 - 0.3 * color_jitter, 1 + 0.3 * color_jitter, seeds[5])
        img = tf.clip_by_value(img, 0.0, 1.0)
    if low_res > 0:  # AdaFace: downscale then upscale back, with probability low_res
        u = tf.random.stateless_uniform([2], seeds[6])
        small = tf.maximum(8, tf.cast(tf.cast(size, tf.float32) * (0.2 + 0.8 * u[1]), tf.int32))
        lo = tf.image.resize(tf.image.resize(img, [small, small], method="area"), [size, size])
        img = tf.where(u[0] < low_res, lo, img)
    if random_erasing > 0:
        u = tf.random.stateless_uniform([5], seeds[7])
        h = tf.cast(size * (0.1 + 0.3 * u[1]), tf.int32)
        w = tf.cast(size * (0.1 + 0.3 * u[2]), tf.int32)
        y0 = tf.cast(tf.cast(size - h, tf.float32) * u[3], tf.int32)
        x0 = tf.cast(tf.cast(size - w, tf.float32) * u[4], tf.int32)
        yy, xx = tf.meshgrid(tf.range(size), tf.range(size), indexing="ij")
        box = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w) & (u[0] < random_erasing)
        img = tf.where(box[:, :, None], 0.5, img)
    return img, flipped


def make_dataset(path: str | os.PathLike, batch_size: int, training: bool = True, image_size: int = 112,
                 normalization: str = "-1:1", augment: Augmentation | None = None,
                 shuffle_buffer: int = 8192, repeat: bool | None = None, deterministic: bool = False, seed: int = 0,
                 cycle_length: int = 8, start: int = 0, teacher=None, keep=None, part_weights=None, sampler=None):
    """``start``: the number of samples already consumed (resume). Element i of the stream always
    gets augmentation seed (seed, i); in deterministic mode the stream is also skipped to sample
    ``start``, so a resumed run sees exactly the batches an uninterrupted run would have.

    ``teacher``: (embeddings, mirrored embeddings), one row per record in shard order
    (``teach.load_teacher``): elements are then (image, label, target), the target being the
    mirrored face's embedding whenever the flip augmentation mirrored the image. Or
    ``ViewTargets``: each element is one of the teacher's views of its record (drawn from
    (seed, element index)), made as the teach stage made it and resized to ``image_size``, with that
    view's embedding as its target; ``augment`` is then not used (the views are the augmentation).

    ``keep``: a boolean per record (shard order): only those records are read (the held-out
    split, ``train.heldout``). ``part_weights``: for a union of build outputs, each part's
    sampling weight (its own shuffled, repeated stream; default: the union read as one, each part
    in proportion to its size). ``sampler``: a ``data.samplers`` batch sampler (P x K) chooses the
    records of every batch instead of the shuffled stream (``keep`` then already applied by it);
    batch i of the stream is the sampler's batch ``start // batch_size + i``."""
    import tensorflow as tf

    a = augment or Augmentation()
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"normalization: unknown {normalization!r}; valid: {', '.join(NORMALIZATIONS)}")
    meta = load_metadata(path)
    shards = [str(p) for p in check_shards(meta)]
    if not shards:
        raise ConfigError(f"{path}: the dataset has no training shards")
    by_path = meta.get("image_storage") == "path"
    union = "_parts" in meta  # several build outputs as one (tfrecord.union_metadata)
    repeat = training if repeat is None else repeat
    auto = tf.data.AUTOTUNE
    n_records = int(meta["num_samples"])
    if union and teacher is not None:
        raise ConfigError("dataset: distillation reads one build output (its teacher's embeddings are per record)")
    views = teacher if isinstance(teacher, ViewTargets) else None
    if teacher is not None:
        n_t = len(views.views) if views is not None else len(teacher[0])
        if n_t != n_records:
            raise ConfigError(f"{path}: {n_t} teacher embeddings for {n_records} records")
    if views is not None:
        native = [int(x) for x in meta.get("image_size") or []]
        if len(set(native)) != 1:
            raise ConfigError(f"{path}: the teacher's views need square stored faces of one size (image_size "
                              f"{meta.get('image_size')}): build the dataset from aligned faces")
        native, n_views, views_seed, views_aug = native[0], views.count, int(views.seed), views.augmentation
        t_views = tf.constant(views.views)
    elif teacher is not None:
        t_emb, t_flip = tf.constant(teacher[0]), tf.constant(teacher[1])
    if keep is not None:
        keep = np.asarray(keep, bool)
        if keep.shape != (n_records,):
            raise ConfigError(f"{path}: a record mask of {keep.shape[0]} for {n_records} records")
        keep_t = tf.constant(keep)
    # every record carries its row (shard offset + position: the teacher's arrays, the held-out
    # mask), its shard's label offset (a union's parts) and whether its image is a path
    rows = np.cumsum([0] + [int(s["records"]) for s in meta["shards"]])[:-1].astype(np.int64)
    offsets = [int(s.get("label_offset", 0)) for s in meta["shards"]]
    from_paths = [bool(s["by_path"]) if union else by_path for s in meta["shards"]]

    def records(idx):
        """The stream of the shards ``idx`` (shuffled, interleaved, filtered, shuffled, repeated)."""
        files = tf.data.Dataset.from_tensor_slices(([shards[i] for i in idx], rows[idx],
                                                    [offsets[i] for i in idx], [from_paths[i] for i in idx]))
        if training:
            files = files.shuffle(len(idx), seed=seed, reshuffle_each_iteration=not deterministic)
        read = lambda f, r, o, b: tf.data.TFRecordDataset(f).enumerate().map(  # noqa: E731
            lambda j, rec: (r + j, rec, o, b))
        ds = files.interleave(read, cycle_length=min(cycle_length, len(idx)),
                              num_parallel_calls=auto, deterministic=deterministic or None)
        if keep is not None:
            ds = ds.filter(lambda r, rec, o, b: tf.gather(keep_t, r))
        if training and shuffle_buffer > 1:
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=not deterministic)
        return ds.repeat() if repeat else ds

    if sampler is not None:  # the records of each batch chosen by the sampler, in its order
        from .samplers import record_index, sampled_records

        if not training:
            raise ConfigError("sampler: a batch sampler is for training batches")
        index = record_index(meta)  # once, not at every start of the generator
        ds = tf.data.Dataset.from_generator(
            lambda: sampled_records(index, sampler, start // batch_size),
            output_signature=(tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.string),
                              tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.bool)))
    elif part_weights and union and repeat:  # facenet's several datasets, each sampled with its weight
        parts = meta["_parts"]
        if len(part_weights) != len(parts):
            raise ConfigError(f"dataset_weights: {len(part_weights)} weights for {len(parts)} datasets")
        starts = [int(q["label_offset"]) for q in parts] + [int(meta["num_classes"])]
        streams = [records(np.array([i for i, o in enumerate(offsets) if starts[k] <= o < starts[k + 1]]))
                   for k in range(len(parts))]
        total = float(sum(part_weights))
        ds = tf.data.Dataset.sample_from_datasets(streams, [w / total for w in part_weights], seed=seed)
    else:
        ds = records(np.arange(len(shards)))
    kept = int(keep.sum()) if keep is not None else n_records
    if start and deterministic and repeat and kept and sampler is None:  # records only: skipped before decoding
        ds = ds.skip(start % kept)
    ds = ds.enumerate(start=start)
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}
    size = int(image_size)
    n_classes = int(meta["num_classes"])

    def load(i, item):
        row, rec, offset, from_path = item
        flipped = tf.constant(False)
        ex = tf.io.parse_single_example(rec, spec)
        data = tf.cond(from_path, lambda: tf.io.read_file(ex["image"]), lambda: ex["image"])
        img = decode_face(data)
        if views is not None:  # the teacher's view of this record, drawn per element, at the stored size
            v = tf.random.stateless_uniform([], tf.stack([tf.cast(seed, tf.int64), i]), 0, n_views, dtype=tf.int64)
            img, _ = augment_image(img, view_seed(views_seed, row, v, n_views), views_aug, native, False)
            img = tf.image.resize(img, [size, size]) if native != size else img
        elif training:
            img, flipped = augment_image(img, tf.stack([tf.cast(seed, tf.int64), i]), a, size,
                                         meta.get("image_size") != [size, size])
        else:
            img = tf.image.resize(img, [size, size]) if meta.get("image_size") != [size, size] else img
        img = tf.clip_by_value(tf.ensure_shape(img, [size, size, 3]), 0.0, 1.0)  # resizes may overshoot
        label = tf.cast(ex["label"], tf.int32) + tf.cast(offset, tf.int32)
        # a label outside metadata.json's classes fails here on every device (a GPU's loss would
        # silently give NaN); the trainer names the shard (tfrecord.data_error)
        tf.debugging.assert_less(label, n_classes, message="label outside the classes of metadata.json")
        tf.debugging.assert_non_negative(label, message="negative label")
        if views is not None:
            return normalize(img, normalization), label, tf.cast(t_views[row, v], tf.float32)
        if teacher is not None:
            target = tf.cast(tf.where(flipped, tf.gather(t_flip, row), tf.gather(t_emb, row)), tf.float32)
            return normalize(img, normalization), label, target
        return normalize(img, normalization), label

    # a sampler's batches are groups of consecutive elements: their order is kept whatever the mode
    ds = ds.map(load, num_parallel_calls=auto, deterministic=(deterministic or sampler is not None) or None)
    ds = ds.batch(batch_size, drop_remainder=training)
    opts = tf.data.Options()
    opts.deterministic = bool(deterministic)
    ds = ds.with_options(opts)
    return ds.prefetch(auto)
