"""Package data (models/, config/, launch/, tools/): found one way, in the source tree and in a colcon install.

In the source tree the folders sit beside the packages (the repository root); a colcon or pip
install puts the packages in site-packages and the data under ``share/multitask_perception``,
which ament_index names. ament_index_python is imported only when the source tree lacks the
file, so the core keeps working without any ROS package installed.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = "multitask_perception"
# The folder holding perception_core/ and perception_nodes/: the repository root in a source checkout.
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def package_file(folder: str, name: str) -> Path:
    """``folder/name`` from the source tree, else from the installed share; FileNotFoundError naming both places."""
    source = SOURCE_ROOT / folder / name
    if source.exists():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory(PACKAGE)) / folder / name
    except (ImportError, LookupError, OSError) as exc:  # no ament_index, not installed, no AMENT_PREFIX_PATH
        raise FileNotFoundError(f"{folder}/{name} is neither at {source} nor in an installed {PACKAGE} share "
                                f"({type(exc).__name__}: {exc})") from exc
    if not installed.exists():
        raise FileNotFoundError(f"{folder}/{name} is neither at {source} nor at {installed}")
    return installed
