"""Strategy creation and chief detection (conftest splits the CPU into 2 devices)."""

import pytest
import tensorflow as tf

from sdis_tf.train import distribute


def test_default_and_mirrored_strategies():
    default = distribute.create_strategy("default")
    assert default.num_replicas_in_sync == 1
    assert distribute.is_chief(default) and distribute.worker_id(default) == 0
    mirrored = distribute.create_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == 2
    assert distribute.is_chief(mirrored)


def test_unknown_strategy_lists_the_choices():
    with pytest.raises(ValueError, match="distribute must be one of .*'multiworker', 'tpu'"):
        distribute.create_strategy("horovod")


class _Resolver:
    def __init__(self, task_type, task_id, cluster):
        self.task_type, self.task_id, self._cluster = task_type, task_id, cluster

    def cluster_spec(self):
        return tf.train.ClusterSpec(self._cluster)


class _Strategy:
    def __init__(self, resolver):
        self.cluster_resolver = resolver


@pytest.mark.parametrize("task_type,task_id,has_chief,chief", [
    ("worker", 0, False, True),
    ("worker", 1, False, False),
    ("worker", 0, True, False),
    ("chief", 0, True, True),
])
def test_chief_detection_from_the_cluster(task_type, task_id, has_chief, chief):
    cluster = {"worker": ["a:1", "b:1"], **({"chief": ["c:1"]} if has_chief else {})}
    strategy = _Strategy(_Resolver(task_type, task_id, cluster))
    assert distribute.is_chief(strategy) is chief
    assert distribute.worker_id(strategy) == task_id
