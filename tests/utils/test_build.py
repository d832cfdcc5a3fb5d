"""Config → objects: nets written in an older config form still build."""

from __future__ import annotations

import pytest
from conftest import CONF
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from xnet.archs.xunit import XUnit
from xnet.utils.build import build_net
from xnet.utils.config import current_net_config

OLD_XDNCNN = {
    "_target_": "xnet.archs.dncnn.XDnCNN",
    "channels": 1,
    "num_blocks": 1,
    "width": 4,
    "xunit_kernel": 5,
    "xunit": {"gate": "tanh"},
}


def test_the_old_xunit_kernel_key_moves_into_the_xunit_node() -> None:
    new = current_net_config(OLD_XDNCNN)
    assert new["xunit"] == {"kernel_size": 5, "gate": "tanh"} and "xunit_kernel" not in new
    assert current_net_config(new) == new
    assert current_net_config({**OLD_XDNCNN, "xunit": None})["xunit"] == {"kernel_size": 5}


def test_a_stored_config_of_the_old_form_builds_the_same_net() -> None:
    """Checkpoints and zoo entries saved before XUnitConfig carry ``xunit_kernel``: they must load."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["model=xdncnn"])
    with open_dict(cfg):
        cfg.model.net = OLD_XDNCNN
    units = [m for m in build_net(cfg).modules() if isinstance(m, XUnit)]
    assert len(units) == 2 and all(u.kernel_size == 5 and u.gate_kind == "tanh" for u in units)


@pytest.mark.parametrize("size", [2, 4])
def test_an_even_kernel_size_is_named(size):
    from conftest import TINY, compose

    from xnet.protocol.errors import ConfigError
    from xnet.utils.build import build_net

    with pytest.raises(ConfigError, match=rf"model=xdncnn \(model.net\): kernel_size={size}: must be odd"):
        build_net(compose("train", [*TINY, f"model.net.kernel_size={size}", "paths.output_dir=/tmp/unused"]))
