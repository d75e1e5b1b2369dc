"""No import runs upward: every import of the package (module-level and function-local, and a string
that names a module, as an importlib table does) follows the layer order of docs/architecture.md
("## Layers"). The table is read from the doc, so the doc and this check cannot disagree: a unit the
table does not place, or one it names that does not exist, fails here too."""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.doc_tables import ARCHITECTURE, REPO, code_names, first_table

PACKAGE = REPO / "inspector"

# Upward imports known while this session's moves are under way, as (importing module, imported name).
# Each entry must still exist (a stale one fails), and the list must be empty when the moves are done.
KNOWN_UPWARD: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Layer:
    name: str
    rank: int
    units: tuple[str, ...]
    peers: bool  # units of this layer may import each other


@dataclass(frozen=True)
class Edge:
    module: str  # dotted name of the importing module
    target: str  # dotted name imported (a module, or module.attribute)
    line: int

    def __str__(self) -> str:
        return f"{self.module} imports {self.target} (line {self.line})"


def parse_layers(doc: str) -> list[Layer]:
    rows = first_table(doc, "## Layers")
    layers = []
    for rank, row in enumerate(rows):
        peers = row["peers import each other"].strip().lower()
        assert peers in ("yes", "no"), f"layer {row['layer']}: 'peers import each other' is yes or no, got {peers!r}"
        layers.append(Layer(row["layer"], rank, tuple(code_names(row["units"])), peers == "yes"))
    return layers


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(dotted: str, root: Path) -> str:
    """The unit a dotted name belongs to: `sources/` for inspector.sources.base, `config.py` for
    inspector.config.X, `__init__.py` for the package itself."""
    parts = dotted.split(".")
    if len(parts) == 1:
        return "__init__.py"
    return f"{parts[1]}/" if (root / parts[1]).is_dir() else f"{parts[1]}.py"


def units(root: Path) -> set[str]:
    return {unit_of(module_name(p, root), root) for p in root.rglob("*.py")}


def imports(path: Path, root: Path) -> list[Edge]:
    """Every name of the package that the module at `path` imports, wherever in the module it does."""
    pkg_name = root.name
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    known = {module_name(p, root) for p in root.rglob("*.py")}
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in known:
            targets = [node.value]
        out += [Edge(module, t, node.lineno) for t in targets if t == pkg_name or t.startswith(pkg_name + ".")]
    return out


def upward(root: Path, layers: list[Layer]) -> list[Edge]:
    """The imports that break the layer order (a unit no layer places is reported by `unplaced`)."""
    where = {u: layer for layer in layers for u in layer.units}
    bad = []
    for path in sorted(root.rglob("*.py")):
        for edge in imports(path, root):
            src, dst = unit_of(edge.module, root), unit_of(edge.target, root)
            if src == dst or src not in where or dst not in where:
                continue
            a, b = where[src], where[dst]
            if b.rank > a.rank or (b.rank == a.rank and not a.peers):
                bad.append(edge)
    return bad


LAYERS = parse_layers(ARCHITECTURE.read_text())


def test_the_doc_places_every_unit_once():
    named = [u for layer in LAYERS for u in layer.units]
    twice = sorted({u for u in named if named.count(u) > 1})
    assert twice == [], f"{ARCHITECTURE.name} ## Layers: placed on two layers: {twice}"
    present = units(PACKAGE)
    assert sorted(present - set(named)) == [], f"{ARCHITECTURE.name} ## Layers: units no layer places"
    assert sorted(set(named) - present) == [], f"{ARCHITECTURE.name} ## Layers: units that do not exist"


def test_no_import_runs_upward():
    found = upward(PACKAGE, LAYERS)
    new = [str(e) for e in found if not any(e.module == m and _covers(t, e.target) for m, t in KNOWN_UPWARD)]
    assert new == [], f"imports that run upward ({ARCHITECTURE.name} ## Layers):\n" + "\n".join(new)
    stale = sorted((m, t) for m, t in KNOWN_UPWARD if not any(e.module == m and _covers(t, e.target) for e in found))
    assert stale == [], f"KNOWN_UPWARD entries that no longer happen (remove them): {stale}"


def _covers(name: str, target: str) -> bool:
    return target == name or target.startswith(name + ".")


# The check itself, on a small package: it must see what the real package should not have.
FAKE = {
    "__init__.py": "",
    "config.py": "import pkg.errors\n",
    "errors.py": "",
    "kernel/__init__.py": "",
    "kernel/alarms.py": "from pkg.config import X\n",
    "sources/__init__.py": "TABLE = {'x': ('pkg.sources.base', 'Base')}\n",
    "sources/base.py": "from ..kernel import alarms\n",
    "inference/__init__.py": "",
    "service/__init__.py": "",
    "service/app.py": "from pkg.sources import base\nfrom pkg import inference\n",
}
FAKE_DOC = """## Layers
| layer | units | peers import each other | why here |
|---|---|---|---|
| kernel | `__init__.py`, `kernel/`, `config.py`, `errors.py` | yes | bottom |
| input | `sources/`, `inference/` | no | middle |
| service | `service/` | no | top |
"""


@pytest.mark.parametrize("module, code, expected", [
    ("kernel/alarms.py", "def f():\n    from pkg.service import app\n", ["pkg.kernel.alarms imports pkg.service.app"]),
    ("kernel/alarms.py", "import pkg.service.app\n", ["pkg.kernel.alarms imports pkg.service.app"]),
    ("sources/base.py", "from ..service.app import run\n", ["pkg.sources.base imports pkg.service.app.run"]),
    ("sources/base.py", "from pkg.inference import head\n", ["pkg.sources.base imports pkg.inference.head"]),
    ("sources/base.py", "import importlib\nM = importlib.import_module('pkg.service.app')\n",
     ["pkg.sources.base imports pkg.service.app"]),
    ("kernel/alarms.py", "if False:\n    from pkg.sources import base\n",
     ["pkg.kernel.alarms imports pkg.sources.base"]),
    ("service/app.py", "from pkg.kernel import alarms\nimport pkg.config\nfrom . import app\n", []),
    ("config.py", "from pkg.errors import E\n", []),
])
def test_the_check_sees_an_upward_import(tmp_path, module, code, expected):
    root = tmp_path / "pkg"
    for rel, text in FAKE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / module).write_text(textwrap.dedent(code))
    found = [str(e).rpartition(" (line")[0] for e in upward(root, parse_layers(FAKE_DOC))]
    assert found == expected


def test_the_check_sees_a_unit_no_layer_places(tmp_path):
    root = tmp_path / "pkg"
    for rel, text in {**FAKE, "outputs/__init__.py": ""}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    placed = {u for layer in parse_layers(FAKE_DOC) for u in layer.units}
    assert units(root) - placed == {"outputs/"}
