"""Few-shot classification with sparse (group-Lasso SVM) and dense heads: paper Sec. 5.2, Fig. 5.

    # CPU, procedural few-shot set (no download), small conv backbone: dense SVM and the
    # sparse SVM at lam1 = 0.02 / 0.05 / 0.1 lambda_max, 200 steps each (docs/fewshot.md):
    python -m sdis_tf.sweep --config=configs/fewshot.py:cpu --sweep=fig5_cpu \
        --workdir=runs/fewshot_cpu
    # one run, a few minutes (smoke run):
    python -m sdis_tf --config=configs/fewshot.py:quick --workdir=/tmp/fewshot_quick
    # Omniglot and Lake's one-shot benchmark: configs/fewshot_omniglot.py
    # miniImageNet, ResNet-12, MetaOptNet's recipe, every head (GPU; files from MetaOptNet's
    # README):
    python -m sdis_tf.sweep --config=configs/fewshot.py --sweep=fig5 \
        --config.data.root=/data/miniImageNet --workdir=runs/fewshot_mini

The default ("") is MetaOptNet's miniImageNet recipe: ResNet-12 (64-160-320-640,
DropBlock 5, no global pooling), 5-way 15-shot training episodes with 6 queries
per class, 8 episodes per step, 60 epochs of 1000 steps, SGD Nesterov lr 0.1
with factors 1 / 0.06 / 0.012 / 0.0024 from epochs 0 / 20 / 40 / 50, weight
decay 5e-4, label smoothing 0.1; validation on 2000 5-way 5-shot 15-query
episodes every epoch, test on 1000 episodes each of 5-way 1-shot and 5-shot
(`eval.settings`).
CIFAR-FS / FC100: --config.data.dataset=CIFAR-FS --config.data.image_size=32
--config.model.dropblock_size=2.

A trained backbone with other heads (MetaOptNet's test with another head; no training):
--config.eval.backbone_from=runs/X/<run> restores that run's backbone, which is validated
and tested with the head of `method` as usual.
"""

import ml_collections


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    """Presets: "" (miniImageNet, GPU), "cpu" (procedural set, <= 45 min target), "quick",
    "tiny" (tests)."""
    config = ml_collections.ConfigDict()
    config.experiment = "fewshot"
    config.seed = 0
    config.distribute = "default"
    config.method = "sparse_svm"
    config.data = ml_collections.ConfigDict(dict(
        dataset="miniImageNet", root="", images_per_class=60, image_size=84, ways=5,
        train_shots=15, test_shots=5, train_queries=6, test_queries=15, rotations=False,
        lake_runs=""))
    config.model = ml_collections.ConfigDict(dict(
        name="resnet12", channels=(64, 160, 320, 640), drop_rate=0.1, dropblock_size=5,
        ramp_steps=20_000))
    config.heads = ml_collections.ConfigDict(dict(
        scale=1.0,
        sparse_svm=dict(eps=0.1, refit=False, lam2=1.0, smoothing=0.0, tol=1e-4,
                        max_iter=1000),
        dense_svm=dict(lam2=1.0, smoothing=0.0, tol=1e-4, max_iter=1000),
        ridge=dict(lam=50.0 / 75)))   # MetaOptNet-RR's 50 on ||.||^2, n = 75 support images
    config.optimizer = ml_collections.ConfigDict(dict(
        learning_rate=0.1, momentum=0.9, weight_decay=5e-4, boundaries_epochs=(20, 40, 50),
        factors=(1.0, 0.06, 0.012, 0.0024)))
    config.train = ml_collections.ConfigDict(dict(
        epochs=60, steps_per_epoch=1000, episodes_per_batch=8, label_smoothing=0.1,
        jit_compile=False))
    config.eval = ml_collections.ConfigDict(dict(
        val_episodes=2000, test_episodes=1000, batch_episodes=8, settings=("5w1s", "5w5s"),
        backbone_from=""))
    config.checkpoint_every_steps = 500
    config.log_every_seconds = 30.0

    if preset in ("cpu", "quick", "tiny"):
        config.data.update(dataset="procedural", image_size=32, images_per_class=40,
                           train_shots=5, train_queries=6, test_queries=10)
        config.model.update(name="small_conv", channels=(32, 32, 64, 64))
        # lam1 grid of Fig. 5 (eps = lam1 / lambda_max); float32 gaps stall near 1e-3 n.
        config.heads.sparse_svm.update(eps=0.05, tol=1e-3)
        config.heads.dense_svm.tol = 1e-3
        config.heads.ridge.lam = 50.0 / 25
        config.optimizer.update(learning_rate=0.05, boundaries_epochs=(3, 4),
                                factors=(1.0, 0.1, 0.01))
        config.train.update(epochs=5, steps_per_epoch=40, episodes_per_batch=4)
        config.eval.update(val_episodes=200, test_episodes=1000, batch_episodes=20,
                           settings=("5w5s",))
        config.checkpoint_every_steps = 40
    if preset == "quick":
        config.train.update(epochs=2, steps_per_epoch=20)
        config.optimizer.update(boundaries_epochs=(), factors=(1.0,))
        config.eval.update(val_episodes=40, test_episodes=100)
    elif preset == "tiny":
        config.heads.sparse_svm.eps = 0.3
        config.data.update(images_per_class=2, image_size=16, train_shots=1, train_queries=1,
                           test_queries=1, ways=3, test_shots=1)
        config.model.channels = (4, 4)
        config.train.update(epochs=2, steps_per_epoch=2, episodes_per_batch=2)
        config.optimizer.update(boundaries_epochs=(1,), factors=(1.0, 0.1))
        config.eval.update(val_episodes=4, test_episodes=6, batch_episodes=4, settings=("3w1s", "2w1s"))
        config.checkpoint_every_steps = 2
        config.log_every_seconds = 0.0
    elif preset not in ("", "cpu", "quick"):
        raise ValueError(f"unknown preset {preset!r}; allowed: '', 'cpu', 'quick', 'tiny'")
    return config


def get_sweep(name: str, hyper) -> list[dict]:
    """Named sweeps: "fig5" (the sparse SVM at lam1 = 0.05 / 0.1 / 0.2 lambda_max, the dense
    SVM, ridge and prototypes: Fig. 5), "fig5_cpu" (lam1 = 0.02 / 0.05 / 0.1 lambda_max and
    the dense SVM, for the "cpu" preset); see sdis_tf.sweep."""
    sparse = lambda grid: hyper.product([  # noqa: E731
        hyper.fixed("method", "sparse_svm"), hyper.sweep("heads.sparse_svm.eps", grid)])
    if name == "fig5":
        return hyper.chainit([sparse((0.05, 0.1, 0.2)),
                              hyper.sweep("method", ("dense_svm", "ridge", "proto"))])
    if name == "fig5_cpu":
        return hyper.chainit([sparse((0.02, 0.05, 0.1)), hyper.fixed("method", "dense_svm")])
    raise ValueError(f"unknown sweep {name!r}; allowed: 'fig5', 'fig5_cpu'")
