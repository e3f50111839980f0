"""Where training runs: strategy selection, cluster resolution (TF_CONFIG, Slurm), logical CPU
devices, and the batch and learning-rate arithmetic when there are several replicas.

The strategy must be created before TensorFlow does any other work in the process (collective
ops are configured at start-up), so the training session calls `build` first.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from dlintro import tune
from dlintro.errors import UserError

SLURM_VARS = ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_NTASKS")


def set_logical_cpus(n: int) -> None:
    """Split the CPU into `n` logical devices (for trying multi-device code without GPUs)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError:  # the runtime is already initialized: fine if it already has n
        have = len(tf.config.list_logical_devices("CPU"))
        if have != n:
            raise UserError(
                f"distribution.logical_cpus: {n} requested but this process already runs with "
                f"{have} CPU device(s); logical devices are set once, at process start"
            ) from None


def cluster_source() -> str:
    """Where a multi-worker cluster would come from: "TF_CONFIG" when it is set, else "Slurm"
    inside an srun job step, else "none"."""
    if os.environ.get("TF_CONFIG"):
        return "TF_CONFIG"
    if all(v in os.environ for v in SLURM_VARS):
        return "Slurm"
    return "none"


def cluster_resolver() -> Any:
    """TF_CONFIG's cluster, else Slurm's (srun), else a UserError saying what to set."""
    source = cluster_source()
    if source == "TF_CONFIG":
        try:
            spec = json.loads(os.environ["TF_CONFIG"])
            _ = spec["cluster"]["worker"], spec["task"]["index"]
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(
                f"TF_CONFIG is not valid: {exc!r}; expected "
                '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
                '"index": 0}}'
            ) from None
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if source == "Slurm":
        port = int(os.environ.get("DLINTRO_SLURM_PORT", "8888"))
        gpus = len(tf.config.list_physical_devices("GPU"))
        if gpus:
            return tf.distribute.cluster_resolver.SlurmClusterResolver(
                port_base=port, gpus_per_node=gpus
            )
        # CPU only: TF's resolver hands out one "GPU" per task to size its task list, so give
        # it as many as tasks could be on a node, and keep it from touching CUDA_VISIBLE_DEVICES.
        return tf.distribute.cluster_resolver.SlurmClusterResolver(
            port_base=port, gpus_per_node=1024, gpus_per_task=1, auto_set_gpu=False
        )
    raise UserError(
        "distribution.strategy multi_worker needs a cluster: set TF_CONFIG, run under Slurm "
        "(srun dlintro train ...), or use `dlintro launch --workers N` on one machine"
    )


def auto_choice() -> str:
    """What strategy `auto` picks here: mirrored over several GPUs, else the default."""
    return "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"


def gpu_facts() -> list[dict[str, Any]]:
    """Each GPU's name and compute capability (what decides bfloat16 or float16); [] on CPU."""
    out = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        out.append({"name": details.get("device_name", gpu.name),
                    "compute_capability": details.get("compute_capability")})  # fmt: skip
    return out


def environment() -> dict[str, Any]:
    """The facts `dlintro env` shows: versions, devices, threads, what `auto` would pick and
    where a cluster would come from (json-able values; lists the devices, which starts the
    TensorFlow runtime)."""
    import platform

    import keras

    from dlintro import __version__

    gpus = tf.config.list_physical_devices("GPU")
    cpu = tune.cpu_facts()
    return {
        "dlintro": __version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu_count": os.cpu_count(),
        "physical_devices": [d.name for d in tf.config.list_physical_devices()],
        "logical_devices": [d.name for d in tf.config.list_logical_devices()],
        "gpus": len(gpus),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "auto_strategy": auto_choice(),
        "cluster": cluster_source(),
        "cpu": cpu["model"],
        "cpu_flags": cpu["flags"],
        "execution_on_auto": "measured per run (see dlintro tune CONFIG)",
    }


def build(dist: Any) -> tf.distribute.Strategy:
    """The tf.distribute strategy for a `distribution` config section."""
    if dist.logical_cpus:
        set_logical_cpus(dist.logical_cpus)
    name = auto_choice() if dist.strategy == "auto" else dist.strategy
    if name == "default":
        return tf.distribute.get_strategy()
    if name in ("one_device", "mirrored"):  # (listing logical devices starts the runtime)
        gpus = tf.config.list_logical_devices("GPU")
        if name == "one_device":
            return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
        devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        resolver = cluster_resolver()
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING
        )
        return tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver, communication_options=options
        )
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.NotFoundError) as exc:
            raise UserError(f"distribution.strategy tpu: no TPU found ({exc})") from None
        return tf.distribute.TPUStrategy(resolver)
    raise UserError(f"unknown distribution.strategy '{name}'")


def is_distributed(strategy: tf.distribute.Strategy) -> bool:
    """True for every strategy but the default one (which runs steps without strategy.run)."""
    return strategy is not tf.distribute.get_strategy() or tf.distribute.has_strategy()


def num_workers(strategy: tf.distribute.Strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    return max(1, len(resolver.cluster_spec().as_dict().get("worker", [])))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Only the chief (worker 0) writes the run directory, logs and models."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )


@dataclass(frozen=True)
class Plan:
    """The batch and learning-rate arithmetic of a run on `replicas` replicas."""

    replicas: int
    workers: int
    global_batch: int
    per_replica: int
    base_lr: float
    lr: float
    rule: str

    def line(self) -> str:
        """e.g. 'global batch 512 = 4 replicas x 128; lr 0.1 -> 0.4 (linear)'."""
        lr = f"lr {self.base_lr:g}" + (
            f" -> {self.lr:g} ({self.rule})" if self.lr != self.base_lr else " (not scaled)"
        )
        where = f"{self.replicas} replica{'s' if self.replicas > 1 else ''}"
        if self.workers > 1:
            where += f" on {self.workers} workers"
        return f"global batch {self.global_batch} = {where} x {self.per_replica}; {lr}"

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"line": self.line()}


def plan(cfg: Any, strategy: tf.distribute.Strategy) -> Plan:
    """Global and per-replica batch and the scaled learning rate for `cfg` on `strategy`."""
    replicas = strategy.num_replicas_in_sync
    dist, batch = cfg.distribution, cfg.data.batch_size
    global_batch = batch * replicas if dist.batch == "per_replica" else batch
    if global_batch % replicas:
        raise UserError(
            f"data.batch_size: the global batch {global_batch} does not split evenly over "
            f"{replicas} replicas; use a multiple of {replicas} or distribution.batch: per_replica"
        )
    k = global_batch / batch
    factor = {"none": 1.0, "linear": k, "sqrt": math.sqrt(k)}[dist.lr_scaling]
    base = cfg.optimizer.learning_rate
    return Plan(
        replicas=replicas,
        workers=num_workers(strategy),
        global_batch=global_batch,
        per_replica=global_batch // replicas,
        base_lr=base,
        lr=base * factor,
        rule=dist.lr_scaling,
    )
