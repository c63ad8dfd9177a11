"""ONNX export of trained actors and the onnxruntime policy the robot runs."""
