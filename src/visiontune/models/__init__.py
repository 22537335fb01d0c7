"""Networks, and trained models: their meta, checkpoints and ONNX exports."""
