"""The xUnit's kernels beside their Python wrappers: the gate functions (``gate``), the depthwise conv
with native CPU forward/backward (``depthwise``), fused torch ops (``xunit_gate``), one-pass CPU kernels
(``xunit_native`` + ``csrc/xunit_cpu.cpp``), the GPU kernels (``xunit_triton``, ``depthwise_triton``,
``triton_tiles``), the memory-lean autograd function (``xunit_autograd``) and the one chooser of how an
xUnit runs (``dispatch``)."""
