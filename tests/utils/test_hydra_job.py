"""xnet.utils.hydra_job: the sweep's axes from a multirun.yaml that may be missing or half written."""

import logging

from omegaconf import OmegaConf

from xnet.utils.hydra_job import swept_keys


def test_the_command_lines_lists_are_axes_and_its_single_values_are_not(tmp_path):
    saved = tmp_path / "multirun.yaml"
    OmegaConf.save({"hydra": {"overrides": {"task": ["model.net.depth=2,3", "model.net.xunit.kernel_size=9"]}}}, saved)
    params = {"model.net.depth": "2,3,4", "model.net.xunit.kernel_size": "1,5,9"}
    assert swept_keys(saved, params) == {"model.net.depth"}


def test_a_half_written_multirun_yaml_leaves_the_experiments_axes_and_a_warning(tmp_path, caplog):
    saved = tmp_path / "multirun.yaml"  # another sweep into the same dir is writing it this moment
    saved.write_text("hydra:\n  overrides:\n    task:\n    - model.net.depth=2,3\n  job: a: b\n")
    with caplog.at_level(logging.WARNING, logger="xnet.utils.hydra_job"):
        assert swept_keys(saved, {"xunit": "paper,silu"}) == {"xunit"}
    assert "multirun.yaml: unreadable" in caplog.text
    assert swept_keys(tmp_path / "none.yaml", {"xunit": "paper,silu"}) == {"xunit"}
