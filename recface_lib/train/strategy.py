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


def tf_config() -> dict:
    """The cluster this process belongs to (``TF_CONFIG``), {} when none; a malformed one is refused."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return {}
    try:
        c = json.loads(raw)
        workers = c["cluster"].get("worker", []) + c["cluster"].get("chief", [])
        task = c["task"]
        assert isinstance(task["type"], str) and int(task["index"]) >= 0 and workers
    except (ValueError, KeyError, TypeError, AttributeError, AssertionError) as e:
        raise ConfigError(f"TF_CONFIG: not a cluster description ({type(e).__name__}: {e}); expected "
                          '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}') from None
    return c


def cluster() -> dict:
    """``tf_config()``, which a multi-worker run cannot do without."""
    c = tf_config()
    if not c:
        raise ConfigError("strategy multi_worker: TF_CONFIG is not set (each worker needs the cluster and its own task)")
    return c


def is_multi_worker(name: str, cpu_replicas: int = 0) -> bool:
    """Whether strategy ``name`` trains across processes (``auto`` does when TF_CONFIG names a
    cluster): the one rule ``make_strategy`` and ``is_chief`` both follow. ``cpu_replicas`` > 1
    mirrors over logical CPUs in this process whatever the name."""
    if cpu_replicas and cpu_replicas > 1:
        return False
    return name == "multi_worker" or (name == "auto" and bool(tf_config()))


def is_chief(name: str, cpu_replicas: int = 0) -> bool:
    """Whether this process writes the run's files: always, except in a multi-worker run, where only
    the chief does (task ``chief``, or worker 0 when the cluster has no chief); the others train in
    lock-step and write nothing, so they never race the chief for the same files."""
    if not is_multi_worker(name, cpu_replicas):
        return True
    c = cluster()
    t = c["task"]
    return t["type"] == "chief" or (t["type"] == "worker" and int(t["index"]) == 0 and "chief" not in c["cluster"])


def peer_lost(e: BaseException) -> bool:
    """A collective failed because another worker stopped (killed, pre-empted, out of memory)."""
    import tensorflow as tf

    return isinstance(e, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
                          tf.errors.AbortedError))


HEARTBEAT_S = 60


def patient_coordination(c: dict) -> None:
    """Configure the workers' coordination service as MultiWorkerMirroredStrategy would, but with a
    heartbeat timeout of ``HEARTBEAT_S`` rather than TensorFlow's 10 s: a worker whose host is busy
    (a checkpoint on a slow disk, other jobs on the machine) is not declared dead, at the price of
    noticing a really dead one up to a minute later. Must run before the strategy is created."""
    from tensorflow.python.eager import context  # no public API sets the heartbeat
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2

    if context.context().coordination_service is not None:
        return
    jobs = [j for j in ("chief", "worker") if c["cluster"].get(j)]
    leader = "chief" if "chief" in jobs else "worker"
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=f"/job:{leader}/replica:0/task:0",
        heartbeat_timeout_in_ms=HEARTBEAT_S * 1000,
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name=j, num_tasks=len(c["cluster"][j])) for j in jobs])


def make_strategy(name: str = "auto", cpu_replicas: int = 0):
    import tensorflow as tf

    if cpu_replicas and cpu_replicas > 1:
        split_cpu(cpu_replicas)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_replicas)],
                                              cross_device_ops=tf.distribute.ReductionToOneDevice())
    if is_multi_worker(name):
        name = "multi_worker"
    elif name == "auto":
        if os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME"):
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
        c = cluster()  # a missing or malformed TF_CONFIG gets our one-line error, not TensorFlow's
        try:
            patient_coordination(c)
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as e:  # collectives must be configured before TensorFlow runs anything
            raise ConfigError(f"strategy multi_worker: {e}; create it first in a fresh process") from e
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"strategy: unknown {name!r}")


def keras_multi_worker(model, strategy) -> None:
    """Let Keras' ``fit`` train ``model`` under MultiWorkerMirroredStrategy, which Keras 3 cannot do
    as it stands (keras-team/keras#20585), for two reasons; each is mended on this model alone:

    - before training, ``fit`` averages a first batch across the replicas to build the model
      symbolically, a reduction this strategy cannot make eagerly ("unsupported type PerReplica").
      Our model is built before ``fit``: the shapes of this worker's first batch are all it needs;
    - after each step, it averages every logged value across replicas along axis 0, which a scalar
      lacks ("Invalid reduction dimension 0"): the step's logs are given that axis (length 1), so
      the average over replicas is what Keras then reports."""
    import tensorflow as tf

    build, step = model._maybe_symbolic_build, model.train_step

    def local_build(iterator=None, data_batch=None):
        if iterator is not None and data_batch is None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], next(it))
                break
        return build(data_batch=data_batch)

    def train_step(data):
        return tf.nest.map_structure(lambda v: tf.reshape(v, [1]), step(data))

    model._maybe_symbolic_build, model.train_step = local_build, train_step
