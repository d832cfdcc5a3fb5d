"""Low-level operations: MATLAB-compatible bicubic resize (``imresize``), BT.601 colour
conversions (``color``), and the xUnit kernels behind the fast paths (``xunit_gate``: fused torch
ops; ``xunit_native``: one-pass CPU kernels; ``xunit_triton``: the GPU kernel; ``depthwise``: the
xUnit's depthwise conv with native CPU backward; ``xunit_autograd``: memory-lean training)."""
