"""nordlys.export: turn a training run into an ONNX model carrying the metadata contract, and evaluate it."""
