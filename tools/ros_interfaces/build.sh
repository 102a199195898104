#!/usr/bin/env bash
# Build the interface packages that pip lacks (vision_msgs) into a venv prefix.
# Usage: tools/ros_interfaces/build.sh VENV_DIR
# The build directory lives inside the venv so that recreating the venv discards stale state.
set -euo pipefail
venv="$(cd "$1" && pwd)"
here="$(cd "$(dirname "$0")" && pwd)"
for pkg in vision_msgs; do
  build="$venv/build/ros_interfaces/$pkg"
  mkdir -p "$build"
  echo "[setup] building $pkg into $venv"
  (
    cd "$build"
    export AMENT_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH"
    cmake "$here/$pkg" -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_INSTALL_PREFIX="$venv" \
      -DPython3_EXECUTABLE="$venv/bin/python" -DBUILD_TESTING=OFF >cmake.log 2>&1 \
      || { tail -30 cmake.log; exit 1; }
    make -j2 install >make.log 2>&1 || { tail -30 make.log; exit 1; }
  )
done
"$venv/bin/python" -c "from vision_msgs.msg import Detection2DArray, LabelInfo" \
  && echo "[setup] vision_msgs imports"
