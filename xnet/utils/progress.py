"""Progress bars (tqdm, on stderr) for the long loops a user waits on: evaluation, restoring a
folder, downloads. Shown on a terminal; ``XNET_PROGRESS=1`` forces them on (a log file, a test),
``XNET_PROGRESS=0`` off."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

ENV = "XNET_PROGRESS"


def progress_enabled() -> bool:
    setting = os.environ.get(ENV, "").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return False
    return setting in ("1", "true", "yes", "on") or sys.stderr.isatty()


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    **kwargs: Any,
):
    """``tqdm(iterable, ...)`` on stderr, or a no-op bar when progress is off (``enabled=False`` or
    see the module doc): its ``update`` and ``close`` still work, so callers need not check."""
    from tqdm import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not (enabled and progress_enabled()),
        dynamic_ncols=True,
        **kwargs,
    )
