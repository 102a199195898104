"""ament_python package: perception_core (no ROS) + perception_nodes (rclpy glue)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "multitask_perception"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["perception_core", "perception_core.*", "perception_nodes", "perception_nodes.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.xml") + glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/models", glob("models/*.onnx") + glob("models/*.json") + glob("models/*.tflite")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="multitask_perception maintainers",
    maintainer_email="maintainers@example.com",
    description="Shared-backbone multitask perception (segmentation + detection) for ROS 2.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "multitask_node = perception_nodes.entry:multitask_node",
            "synthetic_camera = perception_nodes.entry:synthetic_camera",
            "latency_monitor = perception_nodes.entry:latency_monitor",
            "stage_profiler = perception_nodes.entry:stage_profiler",
            "evaluator = perception_nodes.entry:evaluator",
        ],
    },
)
