"""Inference deployment: ``fuse`` (BN folding, fused xUnits, channels_last) and ``onnx`` (ONNX
export with an onnxruntime parity check)."""
