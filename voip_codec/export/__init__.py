"""Export of the streaming codec to other runtimes (ONNX for onnxruntime and the browser)."""
