"""ResNets in torchvision's layout (He et al. 2016 as ``torchvision.models.resnet18..152`` builds
them), the backbones of facenet-pytorch-glint360k (#24): a 7x7/2 stem with batch norm, ReLU and a
3x3/2 max pool, four stages of basic blocks (18, 34) or bottlenecks (50, 101, 152; stride on the
3x3 conv, as torchvision v1.5) with a 1x1 projection where the shape changes, global average
pooling, then glint360k's embedding layer: its replacement of ``fc``, a linear map without bias
(the loss L2-normalises). Batch norm as torchvision's (momentum 0.1 = Keras 0.9, eps 1e-5). Any
input from 32 px (the pool is global); glint360k trains at 140. Trainable parameter counts equal
torchvision's with ``fc`` replaced (``tests/test_models.py``, against torchvision itself)."""
from __future__ import annotations

import keras
from keras import layers

from .layers import inputs

BN = dict(momentum=0.9, epsilon=1e-5)
BLOCKS = {"ResNet18": ("basic", (2, 2, 2, 2)), "ResNet34TV": ("basic", (3, 4, 6, 3)),  # glint360k's default
          "ResNet152": ("bottleneck", (3, 8, 36, 3))}


def _conv_bn(x, filters, kernel, strides, name, relu=True):
    x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x) if kernel > 1 else x
    x = layers.Conv2D(filters, kernel, strides, use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(**BN, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _block(x, kind, width, strides, name):
    out = width * (4 if kind == "bottleneck" else 1)
    shortcut = x
    if strides != 1 or x.shape[-1] != out:
        shortcut = _conv_bn(x, out, 1, strides, f"{name}_down", relu=False)
    if kind == "basic":
        y = _conv_bn(x, width, 3, strides, f"{name}_c1")
        y = _conv_bn(y, width, 3, 1, f"{name}_c2", relu=False)
    else:
        y = _conv_bn(x, width, 1, 1, f"{name}_c1")
        y = _conv_bn(y, width, 3, strides, f"{name}_c2")
        y = _conv_bn(y, out, 1, 1, f"{name}_c3", relu=False)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))


def TorchvisionResNet(kind, depths, input_size=140, embd_shape=512, dropout=0.0, name="ResNet"):
    img = inputs(input_size)
    x = _conv_bn(img, 64, 7, 2, "stem")
    x = layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    x = layers.MaxPooling2D(3, 2, name="stem_pool")(x)
    for s, (n, w) in enumerate(zip(depths, (64, 128, 256, 512))):
        for b in range(n):
            x = _block(x, kind, w, 2 if b == 0 and s > 0 else 1, f"s{s}b{b}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(embd_shape, use_bias=False, name="embedding_dense")(x)
    return keras.Model(img, layers.Activation("linear", dtype="float32", name="embedding")(x), name=name)


def _make(net):
    kind, depths = BLOCKS[net]

    def fn(input_size=140, embd_shape=512, dropout=0.0, name=net):
        return TorchvisionResNet(kind, depths, input_size, embd_shape, dropout, name)
    fn.__name__ = net
    return fn


ResNet18, ResNet34TV, ResNet152 = _make("ResNet18"), _make("ResNet34TV"), _make("ResNet152")
