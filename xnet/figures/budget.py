r"""Fixed-budget architectures for Fig 4: how much of a parameter budget goes into the activations.

The paper fixes the total at 99,136 parameters and plots PSNR against the share of them spent in
the activations (xUnits: first BN + depthwise r×r conv + second BN). A ConvNet (ReLU, no activation
parameters) is the 0 % end; xNets of different depth / width / xUnit kernel fill the rest. Each
point is its family's own ``conf/model/<name>.yaml`` with depth, width and r set.

Counting follows :func:`xnet.archs.params.count_paper_params` (conv weights and BN affine pairs, no
conv biases). The closed form :func:`net_params` equals that count on the instantiated model (see
``tests/test_budget.py``); :func:`check` instantiates and compares.

    python -m xnet.figures.budget --total 99136 --shares 0 10 20 30 40 50
    python -m xnet.figures.budget --total 99136 --shares 0 10 20 30 40 50 --overrides
    python -m xnet.figures.budget --total 99136 --shares 0 10 20 30 40 50 \
        --write-experiment conf/experiment/fig4_archs.yaml
    python -m xnet.figures.budget --total 50000 --shares 0 20 40 \
        --write-experiment conf/experiment/fig4_50k.yaml --base fig4_quick

The search: every (depth, width, r) of the family whose count lies within ``tol`` (1 %) of the
budget is a candidate; the chosen one minimises ``|share - target|`` (percentage points) plus
``depth_weight`` per layer away from ``prefer_depth`` (so the curve does not jump between very
different depths for a fraction of a point), then the distance to the budget.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import OmegaConf
from torch import nn

#: the conf/model families the budget is spent on: a ReLU net (0 % in activations) and the xNet
MODELS = ("convnet", "xnet")


@functools.cache
def family_config(model: str) -> dict:
    """``conf/model/<model>.yaml``: the one definition of a family (its ``net`` node, layout
    switches and kernel sizes)."""
    from xnet.utils.config import conf_dir

    return OmegaConf.to_container(OmegaConf.load(conf_dir() / "model" / f"{model}.yaml"))  # type: ignore[return-value]


def xunit_params(
    width: int, xunit_kernel: int, pre_norm: bool = True, post_norm: bool = True, depthwise: bool = True
) -> int:
    """One xUnit: BN (2w) + depthwise r×r (w·r², bias not counted) + BN (2w)."""
    return width * ((xunit_kernel * xunit_kernel if depthwise else 0) + 2 * pre_norm + 2 * post_norm)


def net_params(
    depth: int, width: int, xunit_kernel: int | None, channels: int = 1, kernel_size: int = 3, block_norm: bool = True
) -> tuple[int, int]:
    """``(total, activation params)`` of Conv+act, (depth-2) × [Conv, BN, act], Conv: a ConvNet
    (``xunit_kernel=None``: ReLUs) or an xNet with r×r xUnits (the authors' layout, whose BN comes
    before each inner conv: the same count; ``block_norm=False`` without it)."""
    k2 = kernel_size * kernel_size
    convs = 2 * channels * width * k2 + (depth - 2) * (width * width * k2 + 2 * width * block_norm)
    act = 0 if xunit_kernel is None else (depth - 1) * xunit_params(width, xunit_kernel)
    return convs + act, act


def activation_params(net: nn.Module) -> int:
    """Parameters inside the xUnits of ``net`` (paper convention); 0 for ReLU nets."""
    from xnet.archs.params import count_paper_params
    from xnet.archs.xunit import XUnit

    return sum(count_paper_params(m) for m in net.modules() if isinstance(m, XUnit))


@dataclass(frozen=True)
class Arch:
    """One architecture: a conf/model family at some depth, width and xUnit kernel."""

    model: str  # the conf/model option
    depth: int
    width: int
    xunit_kernel: int | None  # None: the family has no xUnits
    params: int
    act_params: int
    target_share: float | None = None

    @property
    def share(self) -> float:
        """Activation parameters as a percentage of the total."""
        return 100.0 * self.act_params / self.params

    @property
    def key(self) -> str:
        """A short, override-friendly name: ``convnet_d5_w60`` / ``xnet_d4_w57_r15``."""
        base = f"{self.model}_d{self.depth}_w{self.width}"
        return base if self.xunit_kernel is None else f"{base}_r{self.xunit_kernel}"

    def net_overrides(self) -> dict:
        """What this point sets in its family's ``model.net``."""
        xunit = {} if self.xunit_kernel is None else {"xunit": {"kernel_size": self.xunit_kernel}}
        return {"depth": self.depth, "width": self.width, **xunit}

    def model_config(self) -> dict:
        """The whole ``model`` node: the family's config with this point's depth, width and r."""
        merged = OmegaConf.merge(family_config(self.model), {"net": self.net_overrides()})
        return OmegaConf.to_container(merged)  # type: ignore[return-value]

    def build(self, channels: int = 1) -> nn.Module:
        from hydra.utils import instantiate

        return instantiate({**self.model_config()["net"], "channels": channels}, _convert_="all")

    def overrides(self) -> str:
        """Command-line overrides selecting this architecture with the stock model configs."""
        ov = f"model={self.model} model.net.depth={self.depth} model.net.width={self.width}"
        return ov if self.xunit_kernel is None else f"{ov} model.net.xunit.kernel_size={self.xunit_kernel}"


def candidates(
    total: int,
    model: str,
    tol: float = 0.01,
    depths: Iterable[int] = range(2, 21),
    widths: Iterable[int] = range(4, 257),
    kernels: Iterable[int] = range(1, 32, 2),
    channels: int = 1,
) -> list[Arch]:
    """Every architecture of ``model`` whose count is within ``tol`` (relative) of ``total``; the
    xUnit kernels are searched where the family's config has an ``xunit`` node."""
    net = family_config(model)["net"]
    rs = list(kernels) if "xunit" in net else [None]
    layout = {"kernel_size": net["kernel_size"], "block_norm": net.get("block_norm", True)}
    lo, hi = total * (1 - tol), total * (1 + tol)
    out = []
    for d, w, r in itertools.product(depths, list(widths), rs):
        n, a = net_params(d, w, r, channels, **layout)
        if lo <= n <= hi:
            out.append(Arch(model, d, w, r, n, a))
    return out


def solve(
    total: int,
    share: float,
    tol: float = 0.01,
    depths: Iterable[int] = range(2, 21),
    widths: Iterable[int] = range(4, 257),
    kernels: Iterable[int] = range(1, 32, 2),
    prefer_depth: int | None = 4,
    depth_weight: float = 0.5,
    channels: int = 1,
    prefer_width: int | None = None,
    width_weight: float = 0.25,
    models: Sequence[str] = MODELS,
) -> Arch:
    """The architecture for one target share (percent): share 0 is a net without activation
    parameters, anything else one with xUnits. ``prefer_width`` (the paper's cross-section: 64
    channels) costs ``width_weight`` percentage points per channel away from it."""
    depths, widths, kernels = list(depths), list(widths), list(kernels)
    found = (a for m in models for a in candidates(total, m, tol, depths, widths, kernels, channels))
    pool = [a for a in found if (a.act_params == 0) == (share <= 0)]
    if not pool:
        kind = "net without xUnits" if share <= 0 else "net with xUnits"
        raise ValueError(f"no {kind} within {100 * tol:g}% of {total:,} parameters in the search space")

    def cost(a: Arch) -> tuple[float, int, int]:
        depth_pen = depth_weight * abs(a.depth - prefer_depth) if prefer_depth is not None else 0.0
        width_pen = width_weight * abs(a.width - prefer_width) if prefer_width is not None else 0.0
        return (abs(a.share - share) + depth_pen + width_pen, abs(a.params - total), a.depth)

    best = min(pool, key=cost)
    return Arch(**{**asdict(best), "target_share": float(share)})


def solve_all(total: int, shares: Sequence[float], **kw) -> list[Arch]:
    return [solve(total, s, **kw) for s in shares]


def exact_archs(
    total: int,
    width: int,
    depths: Iterable[int] = range(2, 21),
    kernels: Iterable[int] = range(1, 32, 2),
    channels: int = 1,
    models: Sequence[str] = MODELS,
) -> list[Arch]:
    """Every net with xUnits of ``width`` channels whose count is exactly ``total`` (e.g. the paper's
    Fig 4 budget: 4 layers, 64 channels, r = 11 → 99,136), as points of their own share."""
    found = (a for m in models for a in candidates(total, m, 0.0, depths, [width], kernels, channels))
    return [
        Arch(**{**asdict(a), "target_share": round(a.share, 2)}) for a in found if a.act_params and a.params == total
    ]


def with_exact(archs: Sequence[Arch], exact: Sequence[Arch]) -> list[Arch]:
    """``archs`` plus the exact points not already there, ordered by share."""
    keys = {a.key for a in archs}
    return sorted([*archs, *(e for e in exact if e.key not in keys)], key=lambda a: a.share)


def check(arch: Arch, channels: int = 1) -> int:
    """Instantiate ``arch`` and return its paper-convention count; raises if it differs from the formula."""
    from xnet.archs.params import count_paper_params

    net = arch.build(channels)
    n, a = count_paper_params(net), activation_params(net)
    if (n, a) != (arch.params, arch.act_params):
        raise AssertionError(f"{arch.key}: formula gives {arch.params:,}/{arch.act_params:,}, model has {n:,}/{a:,}")
    return n


def table(archs: Sequence[Arch], total: int) -> str:
    head = (
        f"{'target %':>8} {'share %':>8} {'model':<8} {'depth':>5} {'width':>5} {'r':>3} {'params':>9} "
        f"{'vs budget':>9}  key (* exact)"
    )
    lines = [head, "-" * len(head)]
    for a in archs:
        r = "-" if a.xunit_kernel is None else str(a.xunit_kernel)
        dev = 100.0 * (a.params - total) / total
        lines.append(
            f"{a.target_share:>8g} {a.share:>8.2f} {a.model:<8} {a.depth:>5} {a.width:>5} {r:>3} {a.params:>9,} "
            f"{dev:>+8.2f}%  {a.key}{' *' if a.params == total else ''}"
        )
    return "\n".join(lines)


def point_name(a: Arch) -> str:
    """Sweep value for one Fig 4 point: ``s00_convnet_d3_w104``, ``s10_xnet_d3_w98_r7``, ...

    The architecture is part of the name, so tables written for other budgets never collide with
    (and merge into) the entries of ``fig4_archs.yaml`` when an experiment builds on ``fig4``.
    """
    return f"s{round(a.target_share):02d}_{a.key}"


def experiment_yaml(
    archs: Sequence[Arch], total: int, base: str | None = None, command: str = "", name: str | None = None
) -> str:
    """A ``conf/experiment`` file sweeping every architecture (one job per share).

    Without ``base`` it holds the architectures only (``fig4.yaml`` includes such a table, written
    to ``fig4_archs.yaml``); with ``base`` (e.g. ``fig4`` or ``fig4_quick``) it is a complete
    experiment: that recipe with these architectures.
    """
    import yaml

    names = [point_name(a) for a in archs]
    if len(set(names)) != len(names):
        raise ValueError(f"two targets give the same point name: {names}")
    lines = [
        "# @package _global_",
        f"# Fig 4 architectures: a fixed budget of {total:,} parameters (paper convention), spending a",
        "# growing share of it in the activations. "
        "Written by `python -m xnet.figures.budget` (regenerate, don't edit):",
        f"#   {command}" if command else "#   python -m xnet.figures.budget ...",
    ]
    for a in archs:
        exact = (
            ", exactly the budget" if a.params == total else f", {100 * (a.params - total) / total:+.2f}% of the budget"
        )
        lines.append(f"#   {point_name(a):<22} {a.params:>7,} params{exact}, {a.share:5.2f}% in activations")
    body: dict = {}
    if base:
        body["defaults"] = [base, "_self_"]
        if name:
            body["name"] = name
    body.update(
        {
            "arch": names[0],
            "archs": {n: a.model_config() for n, a in zip(names, archs)},
            "model": "${archs.${arch}}",
            "hydra": {"sweeper": {"params": {"arch": ",".join(names)}}},
        }
    )
    return "\n".join(lines) + "\n" + yaml.safe_dump(body, sort_keys=False, default_flow_style=None, width=200)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m xnet.figures.budget", description=__doc__.split("\n\n")[0])
    p.add_argument("--total", type=int, default=99136, help="parameter budget (paper convention)")
    p.add_argument(
        "--shares", type=float, nargs="+", default=[0, 10, 20, 30, 40, 50], help="target activation shares, percent"
    )
    p.add_argument("--tol", type=float, default=0.01, help="allowed relative deviation from the budget")
    p.add_argument("--depths", type=int, nargs=2, default=[2, 20], metavar=("MIN", "MAX"))
    p.add_argument("--widths", type=int, nargs=2, default=[4, 256], metavar=("MIN", "MAX"))
    p.add_argument("--width-step", type=int, default=1, help="only widths divisible by this")
    p.add_argument("--max-kernel", type=int, default=31, help="largest xUnit kernel r (odd)")
    p.add_argument("--prefer-depth", type=int, default=4, help="tie-break towards this depth (-1: none)")
    p.add_argument(
        "--depth-weight", type=float, default=0.5, help="percentage points of share error worth one layer of depth"
    )
    p.add_argument(
        "--prefer-width", type=int, default=-1, help="tie-break towards this width (the paper's Fig 4: 64; -1: none)"
    )
    p.add_argument(
        "--width-weight", type=float, default=0.25, help="percentage points of share error worth one channel of width"
    )
    p.add_argument("--exact", action="store_true", help="add every --prefer-width xNet that meets the budget exactly")
    p.add_argument("--overrides", action="store_true", help="also print Hydra overrides for each architecture")
    p.add_argument("--write-experiment", type=Path, help="write an conf/experiment file sweeping the architectures")
    p.add_argument(
        "--base", help="with --write-experiment: the experiment whose recipe it extends (e.g. fig4, fig4_quick)"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[Arch]:
    args = parse_args(argv)
    step = max(1, args.width_step)
    w0 = -(-args.widths[0] // step) * step
    archs = solve_all(
        args.total,
        args.shares,
        tol=args.tol,
        depths=range(args.depths[0], args.depths[1] + 1),
        widths=range(w0, args.widths[1] + 1, step),
        kernels=range(1, args.max_kernel + 1, 2),
        prefer_depth=None if args.prefer_depth < 0 else args.prefer_depth,
        depth_weight=args.depth_weight,
        prefer_width=None if args.prefer_width < 0 else args.prefer_width,
        width_weight=args.width_weight,
    )
    if args.exact:
        if args.prefer_width < 0:
            raise SystemExit("--exact needs --prefer-width (the width of the exact points)")
        archs = with_exact(
            archs,
            exact_archs(
                args.total,
                args.prefer_width,
                range(args.depths[0], args.depths[1] + 1),
                range(1, args.max_kernel + 1, 2),
            ),
        )
    for a in archs:
        check(a)  # the closed form must agree with the instantiated model
    print(f"budget {args.total:,} parameters (±{100 * args.tol:g}%), counts verified on the instantiated models")
    print(table(archs, args.total))
    if args.overrides:
        print()
        for a in archs:
            print(f"{point_name(a)}: {a.overrides()}")
    if args.write_experiment:
        args.write_experiment.parent.mkdir(parents=True, exist_ok=True)
        command = "python -m xnet.figures.budget " + " ".join(argv if argv is not None else sys.argv[1:])
        args.write_experiment.write_text(
            experiment_yaml(archs, args.total, base=args.base, command=command, name=args.write_experiment.stem)
        )
        how = (
            f"run: python -m xnet.train -m experiment={args.write_experiment.stem}"
            if args.base
            else "include it in an experiment's defaults list, as fig4.yaml does"
        )
        print(f"\nwrote {args.write_experiment} ({how})")
    return archs


def cli() -> int:
    """The ``xnet-budget`` command (``main`` returns the architectures, for callers)."""
    main(sys.argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(cli())
