"""The import lines that never cross (DESIGN.md "Layout"), read from the source with ``ast``.

Every ``import`` counts, at module level or inside a function (a lazy import still loads
the module when it runs), and so does a ``"package.module:name"`` string (what the lazy
command tables, ``cloud_sync.lazy_cli``, import when a command runs); importing ``a.b.c``
loads the packages ``a`` and ``a.b`` too. A rule is checked transitively: a module is as heavy as everything it imports, so a
chain of imports that ends across a line fails the test, and the failure prints it.

- the shared core and the cloud (``cloud_sync``) never import the kiosk (``edge``,
  ``hardware``);
- the kiosk (``edge``, ``hardware``) never imports the cloud server (``cloud_sync.server``)
  or the cloud's command (``cloud_sync.cli``), except the demo, which composes both;
- ``hardware`` never imports ``edge`` or ``cloud_sync``; ``models`` (the face encoder both
  sides use) imports none of the three;
- the slot codec never imports the driver, the serial link, the simulator or pyserial;
- the rental flow never imports I/O.
"""

from __future__ import annotations

import ast
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("edge", "hardware", "cloud_sync", "models")

# Modules that do I/O (files as databases, devices, network, processes, pictures).
IO_MODULES = frozenset(
    {
        "sqlite3",
        "sqlite_utils",
        "psycopg",
        "serial",
        "httpx",
        "paho",
        "socket",
        "select",
        "ssl",
        "http",
        "urllib",
        "uvicorn",
        "fastapi",
        "cv2",
        "dlib",
        "picamera2",
        "subprocess",
        "shutil",
        "tempfile",
        "fcntl",
        "termios",
        "tty",
    }
)
CODEC = ("hardware.protocol", "hardware.messages", "hardware.fields", "hardware.agreement")
CODEC_FORBIDDEN = ("hardware.driver", "hardware.link", "hardware.sim", "hardware.sim_cli")
CLOUD = ("cloud_sync.server", "cloud_sync.cli")
DEMO = ("edge.demo",)
DEMO_PREFIXES = ("edge.demo.", "edge.cli.demo_cmd")

LAZY_TARGET = re.compile(rf"^((?:{'|'.join(PACKAGES)})(?:\.\w+)*):\w+$")

Graph = Mapping[str, frozenset[str]]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(source: str, module: str, is_package: bool) -> set[str]:
    """Every module name an import statement in ``source`` names (absolute, dotted)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # ``from a import b`` loads a.b when b is a module; kept if it is one of ours
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            lazy = LAZY_TARGET.match(node.value)
            if lazy:
                found.add(lazy.group(1))
    return found


def with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def build_graph(sources: Mapping[str, tuple[str, bool]]) -> dict[str, frozenset[str]]:
    """``{module: (source, is_package)}`` -> each module's direct imports. Names of our
    own modules are kept exactly; any other name is cut to its top-level package."""
    graph: dict[str, frozenset[str]] = {}
    for module, (source, is_package) in sources.items():
        edges: set[str] = set()
        for name in imported_names(source, module, is_package):
            for candidate in with_parents(name):
                if candidate.split(".")[0] in PACKAGES:
                    if candidate in sources:
                        edges.add(candidate)
                else:
                    edges.add(candidate.split(".")[0])
                    break
        edges.discard(module)
        graph[module] = frozenset(edges)
    return graph


def read_tree(root: Path = ROOT) -> dict[str, frozenset[str]]:
    sources: dict[str, tuple[str, bool]] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            name = module_name(path, root)
            sources[name] = (path.read_text(encoding="utf-8"), path.name == "__init__.py")
    return build_graph(sources)


def within(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def crossings(
    graph: Graph,
    sources: Iterable[str],
    forbidden: Callable[[str], bool],
    stop: Callable[[str], bool] = lambda _name: False,
) -> list[str]:
    """One line per source module that reaches a forbidden module, with the chain."""
    found = []
    for start in sorted(sources):
        previous: dict[str, str] = {}
        queue = deque([start])
        seen = {start}
        while queue:
            current = queue.popleft()
            if current != start and stop(current):
                continue
            crossing = sorted(name for name in graph.get(current, ()) if forbidden(name))
            if crossing:  # the most specific module named, e.g. edge.errors over edge
                chain = [max(crossing, key=len), current]
                while chain[-1] != start:
                    chain.append(previous[chain[-1]])
                found.append(" -> ".join(reversed(chain)))
                break
            for nxt in sorted(graph.get(current, ())):
                if nxt not in seen:
                    seen.add(nxt)
                    previous[nxt] = current
                    queue.append(nxt)
    return found


def assert_none(found: list[str]) -> None:
    assert not found, "imports across the line:\n" + "\n".join(found)


def is_demo(name: str) -> bool:
    return name in DEMO or name.startswith(DEMO_PREFIXES)


GRAPH = read_tree()


def _in(*prefixes: str) -> list[str]:
    return [name for name in GRAPH if within(name, prefixes)]


def test_the_checker_sees_lazy_relative_and_parent_imports() -> None:
    graph = build_graph(
        {
            "edge": ("", True),
            "edge.a": ("def f():\n    from .b import thing\n    import cv2.data\n", False),
            "edge.b": ("from cloud_sync.server import app\n", False),
            "edge.c": ('TABLE = [("serve", "cloud_sync.server.app:serve")]\n', False),
            "cloud_sync": ("", True),
            "cloud_sync.server": ("", True),
            "cloud_sync.server.app": ("import sqlite3\n", False),
        }
    )
    assert graph["edge.a"] == {"edge", "edge.b", "cv2"}
    assert graph["edge.b"] == {"cloud_sync", "cloud_sync.server", "cloud_sync.server.app"}
    assert graph["edge.c"] == graph["edge.b"]
    assert crossings(graph, ["edge.a"], lambda name: name == "sqlite3") == [
        "edge.a -> edge.b -> cloud_sync.server.app -> sqlite3"
    ]
    assert (
        crossings(graph, ["edge.a"], lambda n: n == "sqlite3", stop=lambda n: n == "edge.b") == []
    )


def test_the_tree_is_read() -> None:
    for name in ("edge.flow", "hardware.protocol", "cloud_sync.server.app", "models"):
        assert name in GRAPH
    assert len(GRAPH) > 150


def test_the_shared_core_and_the_cloud_never_import_the_kiosk() -> None:
    assert_none(crossings(GRAPH, _in("cloud_sync"), lambda n: within(n, ("edge", "hardware"))))


def test_the_kiosk_never_imports_the_cloud_server_except_the_demo() -> None:
    kiosk = [name for name in _in("edge", "hardware") if not is_demo(name)]
    assert_none(crossings(GRAPH, kiosk, lambda n: within(n, CLOUD), stop=is_demo))


def test_hardware_never_imports_the_kiosk_or_the_sync_side() -> None:
    assert_none(crossings(GRAPH, _in("hardware"), lambda n: within(n, ("edge", "cloud_sync"))))


def test_the_face_models_import_none_of_the_other_packages() -> None:
    others = ("edge", "hardware", "cloud_sync")
    assert_none(crossings(GRAPH, _in("models"), lambda n: within(n, others)))


def test_the_slot_codec_never_imports_the_driver_or_pyserial() -> None:
    def forbidden(name: str) -> bool:
        return within(name, CODEC_FORBIDDEN) or name in IO_MODULES

    assert_none(crossings(GRAPH, CODEC, forbidden))


def test_the_flow_never_imports_io() -> None:
    flow = [name for name in GRAPH if name == "edge.flow" or name.startswith("edge.flow.")]
    assert len(flow) >= 4
    assert_none(crossings(GRAPH, flow, lambda name: name in IO_MODULES))
