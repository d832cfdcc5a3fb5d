"""xnet.protocol.quantize: the one rounding rule (MATLAB's, half away from zero), and that it is the only one."""

import ast

import torch
from conftest import REPO

from xnet.protocol.metrics import image_metrics
from xnet.protocol.quantize import quantize_uint8, uint8_levels

LEVELS = torch.tensor([0, 2, 10, 100, 128, 200, 254])


def halfway() -> torch.Tensor:
    """float32 images whose value × 255 is exactly ``level + 0.5``: where the two rules differ."""
    x = ((LEVELS + 0.5) / 255).float()
    assert torch.equal(x * 255, LEVELS + 0.5)  # really a tie in float32
    return x


def test_halves_round_up_as_matlab_uint8_does():
    """MATLAB: uint8(2.5) == 3, im2uint8 of a single image is uint8(x * 255 + 0.5). torch.round rounds
    these halves to even (2.5 → 2, 10.5 → 10)."""
    assert torch.equal(uint8_levels(halfway()), (LEVELS + 1).float())
    assert not torch.equal(torch.round(halfway() * 255), (LEVELS + 1).float())  # the rule is a choice
    assert torch.equal(quantize_uint8(halfway()), (LEVELS + 1) / 255.0)
    assert uint8_levels(torch.tensor([-0.2, 1.7])).tolist() == [0.0, 255.0]  # clipped first


def test_scores_follow_the_matlab_protocol_on_a_tie():
    """DnCNN's published test code scores im2uint8(output) of a single-precision output: an output at
    level 2.5 is level 3, so against a target of level 3 it is perfect (the 100 dB cap); with
    half-to-even it would be one level off everywhere (48.13 dB)."""
    output = torch.full((1, 8, 8), 2.5 / 255, dtype=torch.float32)
    assert torch.equal(output * 255, torch.full_like(output, 2.5))
    target = torch.full((1, 8, 8), 3 / 255)
    assert image_metrics(output, target)["psnr"].item() == 100.0


def rounding_calls(tree: ast.AST) -> list[str]:
    """Array/tensor rounding written out: ``x.round()``, ``torch.round``/``np.round``, ``floor(... + 0.5)``."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        if name.endswith(".round") or (name.endswith("floor") and "+ 0.5" in ast.unparse(node)):
            found.append(f"{node.lineno}: {ast.unparse(node)[:60]}")
    return found


def test_the_rule_is_written_once():
    """Every step that rounds to uint8 levels (outputs, Y, bicubic inputs, PNGs, 16-bit files) calls
    xnet.protocol.quantize; Python's round() of a number (display, step counts) is not image rounding."""
    written = {
        str(p.relative_to(REPO)): calls
        for p in sorted((REPO / "xnet").rglob("*.py"))
        if (calls := rounding_calls(ast.parse(p.read_text())))
    }
    assert list(written) == ["xnet/protocol/quantize.py"], written
