"""ONNX graphs built with the `onnx` package (needed only to build them, not to render)."""
