"""Config validation: every error path gives one line naming the field and what is allowed."""

import os

import pytest

from sdis_tf import config_schema as cs
from sdis_tf import experiments
from sdis_tf.config_files import load_config
from sdis_tf.experiments import quickstart

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quickstart_config(preset=""):
    return load_config(os.path.join(ROOT, "configs", "quickstart.py"), preset)


def _problems(mutate):
    config = _quickstart_config("tiny").to_dict()
    mutate(config)
    return cs.check(config, quickstart.SCHEMA, quickstart.CONSTRAINTS)


@pytest.mark.parametrize("preset", ["", "quick", "tiny"])
def test_presets_are_valid(preset):
    assert cs.check(_quickstart_config(preset), quickstart.SCHEMA, quickstart.CONSTRAINTS) == []


def test_unknown_preset_raises():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        _quickstart_config("huge")


def _set(path, value):
    def mutate(config):
        *parents, leaf = path.split(".")
        for key in parents:
            config = config[key]
        config[leaf] = value
    return mutate


def _delete(path):
    def mutate(config):
        *parents, leaf = path.split(".")
        for key in parents:
            config = config[key]
        del config[leaf]
    return mutate


CASES = [
    # (mutation, field named, fragment of what is allowed)
    (_set("data.rhoo", 0.5), "config.data.rhoo: unknown key; did you mean config.data.rho? "
     "allowed keys in config.data", "allowed keys in config.data"),
    (_set("extra", 1), "config.extra: unknown key", "allowed keys in config:"),
    (_delete("data.rho"), "config.data.rho: missing", "[0, 1)"),
    (_delete("train"), "config.train: missing", "a section"),
    (_set("train", 3), "config.train = 3", "must be a section"),
    (_set("seed", "zero"), "config.seed = 'zero' has type str", "an int in [0, inf]"),
    (_set("seed", True), "config.seed = True has type bool", "an int"),
    (_set("train.steps", 2.5), "config.train.steps = 2.5 has type float", "an int in [1, inf]"),
    (_set("data.rho", "high"), "config.data.rho = 'high' has type str", "a finite float in [0, 1)"),
    (_set("train.jit_compile", 1), "config.train.jit_compile = 1 has type int", "a bool"),
    (_set("heads.ridge.eps", -1e-3), "config.heads.ridge.eps = -0.001 is out of range", "[0, inf)"),
    (_set("heads.lasso.eps", -0.1), "config.heads.lasso.eps = -0.1 is out of range", "[0, 1)"),
    (_set("tasks.noise_scale", -1.0), "config.tasks.noise_scale = -1.0 is out of range", "[0, inf)"),
    (_set("data.rho", 1.0), "config.data.rho = 1.0 is out of range", "[0, 1)"),
    (_set("data.rho", -0.2), "config.data.rho = -0.2 is out of range", "[0, 1)"),
    (_set("eval.rho", 1.5), "config.eval.rho = 1.5 is out of range", "[0, 1)"),
    (_set("data.rho", float("nan")), "config.data.rho = nan is not finite", "[0, 1)"),
    (_set("data.n_support", 0), "config.data.n_support = 0 is out of range", "[1, inf]"),
    (_set("data.dim", -4), "config.data.dim = -4 is out of range", "[1, inf]"),
    (_set("train.num_tasks", 0), "config.train.num_tasks = 0 is out of range", "[1, inf]"),
    (_set("optimizer.learning_rate", 0.0), "config.optimizer.learning_rate = 0.0 is out of range",
     "(0, inf)"),
    (_set("tasks.kind", "binomial"), "config.tasks.kind = 'binomial' is not allowed",
     "'bernoulli', 'block', 'fixed_size', 'laplace', 'gauss'"),
    (_set("distribute", "horovod"), "config.distribute = 'horovod' is not allowed",
     "'default', 'mirrored', 'multiworker', 'tpu'"),
    (_set("method", "ols"), "config.method = 'ols' is not allowed", "'lasso', 'ridge'"),
    (_set("model.hidden", (16, 0)), "config.model.hidden = (16, 0) item 1 (0) is out of range",
     "[1, inf]"),
    (_set("data.dim", 4), "config.data.dim = 4 must be >= config.data.num_latents = 6", "injective"),
    (lambda c: c["tasks"].update(kind="block", block_size=4),
     "config.tasks.block_size = 4 must divide", "latents 6"),
    (lambda c: c["tasks"].update(kind="fixed_size", support_size=7),
     "config.tasks.support_size = 7 must be in [1, 6]", "number of latents"),
]


@pytest.mark.parametrize("mutate,field,allowed", CASES, ids=[c[1][:40] for c in CASES])
def test_each_problem_is_one_clear_line(mutate, field, allowed):
    problems = _problems(mutate)
    assert len(problems) == 1, problems
    assert problems[0].startswith(field), problems[0]
    assert allowed in problems[0]


def test_tuple_spec_checks_length_items_and_duplicates():
    spec = cs.Tuple(cs.Choice("lasso", "ridge"), unique=True)
    assert spec.problem(("ridge", "lasso")) is None
    assert spec.problem(()).startswith("has 0 items; allowed: a tuple of >= 1 items")
    assert spec.problem(["lasso", "lasso"]).startswith("has duplicates; allowed:")
    assert spec.problem(("lasso", "ols")) == (
        "item 1 ('ols') is not allowed; allowed: one of 'lasso', 'ridge'")
    assert spec.problem("lasso").startswith("has type str")


def test_validate_raises_one_error_listing_every_problem():
    config = _quickstart_config("tiny").to_dict()
    config["data"]["rho"] = 1.0
    config["train"]["steps"] = 0
    with pytest.raises(cs.ConfigError) as info:
        cs.validate(config, quickstart.SCHEMA, quickstart.CONSTRAINTS)
    message = str(info.value)
    assert message.count("\n  config.") == 2
    assert "config.data.rho = 1.0" in message and "config.train.steps = 0" in message


def test_cross_field_checks_wait_for_valid_fields():
    # dim < num_latents would also be reported if constraints ran on invalid types.
    problems = _problems(lambda c: c["data"].update(dim=4, num_latents="six"))
    assert problems == ["config.data.num_latents = 'six' has type str; allowed: an int in [1, inf]"]


def test_registry_rejects_unknown_experiment_listing_choices(tmp_path):
    config = _quickstart_config("tiny")
    config.experiment = "quickstrat"
    with pytest.raises(cs.ConfigError, match=r"config.experiment = 'quickstrat' is not an "
                                             r"experiment; allowed: .*'quickstart'"):
        experiments.run(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_registry_validates_before_any_work(tmp_path):
    config = _quickstart_config("tiny")
    config.data.rho = 1.0
    with pytest.raises(cs.ConfigError, match=r"config.data.rho = 1.0 is out of range"):
        experiments.run(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_registry_lists_and_gets_experiments():
    assert "quickstart" in experiments.available()
    assert experiments.get("quickstart") is quickstart
    with pytest.raises(cs.ConfigError, match="allowed: .*'quickstart'"):
        experiments.get("../etc")
