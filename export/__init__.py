"""Model bundles: ONNX export, the bundle format, parity checks and the retrain job."""
