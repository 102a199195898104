"""rosbag2 recordings of the simulator and offline evaluation of bags (rosbags, never rclpy)."""
