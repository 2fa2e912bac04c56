"""The model outside the pipeline: the exports' metadata and runtimes (Keras, SavedModel, ONNX) and
`catsdogs predict`. No Keras at import: predict on an ONNX file needs neither Keras nor TensorFlow."""
