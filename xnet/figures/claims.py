"""The paper's claims about Figs 3, 4 and 6, decided on a sweep's runs.

    python -m xnet.figures.claims --fig3 multirun/fig3_medium --fig4 multirun/fig4_medium --fig6 multirun/fig6_medium \\
        --out results/claims_medium.md

Each claim gets a margin in dB — how far the runs are on the claim's side (negative: on the other side) — and
a verdict against the seed spread, the largest PSNR difference between two seeds of one point in that figure:
*holds* when the margin exceeds the spread, *does not hold* when it is below minus the spread, *undecided*
in between. A figure with no repeated seeds is decided on a spread of 0 and says so. Points are the means over
seeds; only runs with today's initialisation (``init=torch``) count, ablations are reported apart.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xnet.figures.sweep_plots import collect, variant_label

Rows = Sequence[dict[str, Any]]

#: "the gap is small": |xNet r=1 − ConvNet| at equal parameters, dB
SMALL_GAP_DB = 0.1
#: "levels off" / "close to the best": no more than this (or the seed spread, if larger) apart, dB
LEVEL_DB = 0.1
#: "gradients explode": the largest gradient norm at the deepest depth over the shallowest, and over the paper unit's
EXPLODE_FACTOR = 10.0
#: Fig 6's activations from after the paper (issue "beyond the paper"): judged apart, not as the paper's variants
BEYOND_PAPER = ("frelu", "silu")
SHORT_NAMES = {"frelu": "FReLU", "silu": "SiLU"}


@dataclass
class Claim:
    figure: str
    text: str
    margin: float | None  # dB on the claim's side; None: the runs cannot decide it
    evidence: str
    spread: float
    verdict_override: str | None = None  # a claim decided by something other than a PSNR margin

    @property
    def verdict(self) -> str:
        if self.verdict_override:
            return self.verdict_override
        if self.margin is None:
            return "undecided (not enough runs)"
        if self.margin > self.spread:
            return "holds"
        if self.margin < -self.spread:
            return "does not hold"
        return "undecided (within the seed spread)"


# --- the runs, as points ---------------------------------------------------------------------------------
def finished(rows: Rows) -> list[dict[str, Any]]:
    return [r for r in rows if r["status"] == "ok" and r.get("init", "torch") == "torch" and _psnr(r) is not None]


def _psnr(row: dict[str, Any]) -> float | None:
    v = row.get("test/psnr")
    return float(v) if v is not None and math.isfinite(float(v)) else None


def means(rows: Rows, key: Callable[[dict[str, Any]], Any]) -> dict[Any, float]:
    """Mean test PSNR over seeds at each ``key(row)``."""
    by: dict[Any, list[float]] = defaultdict(list)
    for r in finished(rows):
        by[key(r)].append(_psnr(r))
    return {k: sum(v) / len(v) for k, v in by.items()}


def seed_spread(rows: Rows, key: Callable[[dict[str, Any]], Any]) -> tuple[float, int]:
    """The largest PSNR difference between seeds of one point, and how many points have several seeds."""
    by: dict[Any, list[float]] = defaultdict(list)
    for r in finished(rows):
        by[key(r)].append(_psnr(r))
    repeated = [v for v in by.values() if len(v) > 1]
    return (max((max(v) - min(v) for v in repeated), default=0.0), len(repeated))


def interpolate(curve: dict[float, float], x: float) -> float | None:
    """``curve`` (x → y) at ``x``, linear in log x between its points; None outside them."""
    xs = sorted(curve)
    for lo, hi in itertools.pairwise(xs):
        if lo <= x <= hi:
            w = (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo))
            return curve[lo] + w * (curve[hi] - curve[lo])
    return curve.get(x)


def _spread_note(spread: float, repeated: int) -> str:
    return (
        f"seed spread {spread:.3f} dB over {repeated} repeated point(s)"
        if repeated
        else "single seed: spread taken as 0"
    )


# --- Fig 3 ------------------------------------------------------------------------------------------------
def fig3_claims(rows: Rows) -> list[Claim]:
    def point(r: dict[str, Any]) -> tuple:
        return r["xunit_kernel"], r["depth"]  # (None, depth): a ConvNet

    psnr = means(rows, point)
    params = {point(r): r["params_paper"] for r in finished(rows)}
    spread, repeated = seed_spread(rows, point)
    note = _spread_note(spread, repeated)
    conv = {params[k]: v for k, v in psnr.items() if k[0] is None}
    xnets = {k: v for k, v in psnr.items() if k[0] is not None}

    def gaps(kernels: Callable[[int], bool]) -> list[tuple[tuple, float]]:
        out = []
        for k, v in sorted(xnets.items()):
            ref = interpolate(conv, params[k]) if kernels(k[0]) else None
            if ref is not None:
                out.append((k, v - ref))
        return out

    big = gaps(lambda r: r >= 3)
    worst = min(big, key=lambda kg: kg[1]) if big else None
    claims = [
        Claim(
            "3",
            "xNet beats the ConvNet at equal parameters for r ≥ 3",
            worst[1] if worst else None,
            f"{sum(g > 0 for _, g in big)} of {len(big)} xNets with r ≥ 3 above the ConvNet curve; "
            f"smallest margin {worst[1]:+.3f} dB (r={worst[0][0]}, {worst[0][1]} layers); {note}"
            if worst
            else note,
            spread,
        )
    ]
    rises = []
    for depth in sorted({k[1] for k in xnets}):
        by_r = sorted((r, v) for (r, d), v in xnets.items() if d == depth)
        rises += [((depth, a[0], b[0]), b[1] - a[1]) for a, b in itertools.pairwise(by_r)]
    low = min(rises, key=lambda x: x[1]) if rises else None
    claims.append(
        Claim(
            "3",
            "PSNR rises with r at fixed depth",
            low[1] if low else None,
            f"{sum(d > 0 for _, d in rises)} of {len(rises)} steps in r rise; smallest step {low[1]:+.3f} dB "
            f"({low[0][0]} layers, r {low[0][1]}→{low[0][2]}); {note}"
            if low
            else note,
            spread,
        )
    )
    x39, c9 = (9, 3), (None, 9)
    if x39 in psnr and c9 in psnr:
        ratio = params[x39] / params[c9]
        margin = psnr[x39] - psnr[c9] if ratio < 1 / 3 else None
        claims.append(
            Claim(
                "3",
                "a 3-layer xNet (r=9) beats a 9-layer ConvNet with under ⅓ of its parameters",
                margin,
                f"{psnr[x39]:.3f} vs {psnr[c9]:.3f} dB with {params[x39]:,} vs {params[c9]:,} parameters "
                f"({ratio:.2f}×); {note}",
                spread,
            )
        )
    else:
        claims.append(
            Claim(
                "3",
                "a 3-layer xNet (r=9) beats a 9-layer ConvNet with under ⅓ of its parameters",
                None,
                "the 3-layer r=9 xNet or the 9-layer ConvNet has no finished run",
                spread,
            )
        )
    ones = gaps(lambda r: r == 1)
    if ones:
        worst1 = max(abs(g) for _, g in ones)
        claims.append(
            Claim(
                "3",
                f"with 1×1 xUnits the gap to the ConvNet is small (|gap| ≤ {SMALL_GAP_DB} dB)",
                SMALL_GAP_DB - worst1,
                "gaps " + ", ".join(f"{g:+.3f}" for _, g in ones) + f" dB (r=1 at {len(ones)} depths); {note}",
                spread,
            )
        )
    else:
        claims.append(
            Claim(
                "3",
                "with 1×1 xUnits the gap to the ConvNet is small",
                None,
                "no r=1 xNet within the ConvNet's range",
                spread,
            )
        )
    return claims


# --- Fig 4 ------------------------------------------------------------------------------------------------
def fig4_claims(rows: Rows) -> list[Claim]:
    def share(r: dict[str, Any]) -> float:
        return round(r["act_share"], 1)

    psnr = means(rows, share)
    spread, repeated = seed_spread(rows, share)
    note = _spread_note(spread, repeated)
    rise_text = "at a fixed budget, PSNR rises with the share in the activations up to ~15–22 %"
    level_text = f"… and then levels off (no later point more than {LEVEL_DB} dB or the seed spread above it)"
    if len(psnr) < 3:
        return [Claim("4", rise_text, None, note, spread), Claim("4", level_text, None, note, spread)]
    xs = sorted(psnr)
    knee = min(xs, key=lambda s: abs(s - 18.5))  # the point nearest the middle of the paper's 15–22 %
    rise = psnr[knee] - psnr[xs[0]]
    beyond = max((psnr[s] - psnr[knee] for s in xs if s > knee), default=None)
    peak = max(xs, key=lambda s: psnr[s])
    curve = ", ".join(f"{s:.0f} %: {psnr[s]:.3f}" for s in xs)
    claims = [Claim("4", rise_text, rise, f"{xs[0]:.0f} % → {knee:.0f} %: {rise:+.3f} dB ({curve}); {note}", spread)]
    allowed = max(spread, LEVEL_DB)
    level = Claim(
        "4",
        level_text,
        None if beyond is None else allowed - beyond,  # on the claim's side: how far below the allowed rise
        f"beyond {knee:.0f} %: at most {beyond:+.3f} dB more; peak at {peak:.0f} %; {note}"
        if beyond is not None
        else note,
        spread,
    )
    if beyond is not None:
        level.verdict_override = "holds" if beyond <= allowed else "does not hold"
    return [*claims, level]


# --- Fig 6 ------------------------------------------------------------------------------------------------
def fig6_claims(rows: Rows) -> list[Claim]:
    def point(r: dict[str, Any]) -> tuple:
        return r["xunit_variant"], r["depth"]

    everything = means(rows, point)
    psnr = {k: v for k, v in everything.items() if k[0] not in BEYOND_PAPER}
    spread, repeated = seed_spread(rows, point)
    note = _spread_note(spread, repeated)
    depths = sorted({d for _, d in psnr})
    paper_margins = []
    for d in depths:
        others = {v: p for (v, dd), p in psnr.items() if dd == d and v not in ("relu", "paper")}
        if ("paper", d) in psnr and others:  # the paper unit against the best other design: its lead, or its gap
            rival = max(others, key=others.get)
            paper_margins.append((d, rival, psnr[("paper", d)] - others[rival]))
    worst = min(paper_margins, key=lambda m: m[2]) if paper_margins else None
    best_claim = Claim(
        "6",
        "the paper's unit (BN+RL+CD+BN+GS) is the best design, or within seed noise of it",
        worst[2] if worst else None,
        "; ".join(
            f"{d} layers: paper unit {m:+.3f} dB {'ahead of' if m >= 0 else 'behind'} the best other, "
            f"{variant_label(b)}"
            for d, b, m in paper_margins
        )
        + f"; {note}",
        spread,
    )
    if worst:  # decided on the paper unit's gap to the best being within the seed spread
        best_claim.verdict_override = "holds" if worst[2] >= -spread else "does not hold"
    claims = [best_claim]
    beats = [(v, d, p - psnr[("relu", d)]) for (v, d), p in psnr.items() if v != "relu" and ("relu", d) in psnr]
    low = min(beats, key=lambda b: b[2]) if beats else None
    claims.append(
        Claim(
            "6",
            "every variant beats the ConvNet",
            low[2] if low else None,
            f"{sum(m > 0 for _, _, m in beats)} of {len(beats)} variant×depth points above the ConvNet; lowest "
            f"{variant_label(low[0])} at {low[1]} layers ({low[2]:+.3f} dB); {note}"
            if low
            else note,
            spread,
        )
    )
    shallow = depths[0] if depths else None
    if shallow is not None and ("bn_rl_cd", shallow) in psnr:
        here = {v: p for (v, d), p in psnr.items() if d == shallow and v != "relu"}
        gap = psnr[("bn_rl_cd", shallow)] - max(here.values())
        allowed = max(spread, LEVEL_DB)
        claims.append(
            Claim(
                "6",
                f"BN+RL+CD is close to the best for few layers (at {shallow}: within {LEVEL_DB} dB or the seed spread)",
                allowed + gap,  # on the claim's side: how much closer than allowed
                f"{gap:+.3f} dB to the best at {shallow} layers; {note}",
                spread,
                verdict_override="holds" if gap >= -allowed else "does not hold",
            )
        )
    claims.append(_explodes(rows, depths))
    params = {point(r): r["params_paper"] for r in finished(rows) if r.get("params_paper")}
    claims.append(_beyond_paper(everything, params, Claim("6", "", None, note, spread)))
    return claims


def _beyond_paper(psnr: dict[tuple, float], params: dict[tuple, int], base: Claim) -> Claim:
    """xUnit against FReLU and SiLU at equal parameters: each net's gain over the ConvNet curve at its own
    parameter count (the nets of one depth differ in size: the xUnit's 9×9 costs more than FReLU's 3×3)."""
    conv = {params[k]: v for k, v in psnr.items() if k[0] == "relu" and k in params}
    gain = {
        k: v - ref
        for k, v in psnr.items()
        if k[0] != "relu" and k in params and (ref := interpolate(conv, params[k])) is not None
    }
    text = "beyond the paper: xUnit beats FReLU and SiLU at equal parameters (gain over the ConvNet curve)"
    shared = sorted({d for v, d in gain if v == "paper"} & {d for v, d in gain if v in BEYOND_PAPER})
    if not shared:
        base.text, base.evidence = text, "no depth with the paper unit, FReLU or SiLU and a ConvNet curve around them"
        return base
    margins = []
    for d in shared:
        rivals = {v: gain[(v, d)] for v in BEYOND_PAPER if (v, d) in gain}
        best = max(rivals, key=rivals.get)
        margins.append((gain[("paper", d)] - rivals[best], d, rivals))
    worst = min(margins)
    base.text, base.margin = text, worst[0]
    base.evidence = (
        "; ".join(
            f"{d} layers: xUnit {gain[('paper', d)]:+.3f} dB ({params[('paper', d)]:,} params), "
            + ", ".join(f"{SHORT_NAMES[v]} {g:+.3f} ({params[(v, d)]:,})" for v, g in rivals.items())
            for _, d, rivals in margins
        )
        + f"; {base.evidence}"
    )
    return base


def _explodes(rows: Rows, depths: list[int]) -> Claim:
    text = (
        f"BN+RL+CD's gradients explode in deeper nets (max gradient norm ≥ {EXPLODE_FACTOR:g}× "
        "its shallowest and the paper unit's)"
    )
    norm = {
        (r["xunit_variant"], r["depth"]): r.get("grad_norm_max")
        for r in rows
        if r.get("seed") in (0, None) and r.get("init", "torch") == "torch"
    }
    diverged = [r["depth"] for r in rows if r["xunit_variant"] == "bn_rl_cd" and r["status"] == "failed"]
    if len(depths) < 2 or not all(
        norm.get(k) for k in (("bn_rl_cd", depths[0]), ("bn_rl_cd", depths[-1]), ("paper", depths[-1]))
    ):
        return Claim(
            "6",
            text,
            None,
            "gradient norms not logged for BN+RL+CD at both ends or for the paper unit"
            + (f"; BN+RL+CD diverged at {diverged} layers" if diverged else ""),
            0.0,
            verdict_override="holds" if diverged else None,
        )
    deep, shallow, paper = norm[("bn_rl_cd", depths[-1])], norm[("bn_rl_cd", depths[0])], norm[("paper", depths[-1])]
    grows, vs_paper = deep / shallow, deep / paper
    holds = bool(diverged) or (grows >= EXPLODE_FACTOR and vs_paper >= EXPLODE_FACTOR)
    return Claim(
        "6",
        text,
        None,
        f"max gradient norm {shallow:.3g} at {depths[0]} layers → {deep:.3g} at {depths[-1]} ({grows:.1f}×); "
        f"paper unit at {depths[-1]}: {paper:.3g} ({vs_paper:.1f}×)"
        + (f"; diverged at {diverged} layers" if diverged else ""),
        0.0,
        verdict_override="holds" if holds else "does not hold",
    )


def init_ablation(rows: Rows) -> list[str]:
    """Fig 6's paper unit, its no-second-BN variant and the ConvNet under both initialisations, where both ran."""
    by: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        if r["status"] == "ok" and _psnr(r) is not None and r.get("seed") in (0, None):
            by[(r["xunit_variant"], r["depth"], r.get("init", "torch"))].append(_psnr(r))
    lines = []
    for v, d, init in sorted(k for k in by if k[2] != "torch"):
        if (v, d, "torch") in by:
            t, o = by[(v, d, "torch")][0], by[(v, d, init)][0]
            lines.append(f"| {variant_label(v)} | {d} | {t:.3f} | {o:.3f} | {o - t:+.3f} |")
    return lines


# --- the table ----------------------------------------------------------------------------------------------
FIGURE_CLAIMS = {"fig3": fig3_claims, "fig4": fig4_claims, "fig6": fig6_claims}


def markdown(claims: Sequence[Claim], ablation: Sequence[str] = ()) -> str:
    lines = ["| Fig | claim | verdict | margin (dB) | the runs |", "|---|---|---|---|---|"]
    for c in claims:
        margin = "" if c.margin is None else f"{c.margin:+.3f}"
        cells = (str(c.figure), c.text, f"**{c.verdict}**", margin, c.evidence)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")  # |gap| is not a cell
    if ablation:
        lines += [
            "",
            "Initialisation (Fig 6 runs, test PSNR dB):",
            "",
            "| unit | layers | init=torch | init=legacy | legacy − torch |",
            "|---|---|---|---|---|",
            *ablation,
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m xnet.figures.claims", description=__doc__.split("\n\n")[0])
    for fig in FIGURE_CLAIMS:
        p.add_argument(
            f"--{fig}", type=Path, metavar="SWEEP_DIR", help=f"the {fig} sweep's dir (searched for metrics.json)"
        )
    p.add_argument("--out", type=Path, help="write the markdown table here too")
    args = p.parse_args(argv)
    claims, ablation = [], []
    for fig, decide in FIGURE_CLAIMS.items():
        sweep = getattr(args, fig)
        if sweep is None:
            continue
        rows = collect(sweep)
        if not rows:
            print(f"error: --{fig} {sweep}: no metrics.json there", file=sys.stderr)
            return 2
        claims += decide(rows)
        ablation += init_ablation(rows) if fig == "fig6" else []
    if not claims:
        p.error("name at least one sweep dir (--fig3, --fig4, --fig6)")
    text = markdown(claims, ablation)
    print(text, end="")
    if args.out:
        from xnet.protocol.atomic import atomic_write

        with atomic_write(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
