#!/usr/bin/env bash
# Create or refresh the dev venv. Skips everything when the stamp (a hash of the requirement
# files and interface sources) matches, so a warm `make test` starts in well under 5 s.
#
# Without ROS: ROS 2 Jazzy comes from pip wheels and vision_msgs is built from tools/ros_interfaces.
# With a sourced ROS 2 distribution (ROS_DISTRO set): the venv sees the system packages, the ROS
# wheels are not installed, and vision_msgs is built only if the distribution lacks it.
set -euo pipefail
venv="${1:?usage: bootstrap.sh VENV}"
python="${PYTHON:-python3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

ros_mode="pip-wheels (ROS 2 Jazzy)"
[ -n "${ROS_DISTRO:-}" ] && ros_mode="system ROS 2 ${ROS_DISTRO}"
key="$( (echo "$ros_mode"; cat requirements/*.txt setup.py setup.cfg tools/bootstrap.sh tools/ros_interfaces/build.sh;
         find tools/ros_interfaces -type f -name '*.msg' -o -name '*.txt' -o -name '*.xml' | sort | xargs cat) \
        | sha256sum | cut -d' ' -f1)"
stamp="$venv/.bootstrap-stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
  echo "[setup] $venv is up to date; ROS: $ros_mode"
  exit 0
fi

start=$(date +%s)
echo "[setup] creating $venv with $ros_mode (first run: a few minutes)"
if [ -n "${ROS_DISTRO:-}" ]; then
  "$python" -m venv --system-site-packages "$venv"
  groups="requirements/base.txt requirements/training.txt requirements/dev.txt"
else
  "$python" -m venv "$venv"
  groups="requirements/ros-jazzy.txt requirements/base.txt requirements/training.txt requirements/dev.txt"
fi
pip_flags=(--disable-pip-version-check --no-input --progress-bar off)
"$venv/bin/python" -m pip install "${pip_flags[@]}" -q --upgrade pip
# shellcheck disable=SC2086
"$venv/bin/python" -m pip install "${pip_flags[@]}" -q -c requirements/constraints.txt $(printf -- '-r %s ' $groups)
"$venv/bin/python" -m pip install "${pip_flags[@]}" -q --no-deps -e .   # perception_* importable from anywhere
"$venv/bin/python" -m pip check

if "$venv/bin/python" -c "import vision_msgs.msg" 2>/dev/null && [ -n "${ROS_DISTRO:-}" ]; then
  echo "[setup] vision_msgs comes from ROS 2 ${ROS_DISTRO}"
else
  tools/ros_interfaces/build.sh "$venv"
fi
"$venv/bin/python" -c "import rclpy, vision_msgs.msg, cv2, onnxruntime" \
  || { echo "[setup] FAILED: the venv cannot import rclpy/vision_msgs/cv2/onnxruntime"; exit 1; }
echo "$key" > "$stamp"
echo "[setup] done in $(( $(date +%s) - start )) s; ROS: $ros_mode; venv $(du -sh "$venv" | cut -f1)"
