"""``torch.compile`` a module in place and fall back to eager *visibly* if compiling fails.

Dynamo's ``suppress_errors`` (what ``RestorationModule(compile=True)`` used to set, process-wide)
turns a failed compile into a silent eager run: a run configured to compile trains eagerly and
nothing says so. :func:`compile_in_place` leaves dynamo's settings alone; the first call whose
compilation fails (a dynamo or inductor error, not an error of the model itself) logs a warning,
writes the reason into the returned status dict (the caller puts it in ``metrics.json``) and runs
that call and every later one eagerly.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

__all__ = ["compile_in_place", "is_compile_error"]

log = logging.getLogger(__name__)


def is_compile_error(exc: BaseException) -> bool:
    """An error raised by dynamo or inductor while compiling (``BackendCompilerFailed`` and the
    like), as opposed to one the model raises eagerly too (a shape mismatch, out of memory)."""
    try:
        from torch._dynamo.exc import TorchDynamoException
    except ImportError:  # pragma: no cover - very old torch
        TorchDynamoException = ()
    module = type(exc).__module__ or ""
    return isinstance(exc, TorchDynamoException) or module.startswith(("torch._dynamo", "torch._inductor"))


def compile_in_place(module: nn.Module, name: str = "model", **options: Any) -> dict[str, str]:
    """``module.compile(**options)`` (state-dict keys unchanged); returns a status dict,
    ``{"compile": "inductor"}``, that becomes ``{"compile": "eager (compile failed)",
    "compile_error": ...}`` if a compile fails."""
    status = {"compile": "inductor"}
    module.compile(**options)
    compiled = module._compiled_call_impl

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return compiled(*args, **kwargs)
        except Exception as exc:
            if not is_compile_error(exc):
                raise
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
            log.warning("torch.compile of the %s failed (%s); it runs eagerly from here", name, reason)
            status.update({"compile": "eager (compile failed)", "compile_error": reason})
            module._compiled_call_impl = None
            return module._call_impl(*args, **kwargs)

    module._compiled_call_impl = call
    return status
