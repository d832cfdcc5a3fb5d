"""Progress bars (tqdm, on stderr) for the long loops a user waits on: evaluation, restoring a
folder, downloads, training (Lightning's bar, on stdout). Shown on a terminal; ``XNET_PROGRESS=1``
forces them on (a log file, a test), ``XNET_PROGRESS=0`` off."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import IO, Any

ENV = "XNET_PROGRESS"


def progress_enabled(stream: IO[str] | None = None) -> bool:
    """Whether a bar on ``stream`` (default stderr) is shown: ``XNET_PROGRESS`` when set, else on a terminal."""
    setting = os.environ.get(ENV, "").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return False
    stream = sys.stderr if stream is None else stream
    return setting in ("1", "true", "yes", "on") or bool(getattr(stream, "isatty", lambda: False)())


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``: a time a reader takes in at a glance."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


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
