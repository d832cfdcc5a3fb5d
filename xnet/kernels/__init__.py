"""The xUnit's kernels beside their Python wrappers: the gate functions (``gate``), the depthwise conv
with native CPU forward/backward (``depthwise``), fused torch ops (``xunit_gate``), one-pass CPU kernels
(``xunit_native`` + ``csrc/xunit_cpu.cpp``), the GPU kernels (Triton sources in ``triton_src/``; their
wrappers ``xunit_triton`` (fused inference), ``xunit_train_triton`` (a whole xUnit in training),
``depthwise_triton``; ``triton_launch``: tile configurations and autotuning; ``triton_audit``: the sm_90
register/spill check), the memory-lean autograd function (``xunit_autograd``) and the one chooser of how
an xUnit runs (``dispatch``: ``XUnitConfig.impl`` resolved once per module and device)."""
