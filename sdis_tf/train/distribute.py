"""tf.distribute helpers: strategy construction and logical CPU devices for tests."""

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
