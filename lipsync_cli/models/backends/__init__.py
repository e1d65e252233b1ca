"""The model backends, one module per family: onnxruntime (CPU, CUDA) and OpenVINO (CPU, Intel GPU and NPU).
`models/sessions.py` is the one factory that picks between them by the device."""
