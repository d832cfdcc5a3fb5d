"""Check config values up front, in one place, before anything is built or read: a bad value is one
:class:`~xnet.protocol.errors.ConfigError` naming the key and the value, not a torch error (or a
ZeroDivisionError) deep inside a run.

``validate(cfg, "train" | "evaluate" | "restore" | "export")``; keys a config does not have are
skipped, so one rule list serves every entry point.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xnet.protocol.errors import ConfigError

__all__ = ["Rule", "problems", "validate"]

_ABSENT = object()


@dataclass(frozen=True)
class Rule:
    """``key`` must be a ``kind`` (int, or float which takes ints too) ``>= low`` (``> low`` with
    ``strict``); ``optional``: null is fine; ``also``: other accepted values (``-1``: unlimited)."""

    key: str
    kind: type = int
    low: float | None = None
    strict: bool = False
    optional: bool = False
    also: tuple[Any, ...] = ()

    def problem(self, value: Any) -> str | None:
        if value is None:
            return None if self.optional else f"{self.key}: a value is required"
        if value in self.also and not isinstance(value, bool):
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float) if self.kind is float else int):
            return f"{self.key}={value!r}: must be {'a number' if self.kind is float else 'an integer'}"
        if not math.isfinite(value):  # nan passes every comparison below, inf every lower bound
            return f"{self.key}={value}: must be a finite number"
        if self.low is not None and (value <= self.low if self.strict else value < self.low):
            bound = f"> {self.low}" if self.strict else f">= {self.low}"
            extra = f" (or {', '.join(map(str, self.also))})" if self.also else ""
            return f"{self.key}={value}: must be {bound}{extra}"
        return None


COMMON = (
    Rule("seed", int, 0),
    Rule("threads", int, 1, optional=True),
    Rule("task.sigma", float, 0, optional=True),
    Rule("task.scale", int, 1, optional=True),
)
TILING = (
    Rule("tiling.tile", int, 8),
    Rule("tiling.overlap", int, 0, optional=True),
    Rule("tiling.max_pixels", int, 0, optional=True),
)
RULES: dict[str, tuple[Rule, ...]] = {
    "train": (
        *COMMON,
        Rule("data.patch_size", int, 1),
        Rule("data.batch_size", int, 1),
        Rule("data.samples_per_epoch", int, 1),
        Rule("data.num_workers", int, 0),
        Rule("data.val_limit", int, 1, optional=True),
        Rule("trainer.max_steps", int, 1, also=(-1,)),
        Rule("trainer.val_check_interval", float, 0, strict=True, optional=True),
        Rule("optim.lr", float, 0, strict=True),
        Rule("optim.weight_decay", float, 0, optional=True),
    ),
    "evaluate": COMMON + TILING + (Rule("limit", int, 1, optional=True),),
    "restore": COMMON + TILING,
    "export": COMMON,
}


def _select(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)


def _size_problems(cfg: DictConfig) -> Iterable[str]:
    """Sizes the model needs: an SR training crop is cut at the high resolution and down-sampled
    by the scale, so it must be a whole multiple of it."""
    patch, scale = _select(cfg, "data.patch_size"), _select(cfg, "task.degradation.scale")
    if isinstance(patch, int) and isinstance(scale, int) and scale > 1 and patch % scale:
        yield (
            f"data.patch_size={patch}: must be a multiple of the SR scale {scale} "
            f"(e.g. {max(scale, patch - patch % scale)})"
        )


def problems(cfg: DictConfig, entry: str) -> list[str]:
    """Every problem of ``cfg`` for the entry point ``entry`` (empty: fine)."""
    if entry not in RULES:
        raise ValueError(f"unknown entry point {entry!r}; one of {sorted(RULES)}")
    found = []
    for rule in RULES[entry]:
        value = _select(cfg, rule.key)
        if value is not _ABSENT and (msg := rule.problem(value)):
            found.append(msg)
    if entry == "train" and not found:
        found += list(_size_problems(cfg))
    if entry == "train" and _select(cfg, "model.classical") is True:  # BM3D & co: nothing to learn
        found.append(
            f"model={_select(cfg, 'model.name')} is a classical restorer with nothing to train; "
            "score it with xnet.evaluate"
        )
    return found


def validate(cfg: DictConfig, entry: str) -> None:
    """Raise one :class:`ConfigError` listing every bad value of ``cfg`` for ``entry``."""
    found = problems(cfg, entry)
    if found:
        raise ConfigError("; ".join(found))
