"""The package builds with colcon and installs executables and data where ROS expects them."""

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = "multitask_perception"
EXECUTABLES = ["multitask_node", "synthetic_camera", "latency_monitor", "stage_profiler", "evaluator"]


def test_package_xml_is_format_3_with_real_dependencies():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == PKG
    exec_deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "vision_msgs", "diagnostic_msgs"} <= exec_deps
    assert root.find("export/build_type").text == "ament_python"


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory):
    colcon = shutil.which("colcon", path=str(Path(sys.executable).parent))
    if colcon is None:
        pytest.skip("colcon is not installed in this environment")
    work = tmp_path_factory.mktemp("colcon")
    cmd = [colcon, "--log-base", str(work / "log"), "build", "--base-paths", str(ROOT),
           "--build-base", str(work / "build"), "--install-base", str(work / "install")]
    result = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return work / "install" / PKG


@pytest.mark.parametrize("name", EXECUTABLES)
def test_executables_installed_in_lib(colcon_install, name):
    exe = colcon_install / "lib" / PKG / name
    assert exe.is_file() and os.access(exe, os.X_OK)


def test_data_files_installed_in_share(colcon_install):
    share = colcon_install / "share" / PKG
    assert (share / "package.xml").is_file()
    assert (share / "config" / "fastdds_loopback.xml").is_file() and (share / "config" / "fastdds_robot.xml").is_file()
    assert (colcon_install / "share" / "ament_index" / "resource_index" / "packages" / PKG).is_file()


@pytest.mark.parametrize("name,bad", [("synthetic_camera", "width:=0"), ("latency_monitor", "window:=1"),
                                      ("multitask_node", "threads:=0"), ("evaluator", "report_period:=0.0"),
                                      ("stage_profiler", "frames:=0")])
def test_installed_executable_runs(colcon_install, name, bad):
    """The installed script imports everything from the install tree and refuses a bad parameter."""
    site = next(colcon_install.glob("lib/python3*/site-packages"))
    env = {**os.environ, "PYTHONPATH": str(site), "AMENT_PREFIX_PATH": str(colcon_install)}
    exe = colcon_install / "lib" / PKG / name
    result = subprocess.run([str(exe), "--ros-args", "-p", bad], env=env, cwd=colcon_install,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and bad.split(":")[0] in result.stderr, result.stdout + result.stderr
