"""nordlys.daemon: read photos, score them with an ONNX model, put each in exactly one place.

This package never imports torch; training and export live in `nordlys.train` and
`nordlys.export`, and the ONNX file (see `contract`) is the only thing that passes between them.
"""
