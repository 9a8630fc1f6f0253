"""Backbone registry: parameter counts pinned (so an accidental architecture change shows), shapes,
float32 embeddings under mixed precision, and a clear error for unknown names."""
import numpy as np
import pytest

from conftest import last_json, run_cli

# all weights incl. batch-norm statistics, at 112x112 input and 512-d embedding
PINNED = {"MobileFaceNetV2": 1220864, "MobileFaceNet": 1220864, "ResNet34": 34164672, "ResNet34R": 11767776,
          "ResNet50": 43628480, "ResNet101": 65225280, "MobileNetV2": 12750912, "Seesaw_shuffleFaceNet": 1727232,
          "TestMobileFaceNet": 61824, "InceptionResNetV1": 23497424, "ResNet18": 11448256, "ResNet152": 59343808,
          "ResNet34TV": 21563840,
          "InceptionResNetV2": 55124704}
# facenet's Inception-ResNet-v1: trainable parameters (any input size), 128-d and 512-d embeddings
FACENET_TRAINABLE = {128: 22779312, 512: 23467824}


def test_models_json_pins_parameter_counts():
    out = last_json(run_cli("models", "--json"))
    got = {k: v["params"] for k, v in out["backbones"].items()}
    assert got == PINNED
    assert all(v["embedding"] == 512 for v in out["backbones"].values())
    assert {"ArcFace", "CosFace", "SphereFace", "AdaCos", "AdaFace", "Combined"} <= set(out["heads"])
    assert out["triplet_losses"] == ["batch_all", "batch_hard", "semi_hard", "facenet", "margin_filter",
                                      "margin_filter_semi_hard"] and out["samplers"] == ["shuffle", "pk"]
    assert out["terms"]["triplet"] == "triplet_weight" and out["terms"]["margin"] == "head_weight"
    # the recface guide's MobileFaceNetV2 is "about 1.2M parameters without the head"
    assert 1.1e6 < PINNED["MobileFaceNetV2"] < 1.3e6
    assert out["backbones"]["InceptionResNetV1"]["trainable_params"] == FACENET_TRAINABLE[512]


def test_inception_resnet_v1_is_facenets():
    """facenet's count at its 160-px input and 128-d prelogits; the smallest input is refused in one line."""
    from recface_lib.errors import ConfigError
    from recface_lib.models.build import build_backbone

    m = build_backbone("InceptionResNetV1", 160, 128)
    assert sum(int(np.prod(v.shape)) for v in m.trainable_weights) == FACENET_TRAINABLE[128]
    assert m.output_shape == (None, 128) and m.get_layer("conv4b_relu").output.shape[1:] == (17, 17, 256)
    bns = [la for la in m.layers if la.__class__.__name__ == "BatchNormalization"]
    assert bns and all(la.momentum == 0.995 and la.epsilon == 1e-3 and not la.scale for la in bns)
    with pytest.raises(ConfigError, match="InceptionResNetV1 needs at least 75 pixels"):
        build_backbone("InceptionResNetV1", 74, 128)


def test_inception_resnet_v2_sizes():
    """keras.applications' body (54,336,736 parameters, counted there) with facenet's bottleneck: the
    same count at 75 and 160 px (nothing depends on the size), and 74 px refused in one line."""
    from recface_lib.errors import ConfigError
    from recface_lib.models.build import build_backbone

    for size in (75, 160):
        m = build_backbone("InceptionResNetV2", size, 128)
        assert m.output_shape == (None, 128) and m.count_params() == 54336736 + 1536 * 128 + 3 * 128
    with pytest.raises(ConfigError, match="^input_size: InceptionResNetV2 needs at least 75 pixels"):
        build_backbone("InceptionResNetV2", 74, 128)


def test_original_mobilefacenet_128d_and_mixed_precision_output():
    keras = pytest.importorskip("keras")
    import numpy as np

    from recface_lib.models.build import build_backbone, count_params

    m = build_backbone("MobileFaceNet", 112, 128)
    assert m.output_shape == (None, 128)
    assert 0.9e6 < count_params(m) < 1.1e6  # the paper's 0.99M
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        m = build_backbone("MobileFaceNetV2", 64, 32)
        y = m(np.zeros((2, 64, 64, 3), np.float32))
        assert keras.backend.standardize_dtype(y.dtype) == "float32" and tuple(y.shape) == (2, 32)
    finally:
        keras.config.set_dtype_policy("float32")


def test_unknown_backbone_lists_valid_names():
    from recface_lib.errors import ConfigError
    from recface_lib.models.build import build_backbone

    with pytest.raises(ConfigError, match="backbone: unknown 'ResNet19'; valid: MobileFaceNetV2, MobileFaceNet"):
        build_backbone("ResNet19")


def test_resnet18_is_torchvisions_layout_weight_for_weight():
    """#24: ResNet18 (and ResNet152, the same code with bottlenecks) in torchvision's layout: with
    torchvision's own resnet18 weights copied layer by layer (its fc replaced by glint360k's 512-d
    linear map without bias), the Keras model gives torchvision's embedding on random images
    (eval mode); the trainable counts of ResNet18, ResNet34TV and ResNet152 equal torchvision's."""
    import keras
    import torch
    import torchvision

    from recface_lib.models.build import build_backbone

    for name, fn in (("ResNet18", torchvision.models.resnet18), ("ResNet34TV", torchvision.models.resnet34),
                     ("ResNet152", torchvision.models.resnet152)):
        t = fn(weights=None)
        t.fc = torch.nn.Linear(t.fc.in_features, 512, bias=False)
        m = build_backbone(name, 64, 512)
        assert sum(int(np.prod(v.shape)) for v in m.trainable_weights) == sum(p.numel() for p in t.parameters())
    torch.manual_seed(0)
    t = torchvision.models.resnet18(weights=None)
    t.fc = torch.nn.Linear(512, 512, bias=False)
    for mod in t.modules():  # non-trivial batch-norm statistics, so that a swapped layer shows
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    t.eval()
    m = build_backbone("ResNet18", 64, 512)

    def keras_name(torch_name):
        if torch_name in ("conv1", "bn1"):
            return "stem_" + ("conv" if torch_name == "conv1" else "bn")
        if torch_name == "fc":
            return "embedding_dense"
        layer, b, part = torch_name.split(".", 2)
        s = int(layer[5:]) - 1
        part = {"downsample.0": "down_conv", "downsample.1": "down_bn"}.get(part) or \
            f"c{part[-1]}_{'conv' if part.startswith('conv') else 'bn'}"
        return f"s{s}b{b}_{part}"
    copied = 0
    for tn, mod in t.named_modules():
        if isinstance(mod, torch.nn.Conv2d):
            m.get_layer(keras_name(tn)).set_weights([mod.weight.detach().numpy().transpose(2, 3, 1, 0)])
        elif isinstance(mod, torch.nn.BatchNorm2d):
            m.get_layer(keras_name(tn)).set_weights([x.detach().numpy() for x in
                                                     (mod.weight, mod.bias, mod.running_mean, mod.running_var)])
        elif isinstance(mod, torch.nn.Linear):
            m.get_layer(keras_name(tn)).set_weights([mod.weight.detach().numpy().T])
        else:
            continue
        copied += 1
    assert copied == len([w for w in m.layers if w.weights])
    x = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        ref = t(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = keras.ops.convert_to_numpy(m(x, training=False))
    assert np.abs(got - ref).max() < 1e-4 * np.abs(ref).max()
