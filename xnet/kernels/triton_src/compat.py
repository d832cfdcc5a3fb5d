"""``triton`` and ``tl`` for the kernel sources, or stand-ins where Triton is not installed (CPU builds
of torch): the sources then import, and nothing calls their kernels."""

from types import SimpleNamespace

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only without Triton
    triton = SimpleNamespace(jit=lambda fn: fn)
    tl = SimpleNamespace(constexpr=None)

__all__ = ["tl", "triton"]
