"""Offline path to TensorRT: ONNX export (correlation as a custom op or decomposed), the correlation TensorRT plugin, engine building and engine metadata."""
