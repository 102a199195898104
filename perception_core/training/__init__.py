"""Training, export and quantization: the only place in perception_core that imports TensorFlow."""
