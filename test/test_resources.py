"""Package data is found in the source tree first, else in an installed share (what colcon installs)."""

import pytest

from perception_core import resources
from perception_core.resources import PACKAGE, package_file


def test_source_tree_file_is_found_beside_the_packages():
    path = package_file("models", "multitask.onnx")
    assert path == resources.SOURCE_ROOT / "models" / "multitask.onnx" and path.is_file()


@pytest.fixture
def installed_only(tmp_path, monkeypatch):
    """An install prefix laid out as colcon writes it, and a source root without the data."""
    prefix = tmp_path / "install"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).touch()
    (prefix / "share" / PACKAGE / "config").mkdir(parents=True)
    (prefix / "share" / PACKAGE / "config" / "node.param.yaml").write_text("{}\n")
    monkeypatch.setattr(resources, "SOURCE_ROOT", tmp_path / "site-packages")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    return prefix


def test_installed_share_is_used_when_the_source_tree_lacks_the_file(installed_only):
    expected = installed_only / "share" / PACKAGE / "config" / "node.param.yaml"
    assert package_file("config", "node.param.yaml") == expected


def test_a_file_in_neither_place_names_both(installed_only):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        package_file("config", "missing.yaml")


def test_no_install_at_all_is_a_file_not_found_error(tmp_path, monkeypatch):
    monkeypatch.setattr(resources, "SOURCE_ROOT", tmp_path)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="neither at"):
        package_file("models", "multitask.onnx")
