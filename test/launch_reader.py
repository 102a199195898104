"""Reads our launch XML files the way ``ros2 launch`` does, where launch itself is not installed.

launch, launch_xml and launch_ros are not installable from a registry here, so the tests that
need "what would ``ros2 launch`` start?" use this reader of the subset our files use: <arg>,
<let>, <set_env>, <include> with <arg>, <node> with <param> (file or name/value) and <remap>, and
the substitutions $(var), $(env NAME [default]) and $(find-pkg-share), nested as launch's grammar
allows. It follows launch's semantics where they matter: launch configurations are global (an
included file sees and can be given every top-level argument; a declared argument's default
applies only when the argument is not set), ``--show-args`` lists every declared argument
including those of included files, first declaration wins, a node gets the environment as set
by the <set_env> actions before it, and launch_ros skips a <param from> file that does not exist
(with a warning) unless ``allow_substs`` makes it read the file. Checked by hand against the real
``ros2 launch`` (Jazzy branches of ros2/launch and ros2/launch_ros).
"""

from __future__ import annotations

import os
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "multitask_perception"
ENTRY_POINT = re.compile(r'"(\w+) = perception_nodes\.entry:(\w+)"')


def entry_points() -> dict[str, str]:
    """Executable name -> the node's module, for setup.py's console scripts (perception_nodes.entry)."""
    from perception_nodes.entry import NODES

    scripts = dict(ENTRY_POINT.findall((ROOT / "setup.py").read_text()))
    assert all(name == function for name, function in scripts.items()), scripts
    return {name: f"perception_nodes.{NODES[name]}" for name in scripts}


@dataclass
class LaunchNode:
    executable: str
    name: str
    params: list = field(default_factory=list)  # in order: a file path (str) or a (name, value) pair
    remaps: list = field(default_factory=list)  # (from, to)
    env: dict = field(default_factory=dict)  # variables set by <set_env> before this node

    def param_value(self, name: str):
        """The value this node starts with, as rcl resolves files then overrides."""
        value = None
        for item in self.params:
            if isinstance(item, tuple):
                if item[0] == name:
                    value = item[1]
            else:
                value = yaml.safe_load(Path(item).read_text())["/**"]["ros__parameters"].get(name, value)
        return value

    def command(self, tmp_dir: Path) -> list[str]:
        """``python -m module --ros-args ...`` as launch_ros builds it (name/value params in a temp file)."""
        args = ["-r", f"__node:={self.name}"]
        for index, item in enumerate(self.params):
            if isinstance(item, tuple):
                path = tmp_dir / f"{self.name}_params_{index}.yaml"
                path.write_text(yaml.safe_dump({"/**": {"ros__parameters": {item[0]: item[1]}}}))
                item = str(path)
            args += ["--params-file", item]
        for source, target in self.remaps:
            args += ["-r", f"{source}:={target}"]
        return [sys.executable, "-m", entry_points()[self.executable], "--ros-args", *args]


def _typed(text: str):
    """A <param value> as launch_ros passes it: YAML-typed, the empty string kept a string."""
    value = yaml.safe_load(text) if text else ""
    return text if value is None else value


class LaunchReader:
    def __init__(self, environ: Optional[dict] = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self.configs: dict[str, str] = {}
        self.declared: dict[str, ET.Element] = {}  # name -> first <arg> declaring it (--show-args)
        self.env: dict[str, str] = {}
        self.nodes: list[LaunchNode] = []

    # substitutions ---------------------------------------------------------------------------
    def substitute(self, text: str) -> str:
        value, end = self._parse(text, 0, stop="")
        assert end == len(text), f"unbalanced substitution in {text!r}"
        return value

    def _parse(self, text: str, pos: int, stop: str) -> tuple[str, int]:
        out = []
        while pos < len(text) and text[pos] not in stop:
            if text.startswith("$(", pos):
                value, pos = self._substitution(text, pos + 2)
                out.append(value)
            else:
                out.append(text[pos])
                pos += 1
        return "".join(out), pos

    def _substitution(self, text: str, pos: int) -> tuple[str, int]:
        name, pos = self._parse(text, pos, stop=" )")
        args = []
        while text[pos] == " ":
            arg, pos = self._parse(text, pos + 1, stop=" )")
            args.append(arg)
        assert text[pos] == ")", f"unterminated $({name} in {text!r}"
        return self._resolve(name, args), pos + 1

    def _resolve(self, name: str, args: list[str]) -> str:
        if name == "var":
            assert args[0] in self.configs, f"$(var {args[0]}) is not set"
            return self.configs[args[0]]
        if name == "env":
            value = self.environ.get(args[0], args[1] if len(args) > 1 else None)
            assert value is not None, f"environment variable {args[0]} is not set"
            return value
        if name == "find-pkg-share":
            assert args == [PACKAGE], args
            return str(ROOT)
        raise AssertionError(f"unsupported substitution $({name})")

    # actions ---------------------------------------------------------------------------------
    def read(self, path: Path) -> LaunchReader:
        root = ET.parse(path).getroot()
        assert root.tag == "launch", path
        for element in root:
            getattr(self, f"_{element.tag}")(element)
        return self

    def _arg(self, element: ET.Element) -> None:
        name = element.get("name")
        self.declared.setdefault(name, element)
        if name not in self.configs:
            assert element.get("default") is not None, f"required argument {name} not given"
            self.configs[name] = self.substitute(element.get("default"))

    def _let(self, element: ET.Element) -> None:
        self.configs[element.get("name")] = self.substitute(element.get("value"))

    def _set_env(self, element: ET.Element) -> None:
        self.env[element.get("name")] = self.environ[element.get("name")] = self.substitute(element.get("value"))

    def _include(self, element: ET.Element) -> None:
        for arg in element.findall("arg"):
            self.configs[arg.get("name")] = self.substitute(arg.get("value"))
        self.read(Path(self.substitute(element.get("file"))))

    def _node(self, element: ET.Element) -> None:
        assert element.get("pkg") == PACKAGE, element.get("pkg")
        node = LaunchNode(element.get("exec"), element.get("name"), env=dict(self.env))
        for child in element:
            if child.tag == "param" and child.get("from") is not None:
                path = self.substitute(child.get("from"))
                if child.get("allow_substs") == "true":  # launch_ros reads (and so requires) the file
                    assert "$(" not in Path(path).read_text(), "substitutions in parameter files are not modelled"
                    yaml.safe_load(Path(path).read_text())
                elif not Path(path).is_file():  # launch_ros warns "Parameter file path is not a file" and skips it
                    continue
                node.params.append(path)
            elif child.tag == "param":
                node.params.append((child.get("name"), _typed(self.substitute(child.get("value")))))
            elif child.tag == "remap":
                node.remaps.append((self.substitute(child.get("from")), self.substitute(child.get("to"))))
            else:
                raise AssertionError(f"unsupported <{child.tag}> in <node>")
        self.nodes.append(node)


def launch(path: Path, environ: Optional[dict] = None, **arguments: str) -> LaunchReader:
    """What ``ros2 launch <path> name:=value ...`` would start, with ``environ`` as the shell's environment."""
    reader = LaunchReader(environ)
    reader.configs.update(arguments)
    return reader.read(path)


def show_args(path: Path) -> dict[str, str]:
    """``ros2 launch <path> --show-args``: every declared argument (includes too) -> its description."""
    reader = launch(path, environ={})
    return {name: arg.get("description", "") for name, arg in reader.declared.items()}
