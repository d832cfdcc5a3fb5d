"""Learning-rate schedules as a factor of the peak rate per optimiser step (``LambdaLR``).

* ``step`` — the paper's: ×``gamma`` at each step in ``milestones`` (1e-3 → 1e-4);
* ``onecycle`` — linear warm-up from ``lr·WARMUP_START`` over the first ``warmup`` fraction of the
  steps, then a half cosine from ``lr`` down to ``final_lr`` at ``total_steps``;
* ``wsd`` (warm-up, stable, decay) — the same warm-up, ``lr`` held, then a linear decay to
  ``final_lr`` over the last ``decay`` fraction of the steps.

The values (``optim.*``) come from ``conf/recipe/``, their one source: nothing here has a default.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

SCHEDULES = ("step", "onecycle", "wsd")
WARMUP_START = 0.04  # the warm-up starts at this fraction of optim.lr


def lr_factor(
    schedule: str,
    lr: float,
    total_steps: int,
    *,
    milestones: Sequence[int],
    gamma: float,
    warmup: float,
    final_lr: float,
    decay: float,
) -> Callable[[int], float]:
    if schedule == "step":
        marks = sorted(int(m) for m in milestones)
        return lambda step: gamma ** bisect.bisect_right(marks, step)
    if schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {schedule!r}")
    if total_steps is None or total_steps <= 0:
        raise ValueError(f"optim.schedule={schedule} needs trainer.max_steps > 0 (the schedule ends there)")
    if not 0 <= warmup < 1:
        raise ValueError(f"optim.warmup is a fraction of the steps in [0, 1), got {warmup}")
    n_warm = round(warmup * total_steps)
    floor = final_lr / lr

    n_decay = round(decay * total_steps)

    def factor(step: int) -> float:
        if step < n_warm:
            return WARMUP_START + (1 - WARMUP_START) * step / n_warm
        if schedule == "wsd":
            t = min(1.0, max(0, step - (total_steps - n_decay)) / max(1, n_decay))
            return 1 - (1 - floor) * t
        t = min(1.0, (step - n_warm) / max(1, total_steps - n_warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor
