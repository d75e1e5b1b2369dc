"""docs/architecture.md names what exists and nothing that does not: every module of the package,
every thread the code names, every config section and every command; each read from the code (the
package's files, its AST, the config model, the CLI parser), so a module, thread, section or command
added or removed without the doc fails here."""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest

from inspector.config import InspectorConfig
from tests.doc_tables import ARCHITECTURE, REPO, code_names, first_table, section
from tests.test_cli_help import COMMANDS

PACKAGE = REPO / "inspector"
DOC = ARCHITECTURE.read_text()


# -- modules -------------------------------------------------------------------------------------------
def modules_in_code(root: Path = PACKAGE) -> set[str]:
    """Every .py of the package, as inspector/<path>; an `__init__.py` only when it holds more than a
    docstring (an empty one is its folder, which the folder's row names)."""
    out = set()
    for p in root.rglob("*.py"):
        if p.name == "__init__.py":
            body = ast.parse(p.read_text()).body
            if all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body):
                continue
        out.add(str(p.relative_to(root.parent)))
    return out


def modules_in_doc(doc: str = DOC) -> tuple[set[str], set[str]]:
    """(modules, folders) named by the package table: its first column is a folder (`inspector/` or a
    path under it, `sources/`), its second the folder's modules (`base.py`)."""
    modules, folders = set(), set()
    for row in first_table(doc, "## The package, folder by folder"):
        names = code_names(row["folder"])
        assert len(names) == 1 and names[0].endswith("/"), f"folder cell: one `folder/`, got {row['folder']!r}"
        folder = names[0] if names[0].startswith("inspector/") else f"inspector/{names[0]}"
        folders.add(folder)
        modules |= {folder + m for m in code_names(row["modules"]) if m.endswith(".py")}
    return modules, folders


def test_the_doc_names_every_module_and_only_those():
    named, folders = modules_in_doc()
    present = modules_in_code()
    assert sorted(present - named) == [], f"{ARCHITECTURE.name}: modules the package table does not name"
    assert sorted(named - present) == [], f"{ARCHITECTURE.name}: modules named that do not exist"
    packages = {str(p.parent.relative_to(PACKAGE.parent)) + "/" for p in PACKAGE.rglob("__init__.py")}
    assert sorted(packages - folders) == [], f"{ARCHITECTURE.name}: packages without a row"
    assert sorted(folders - packages) == [], f"{ARCHITECTURE.name}: rows for folders that are not packages"


# -- threads -------------------------------------------------------------------------------------------
def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _name_of(node: ast.expr | None) -> str | None:
    """A constant string, or an f-string with `*` for each formatted part (f"stop-{name}" -> stop-*)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "*" for v in node.values)
    return None


def _arg(node: ast.Call, index: int, keyword: str) -> ast.expr | None:
    for k in node.keywords:
        if k.arg == keyword:
            return k.value
    return node.args[index] if len(node.args) > index else None


def threads_in_code(root: Path = PACKAGE) -> tuple[set[str], list[str]]:
    """(names, unnamed): the name of each thread the package starts (`threading.Thread(name=...)`, a
    thread pool's `thread_name_prefix` as `<prefix>_*`), of each native thread it adopts
    (`realtime.adopt`/`adopt_thread`: OpenVINO's, paho's) and each name a thread takes in ps/top when
    it lowers its priority (`lower_thread_priority`); and where a thread or pool is started unnamed."""
    names, unnamed = set(), []
    for p in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if not isinstance(node, ast.Call):
                continue
            where = f"{p.relative_to(root.parent)}:{node.lineno}"
            call = _call_name(node)
            if call == "Thread":
                name = _name_of(_arg(node, 2, "name"))
                if name is None:
                    unnamed.append(where)
                else:
                    names.add(name)
            elif call == "ThreadPoolExecutor":
                prefix = _name_of(_arg(node, 1, "thread_name_prefix"))
                if prefix is None:
                    unnamed.append(where)
                else:
                    names.add(f"{prefix}_*")
            elif call in ("adopt", "adopt_thread", "lower_thread_priority"):
                index = {"adopt": 2, "adopt_thread": 2, "lower_thread_priority": 0}[call]
                name = _name_of(_arg(node, index, "what" if call == "lower_thread_priority" else "name"))
                if name is not None:  # a variable: a name passed on from a caller, found at the caller
                    names.add(name)
    return names, unnamed


THREAD_HEADING = "## Threads and who owns what"


def threads_in_doc(doc: str = DOC) -> set[str]:
    out = set()
    for row in first_table(doc, THREAD_HEADING):
        out |= set(code_names(row["thread"])) | set(code_names(row["in ps/top"]))
    return out


def test_every_thread_is_named():
    assert threads_in_code()[1] == [], "threads or pools started without a name (ps/top and the report need one)"


def test_the_doc_names_every_thread_and_only_those():
    in_code, in_doc = threads_in_code()[0], threads_in_doc()
    assert sorted(in_code - in_doc) == [], f"{ARCHITECTURE.name} {THREAD_HEADING}: threads the table does not name"
    assert sorted(in_doc - in_code) == [], f"{ARCHITECTURE.name} {THREAD_HEADING}: names no thread has"


@pytest.mark.parametrize("code, expected", [
    ("threading.Thread(target=f, name='a-b')", ({"a-b"}, [])),
    ("Thread(target=f, name=f'stop-{x}', daemon=True)", ({"stop-*"}, [])),
    ("threading.Thread(target=f, daemon=True)", (set(), ["pkg/m.py:1"])),
    ("ThreadPoolExecutor(4, thread_name_prefix='upload')", ({"upload_*"}, [])),
    ("ThreadPoolExecutor(4)", (set(), ["pkg/m.py:1"])),
    ("realtime.adopt(ids, 'frame', 'ov-infer')", ({"ov-infer"}, [])),
    ("realtime.adopt_thread(t, 'frame', name='mqtt-network')", ({"mqtt-network"}, [])),
    ("lower_thread_priority('verdict log')", ({"verdict log"}, [])),
    ("lower_thread_priority(name, tid=tid)", (set(), [])),
])
def test_the_thread_walk(tmp_path, code, expected):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(code + "\n")
    assert threads_in_code(tmp_path / "pkg") == expected


# -- config sections and commands ----------------------------------------------------------------------
def test_the_doc_names_every_config_section_and_only_those():
    named = {code_names(row["section"])[0] for row in first_table(DOC, "### Config")}
    assert sorted(named ^ set(InspectorConfig.model_fields)) == [], \
        f"{ARCHITECTURE.name} ### Config: sections named here vs inspector/config.py (either side only)"


def test_the_doc_names_every_command_and_only_those():
    leaves = {name for name, _ in COMMANDS
              if not any(n.startswith(name + " ") for n, _ in COMMANDS)}
    named = set()
    for row in first_table(DOC, "### Command line"):
        spans = code_names(row["command"])
        assert spans and spans[0].startswith("inspector "), f"command cell starts with `inspector ...`: {row}"
        words = spans[0].split()[1:]  # the command's words end at its first option or argument
        named.add(" ".join(itertools.takewhile(lambda w: re.fullmatch(r"[a-z][a-z0-9-]*", w), words)))
    assert sorted(named ^ leaves) == [], \
        f"{ARCHITECTURE.name} ### Command line: commands named here vs `inspector --help` (either side only)"


def test_the_sections_the_checks_read_exist():
    for heading in ("## Layers", "## The package, folder by folder", THREAD_HEADING, "### Config",
                    "### Command line", "## Extension points"):
        assert section(DOC, heading).strip(), heading
