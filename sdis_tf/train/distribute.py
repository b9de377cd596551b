"""tf.distribute helpers: strategy creation, chief detection, logical CPU devices."""

import tensorflow as tf


def split_cpu(num_devices: int) -> list:
    """Splits the first physical CPU into `num_devices` logical devices.

    Must run before TensorFlow initialises its devices (first op or first
    `tf.config.list_logical_devices` call). Used by tests to get a real
    `MirroredStrategy` with several replicas on a CPU-only machine.

    Returns:
      The list of logical CPU devices.
    Raises:
      ValueError: if `num_devices` < 1.
      RuntimeError: if devices were already initialised with another split.
    """
    if num_devices < 1:
        raise ValueError(f"num_devices must be >= 1, got {num_devices}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    configs = [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)]
    try:
        tf.config.set_logical_device_configuration(cpu, configs)
    except RuntimeError:
        existing = tf.config.list_logical_devices("CPU")
        if len(existing) != num_devices:
            raise
    return tf.config.list_logical_devices("CPU")


STRATEGIES = ("default", "mirrored", "multiworker", "tpu")


def create_strategy(name: str, *, tpu: str = "") -> tf.distribute.Strategy:
    """Creates the `tf.distribute` strategy named by `config.distribute`.

    - "default": no distribution (the current default strategy, one device).
    - "mirrored": `MirroredStrategy` over all local GPUs, or over all logical
      CPUs when there is no GPU (see `split_cpu`).
    - "multiworker": `MultiWorkerMirroredStrategy`; the cluster comes from the
      `TF_CONFIG` environment variable (one process per machine).
    - "tpu": `TPUStrategy` on the TPU named by `tpu` ("" = the local TPU VM or
      the `TPU_NAME` environment variable).
    """
    if name not in STRATEGIES:
        raise ValueError(f"distribute must be one of {STRATEGIES}. Received: {name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        # Logical CPUs share one memory: reduce on one device. (The default
        # collective ops also work, but their instance keys restart with every
        # strategy and collide when one process builds several of them.)
        return tf.distribute.MirroredStrategy(
            [d.name for d in tf.config.list_logical_devices("CPU")],
            cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def worker_id(strategy: tf.distribute.Strategy) -> int:
    """This process's task id in a multi-worker cluster (0 without a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 0
    return int(resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run directory (summaries, metrics, checkpoints).

    The chief is task "chief" if the cluster has one, else worker 0, else the
    only process.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def replica_share(batch):
    """This replica's share of a global batch (a NamedTuple of tensors, None fields kept):
    tasks [r T/R, (r+1) T/R) of the leading axis on replica r of R (T a multiple of R)."""
    ctx = tf.distribute.get_replica_context()
    replicas = ctx.num_replicas_in_sync
    if replicas == 1:
        return batch
    per_replica = tf.shape(next(t for t in batch if t is not None))[0] // replicas
    start = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * per_replica
    return type(batch)(*(None if t is None else t[start:start + per_replica] for t in batch))
