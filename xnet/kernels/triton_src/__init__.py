"""The Triton sources of the xUnit's GPU kernels (as ``csrc/`` holds the C++ CPU kernel), beside their
Python wrappers in :mod:`xnet.kernels`: ``tiles`` (what the kernels share), ``depthwise`` (the depthwise
conv's forward and weight gradient), ``xunit`` (fused inference and the training xUnit's elementwise and
input-gradient kernels). Only the wrappers import these modules, on a kernel's first use; without Triton
they still import (the kernels are then plain functions nothing calls)."""
