"""Low-level operations: MATLAB-compatible bicubic resize (``imresize``), BT.601 colour
conversions (``color``), and the xUnit kernels behind the fast paths (``xunit_gate``: fused torch
ops; ``xunit_native``: a one-pass CPU kernel; ``xunit_autograd``: memory-lean training;
``onnx_export``)."""
