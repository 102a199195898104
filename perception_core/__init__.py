"""multitask_perception core: framework-free (numpy, OpenCV, ONNX Runtime). Never imports rclpy."""
