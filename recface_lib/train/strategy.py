"""Choosing a tf.distribute strategy: users who outgrow one GPU change one parameter."""
from __future__ import annotations

import json
import os

from ..errors import ConfigError


def split_cpu(n: int) -> None:
    """Make ``n`` logical CPU devices (must run before TensorFlow initialises its devices)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    want = [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
    current = tf.config.get_logical_device_configuration(cpu)
    if current and len(current) == n:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, want)
    except RuntimeError as e:
        raise ConfigError(f"cpu_replicas={n}: TensorFlow's devices are already initialised in this process; "
                          f"set it before any TensorFlow work (a fresh process)") from e


def plan_for(gpus: list[tuple[str, tuple[int, int] | None]], tpu: bool = False) -> dict:
    """What training will use on these devices: ``gpus`` as (name, compute capability) pairs.
    mixed_float16 on GPUs of compute capability >= 7.0 (tensor cores), mixed_bfloat16 on a TPU,
    float32 otherwise; MirroredStrategy over several GPUs."""
    if tpu:
        return {"devices": "TPU", "precision": "mixed_bfloat16", "strategy": "tpu",
                "line": "TPU: mixed_bfloat16, strategy tpu"}
    if not gpus:
        return {"devices": "CPU", "precision": "float32", "strategy": "default", "line": "no GPU: CPU, float32"}
    fast = all(cc is not None and cc >= (7, 0) for _, cc in gpus)
    precision = "mixed_float16" if fast else "float32"
    strategy = "mirrored" if len(gpus) > 1 else "default"
    names = ", ".join(f"{n} (compute {cc[0]}.{cc[1]})" if cc else n for n, cc in gpus)
    return {"devices": names, "precision": precision, "strategy": strategy,
            "line": f"{len(gpus)} GPU{'s' if len(gpus) > 1 else ''} ({names}): {precision}, strategy {strategy}"}


def device_plan() -> dict:
    """``plan_for`` the devices TensorFlow sees here."""
    import tensorflow as tf

    gpus = []
    for g in tf.config.list_physical_devices("GPU"):
        d = tf.config.experimental.get_device_details(g)
        gpus.append((d.get("device_name", g.name), d.get("compute_capability")))
    return plan_for(gpus, tpu=bool(os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME")))


def resolve_precision(precision: str) -> str:
    """``auto`` -> what ``device_plan`` chooses; any other value as it is."""
    return device_plan()["precision"] if precision == "auto" else precision


def make_strategy(name: str = "auto", cpu_replicas: int = 0):
    import tensorflow as tf

    if cpu_replicas and cpu_replicas > 1:
        split_cpu(cpu_replicas)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_replicas)],
                                              cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "auto":
        if os.environ.get("TF_CONFIG") and json.loads(os.environ["TF_CONFIG"]).get("cluster"):
            name = "multi_worker"
        elif os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME"):
            name = "tpu"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"strategy: unknown {name!r}")
