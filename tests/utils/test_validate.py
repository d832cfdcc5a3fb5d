"""Config values are checked up front: one ConfigError naming the key and value, not a torch
error, a ZeroDivisionError or a silent ``images=-1`` later."""

import pytest
from conftest import CONF, TINY, compose, run_train

from xnet.protocol.errors import ConfigError
from xnet.utils.validate import problems, validate


def train_cfg(*overrides):
    return compose("train", [*TINY, "paths.output_dir=/tmp/unused", *overrides])


def eval_cfg(*overrides):
    return compose("eval", ["experiment=demo", "weights=x.pth", "paths.output_dir=/tmp/unused", *overrides])


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.patch_size=0", "data.patch_size=0: must be >= 1"),
        ("data.val_limit=0", "data.val_limit=0: must be >= 1"),
        ("data.batch_size=-4", "data.batch_size=-4: must be >= 1"),
        ("data.patch_size=abc", "data.patch_size='abc': must be an integer"),
        ("trainer.max_steps=0", "trainer.max_steps=0: must be >= 1 (or -1)"),
        ("optim.lr=0", "optim.lr=0: must be > 0"),
        ("optim.lr=nan", "optim.lr=nan: must be a finite number"),  # nan passed every comparison
        ("optim.lr=inf", "optim.lr=inf: must be a finite number"),
        ("optim.weight_decay=-inf", "optim.weight_decay=-inf: must be a finite number"),
        ("optim.weight_decay=-0.1", "optim.weight_decay=-0.1: must be >= 0"),
    ],
)
def test_bad_training_values_are_named(override, message):
    with pytest.raises(ConfigError) as info:
        validate(train_cfg(override), "train")
    assert str(info.value) == message


def test_every_bad_value_is_reported_at_once():
    assert problems(train_cfg("data.patch_size=0", "data.val_limit=0"), "train") == [
        "data.patch_size=0: must be >= 1",
        "data.val_limit=0: must be >= 1",
    ]


@pytest.mark.parametrize("limit", [0, -1])
def test_evaluate_limit_must_be_positive(limit):
    with pytest.raises(ConfigError, match=f"limit={limit}: must be >= 1"):
        validate(eval_cfg(f"limit={limit}"), "evaluate")


def test_an_sr_crop_must_be_a_multiple_of_the_scale():
    cfg = compose(
        "train", ["task=sr", "model=xsrcnn_f", "task.scale=3", "data.patch_size=40", "paths.output_dir=/tmp/unused"]
    )
    with pytest.raises(ConfigError, match="data.patch_size=40: must be a multiple of the SR scale 3"):
        validate(cfg, "train")


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_shipped_experiments_pass(experiment):
    cfg = compose("train", [f"experiment={experiment}", "paths.output_dir=/tmp/unused"])
    assert problems(cfg, "train") == []


def test_defaults_pass_for_every_entry_point():
    assert problems(eval_cfg(), "evaluate") == []
    assert problems(compose("restore", ["weights=x", "input=x", "paths.output_dir=/tmp/unused"]), "restore") == []
    assert problems(compose("export", ["weights=x", "paths.output_dir=/tmp/unused"]), "export") == []


def test_training_checks_before_building_anything(tmp_path):
    """Before this check, patch_size=0 died in torch and val_limit=0 in a division by zero."""
    with pytest.raises(ConfigError, match="data.val_limit=0"):
        run_train(tmp_path, [*TINY, "data.val_limit=0"])
    assert not (tmp_path / "checkpoints").exists()


def test_evaluate_refuses_a_negative_limit_instead_of_scoring_minus_one_images(tmp_path):
    from xnet.evaluate import evaluate

    with pytest.raises(ConfigError, match="limit=-1"):
        evaluate(
            compose(
                "eval",
                ["experiment=demo", "weights=x.pth", "data/test=sample", "limit=-1", f"paths.output_dir={tmp_path}"],
            )
        )


def test_a_classical_restorer_is_not_trained():
    cfg = compose("train", ["model=bm3d", "paths.output_dir=/tmp/unused"])
    with pytest.raises(ConfigError, match="model=bm3d is a classical restorer"):
        validate(cfg, "train")
