"""The model factory: every backbone and head name is registered here, once."""
from __future__ import annotations

from ..errors import ConfigError

BACKBONES = {
    "MobileFaceNetV2": ("mobilefacenet", "MobileFaceNetV2"),
    "MobileFaceNet": ("mobilefacenet", "MobileFaceNet"),
    "ResNet34": ("resnet", "ResNet34"),
    "ResNet34R": ("resnet", "ResNet34R"),
    "ResNet50": ("resnet", "ResNet50"),
    "ResNet101": ("resnet", "ResNet101"),
    "ResNet18": ("torchvision_resnet", "ResNet18"),  # torchvision's layout (facenet-pytorch-glint360k)
    "ResNet34TV": ("torchvision_resnet", "ResNet34TV"),  # torchvision's resnet34, beside insightface's ResNet34
    "ResNet152": ("torchvision_resnet", "ResNet152"),
    "MobileNetV2": ("mobilenet", "MobileNetV2"),
    "Seesaw_shuffleFaceNet": ("seesaw", "Seesaw_shuffleFaceNet"),
    "InceptionResNetV1": ("inception_resnet_v1", "InceptionResNetV1"),  # facenet's
    "InceptionResNetV2": ("inception_resnet_v2", "InceptionResNetV2"),  # facenet's and glint360k's other one
    "TestMobileFaceNet": ("mobilefacenet", "TestMobileFaceNet"),  # smoke runs and mechanics tests only
}
HEAD_NAMES = ("ArcFace", "CosFace", "SphereFace", "AdaCos", "AdaFace", "Combined", "NormDense", "CurricularFace",
              "MagFace", "SubCenterArcFace", "Softmax")
# the recface guide's names
HEAD_ALIASES = {f"{h}Head": h for h in HEAD_NAMES}


def _check(name, valid, what):
    if name not in valid:
        raise ConfigError(f"{what}: unknown {name!r}; valid: {', '.join(valid)}")


def build_backbone(name: str, input_size: int = 112, embd_shape: int = 512, dropout: float = 0.0,
                   sync_batchnorm: bool = False):
    """``sync_batchnorm``: every batch-norm layer takes its statistics over the global batch, all
    replicas together (what makes N replicas train like one device with the same global batch)."""
    import importlib

    import keras

    _check(name, BACKBONES, "backbone")
    module, fn = BACKBONES[name]
    mod = importlib.import_module(f"{__package__}.backbones.{module}")
    model = getattr(mod, fn)(input_size=input_size, embd_shape=embd_shape, dropout=dropout)
    if sync_batchnorm:
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                layer._moments = global_moments(layer)
    return model


def global_moments(layer):
    """A batch-norm layer's training statistics over the global batch: every replica's sum and
    count, then every replica's sum of squared deviations from that mean (two passes). Keras'
    ``synchronized=True`` takes E[x^2] - E[x]^2 in float32, which cancels on the near-constant
    channels aligned faces have (their black borders): there, rounding alone moved a 4-step run's
    weights by 30-50%, where two passes agree with one device to float precision."""
    import tensorflow as tf

    def moments(inputs, mask=None):
        if mask is not None:
            raise ValueError(f"{layer.name}: masked inputs are not supported with sync_batchnorm")
        axes = layer._reduction_axes
        ctx = tf.distribute.get_replica_context()
        if ctx is None:  # cross-replica context: nothing to synchronise
            return tf.nn.moments(inputs, axes)
        shape = tf.shape(inputs)
        n = tf.cast(tf.reduce_prod(tf.gather(shape, axes)), inputs.dtype)
        total, count = ctx.all_reduce("SUM", [tf.reduce_sum(inputs, axes, keepdims=True), n])
        mean = total / count
        var = ctx.all_reduce("SUM", tf.reduce_sum(tf.square(inputs - mean), axes, keepdims=True)) / count
        return tf.squeeze(mean, axes), tf.squeeze(var, axes)

    return moments


def head_name(name: str) -> str:
    name = HEAD_ALIASES.get(name, name)
    _check(name, HEAD_NAMES, "head")
    return name


def head_param_defaults(name: str) -> dict:
    """The head-specific parameters (beyond scale and margin) of ``name``'s class with their
    defaults, from its constructor: ArcFace easy_margin, Combined margin1/margin3, AdaFace h/t_alpha."""
    import inspect

    from .heads import HEADS

    sig = inspect.signature(HEADS[head_name(name)].__init__)
    return {k: p.default for k, p in sig.parameters.items()
            if k not in ("self", "num_classes", "scale", "margin", "regularizer") and p.kind is p.POSITIONAL_OR_KEYWORD}


def check_head_params(name: str, params: dict, where: str = "head_params") -> dict:
    """``params`` if every key is a parameter of ``name``'s head (``head_param_defaults``) and finite."""
    name = head_name(name)
    valid = list(head_param_defaults(name))
    unknown = [k for k in params if k not in valid]
    if unknown:
        raise ConfigError(f"{where}: {name} has no parameter(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(valid) or 'none'}")
    from ..config import check_number

    for k, v in params.items():
        check_number(f"{where}.{k}", v, -1e3, 1e3)
    return dict(params)


def build_head(name: str, num_classes: int, scale: float = 64.0, margin: float | None = None, **kw):
    from .heads import DEFAULT_MARGINS, HEADS

    name = head_name(name)
    m = DEFAULT_MARGINS[name] if margin is None else float(margin)
    return HEADS[name](num_classes, scale=scale, margin=m, name="head", **kw)


def build_train_model(backbone, head):
    """(image, label) -> logits; the backbone stays reachable as a sub-model for embedding/export."""
    import keras

    img = keras.Input(backbone.input_shape[1:], name="image")
    label = keras.Input((), dtype="int32", name="label")
    emb = backbone(img)
    return keras.Model([img, label], head([emb, label]), name="train_model")


def count_params(model) -> int:
    import numpy as np

    return int(sum(np.prod(v.shape) for v in model.weights))


def describe_backbones(input_size: int = 112, embd_shape: int = 512, names=None) -> dict:
    """Parameter counts (all weights, including BN statistics) and output shapes per backbone."""
    import keras
    import numpy as np

    out = {}
    for name in names or BACKBONES:
        m = build_backbone(name, input_size, embd_shape)
        out[name] = {"params": count_params(m),
                     "trainable_params": int(sum(np.prod(v.shape) for v in m.trainable_weights)),
                     "embedding": int(m.output_shape[-1]), "input_size": input_size, "layers": len(m.layers)}
        del m
        keras.backend.clear_session()
    return out
