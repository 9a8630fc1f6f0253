"""Multi-worker training for real (#16): two worker processes on this machine (TF_CONFIG on
localhost ports, CPU, MultiWorkerMirroredStrategy) train exactly as one process over two replicas
with the same global batch, and a run whose worker dies resumes from the chief's last checkpoint
when both are restarted."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import runs_differ

JOB = Path(__file__).with_name("multi_worker_job.py")
ROOT = Path(__file__).resolve().parents[1]


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_workers(cfg, logs, die_at=0):
    """Two workers; their output goes to files in ``logs`` (a pipe nobody reads could fill and block)."""
    ports = free_ports(2)
    procs = []
    for i in range(2):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CONFIG": json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                                        "task": {"type": "worker", "index": i}})}
        args = [sys.executable, str(JOB), json.dumps({**cfg, "strategy": "multi_worker"})] + ([str(die_at)] if die_at else [])
        procs.append(subprocess.Popen(args, env=env, stdout=open(logs / f"w{i}.out", "w"),
                                      stderr=open(logs / f"w{i}.err", "w")))
    return procs


def finish(procs, logs, timeout=300):
    outs = []
    try:
        for i, p in enumerate(procs):
            rc = p.wait(timeout=timeout)
            assert rc == 0, (logs / f"w{i}.err").read_text()[-3000:]
            outs.append(json.loads((logs / f"w{i}.out").read_text().strip().splitlines()[-1]))
    finally:
        for p in procs:
            p.kill()
    return outs


@pytest.mark.serial  # three training processes and kill timing: alone, with the whole machine
def test_two_workers_train_as_one_process_and_recover(ds, tmp_path):
    from recface_lib.train.checkpoint import find_latest

    cfg = {"dataset": str(ds), "input_size": 32, "embd_shape": 32, "batch_size": 8, "shuffle_buffer": 64,
           "backbone": "TestMobileFaceNet", "tensorboard": False, "steps_per_epoch": 3, "deterministic": True, "checkpoint_every": 2,
           "plan": [[1, 0.01], [1, 0.005]]}
    # the reference: one process, the same global batch over two replicas (logical CPUs)
    ref = subprocess.run([sys.executable, str(JOB), json.dumps({**cfg, "output": str(tmp_path / "one"), "cpu_replicas": 2})],
                         env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]

    # two workers; worker 1 dies at step 2's checkpoint, the chief is killed while it waits for it
    out = tmp_path / "two"
    procs = start_workers({**cfg, "output": str(out)}, tmp_path, die_at=2)
    try:
        assert procs[1].wait(timeout=300) == 3, (tmp_path / "w1.err").read_text()[-3000:]
        t = time.time()
        while (find_latest(out / "checkpoints") is None or find_latest(out / "checkpoints").name != "ckpt-000000002") \
                and time.time() - t < 120:
            time.sleep(0.5)
        if procs[0].poll() is None:  # blocked in a collective with its dead peer
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(timeout=60)
        else:  # or it already noticed: one line naming the checkpoint to resume from
            assert "another worker stopped" in (tmp_path / "w0.err").read_text()
    finally:
        for p in procs:
            p.kill()
    assert find_latest(out / "checkpoints").name == "ckpt-000000002"
    assert not (out / "final").exists()

    # both restarted with the same command: they resume there and finish
    chief, other = finish(start_workers({**cfg, "output": str(out)}, tmp_path), tmp_path)
    assert chief["chief"] and not other["chief"] and chief["replicas"] == other["replicas"] == 2
    assert chief["global_step"] == 6 and chief["resumed_from"].endswith("ckpt-000000002")
    assert runs_differ(out, tmp_path / "one") <= 1e-6  # what one process with the same global batch ends with
    rows = (out / "history.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[-1].split(",")[2] == "6"


def test_cluster_roles_and_bad_tf_config(monkeypatch):
    from recface_lib.errors import ConfigError
    from recface_lib.train.strategy import is_chief, is_multi_worker

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief("auto") and not is_multi_worker("auto")
    with pytest.raises(ConfigError, match="TF_CONFIG is not set"):
        is_chief("multi_worker")
    cluster = {"worker": ["h:1", "h:2"]}
    for task, chief in (({"type": "worker", "index": 0}, True), ({"type": "worker", "index": 1}, False)):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
        assert is_multi_worker("auto") and is_chief("auto") is chief
        assert not is_multi_worker("auto", cpu_replicas=2) and is_chief("auto", cpu_replicas=2)  # one process
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {**cluster, "chief": ["h:0"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert not is_chief("multi_worker")  # a cluster with a chief task: worker 0 is not it
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["h:1"]}}')
    with pytest.raises(ConfigError, match="TF_CONFIG: not a cluster description"):
        is_chief("multi_worker")
    assert is_chief("default")  # a single-process strategy ignores the cluster


def test_global_batchnorm_statistics_are_two_pass():
    """sync_batchnorm's statistics against float64 NumPy, on a channel as near-constant as a black
    border (where E[x^2] - E[x]^2 in float32 cancels)."""
    import tensorflow as tf

    from recface_lib.models.build import build_backbone

    m = build_backbone("MobileFaceNetV2", 32, 32, sync_batchnorm=True)
    bn = next(layer for layer in m._flatten_layers() if layer.name == "stem_bn")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4, 4, bn.moving_mean.shape[0])).astype(np.float32)
    x[..., 0] = 100.0 + 1e-3 * x[..., 0]  # variance 1e-6 under a mean of 100
    mean, var = (np.asarray(v, np.float64) for v in bn._moments(tf.constant(x)))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean((0, 1, 2)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(var, x64.var((0, 1, 2)), rtol=2e-2)
    naive = float(np.mean(np.square(x[..., 0])) - np.square(np.mean(x[..., 0])))  # float32 cancellation
    assert abs(naive - x64[..., 0].var()) > 10 * abs(var[0] - x64[..., 0].var())
