"""Low-level image operations for the super-resolution protocol.

- :mod:`xnet.ops.imresize`: MATLAB-compatible bicubic ``imresize`` in pure torch.
- :mod:`xnet.ops.color`: BT.601 studio-range luma / YCbCr (MATLAB ``rgb2ycbcr``).
"""
