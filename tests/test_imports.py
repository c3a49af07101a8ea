"""The import graph of the project's own modules, read from the source (every ``import``,
at module level or inside a function): imports point one way (channels, console and the
composition root → core → speech_models), and no module reaches itself through others."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "ivr", "chat", "console", "gridline", "speech_models")
ABOVE_CORE = ("ivr", "chat", "console", "gridline")

# Import cycles still to break, each a frozenset of its modules. The test fails when one of
# these is gone, so the list only shrinks (it is empty: keep it so).
KNOWN_CYCLES: set[frozenset[str]] = set()

# The imports that stay inside a function, each with its reason: every other import of
# production code is at the top of its module, where a reader sees what the module needs.
# Keyed (module, the imported module); the line itself carries a `# lazy: …` comment too.
ALLOWED_IMPORTS_IN_FUNCTIONS = {
    ("console.report_files", "weasyprint"): "loads Pango (about a second): only a PDF needs it",
    ("console.report_files", "openpyxl"): "under a second to import: only an XLSX needs it",
    ("core.platform.media_stores", "core.platform.media_s3"): "boto3 (about a second): only a bucket needs it",
    ("speech_models.text", "cn2an"): "0.15 s, in every process that reads an address: only numbers with units need it",
}
# importlib.import_module calls (imports a reader cannot see at the top either), with reasons.
ALLOWED_DYNAMIC_IMPORTS = {
    "gridline.cli": "each command's module loads when that command runs: `gridline --help` imports none",
}


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            modules[".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")] = path
    return modules


def _module_named(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported name lives in (``core.followup.sms.SMS_JOB`` → ``core.followup.sms``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module → {project module it imports: line of the first such import}."""
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = graph.setdefault(name, {})
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package
                    for _ in range(node.level - 1):
                        parent = parent.rpartition(".")[0]
                    base = f"{parent}.{base}" if base else parent
                targets = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                found = _module_named(target, modules)
                if found is not None and found != name:
                    edges.setdefault(found, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[frozenset[str]]:
    """The strongly connected groups of more than one module (Tarjan), each a cycle or several."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(frozenset(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_core_imports_no_channel_and_nothing_imports_the_composition_root():
    modules = project_modules()
    graph = import_graph(modules)
    wrong = sorted(
        f"{name}:{line} imports {target}"
        for name, edges in graph.items() for target, line in edges.items()
        if (name.startswith("core") and target.split(".")[0] in ABOVE_CORE)
        or (name.startswith("speech_models") and not target.startswith("speech_models"))
        or (target.startswith("gridline") and not name.startswith("gridline"))
    )
    assert wrong == []


def test_no_import_cycles_between_project_modules():
    graph = import_graph(project_modules())
    found = set(cycles(graph))
    new = [sorted(group) for group in found - KNOWN_CYCLES]
    assert new == [], f"import cycles: {new}"
    assert KNOWN_CYCLES - found == set(), "a known cycle is gone: take it off KNOWN_CYCLES"


def test_the_graph_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The checks above would pass on a blind reader: this one proves they can fail."""
    (tmp_path / "core").mkdir()
    (tmp_path / "chat").mkdir()
    for name in ("core/__init__.py", "chat/__init__.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "core" / "a.py").write_text("def f():\n    from core.b import g\n    return g\n")
    (tmp_path / "core" / "b.py").write_text("from . import a\nfrom chat.bot import x\n")
    (tmp_path / "chat" / "bot.py").write_text("x = 1\n")
    graph = import_graph(project_modules(tmp_path))
    assert graph["core.a"] == {"core.b": 2}
    assert graph["core.b"] == {"core.a": 1, "chat.bot": 2}
    assert cycles(graph) == [frozenset({"core.a", "core.b"})]


def imports_in_functions(modules: dict[str, Path]) -> list[tuple[str, int, str, str]]:
    """(module, line, imported module, the source line) of every ``import`` inside a function
    body, and of every ``importlib.import_module(...)`` or ``__import__(...)`` call anywhere
    (as the imported module ``importlib``)."""
    found = []
    for name, path in modules.items():
        source = path.read_text("utf-8")
        lines = source.splitlines()
        pending: list[tuple[ast.AST, bool]] = [(ast.parse(source), False)]
        while pending:
            node, in_function = pending.pop()
            for child in ast.iter_child_nodes(node):
                if in_function and isinstance(child, ast.Import):
                    found += [(name, child.lineno, alias.name, lines[child.lineno - 1]) for alias in child.names]
                elif in_function and isinstance(child, ast.ImportFrom):
                    found.append((name, child.lineno, child.module or "." * child.level, lines[child.lineno - 1]))
                elif isinstance(child, ast.Call) and ast.unparse(child.func) in DYNAMIC_IMPORTS:
                    found.append((name, child.lineno, "importlib", lines[child.lineno - 1]))
                function = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                pending.append((child, in_function or function))
    return sorted(found)


DYNAMIC_IMPORTS = ("importlib.import_module", "import_module", "__import__")


def _allowed(module: str, imported: str) -> bool:
    if imported == "importlib":
        return module in ALLOWED_DYNAMIC_IMPORTS
    return any(module == m and (imported == i or imported.startswith(f"{i}."))
               for m, i in ALLOWED_IMPORTS_IN_FUNCTIONS)


def test_imports_sit_at_the_top_but_for_a_handful_each_with_its_reason():
    found = imports_in_functions(project_modules())
    hidden = [f"{module}:{line} {text.strip()}" for module, line, imported, text in found
              if not _allowed(module, imported)]
    assert hidden == [], "move these to the top of their module (or, with a reason, onto the allowed list)"
    used = {(module, imported) for module, _, imported, _ in found}
    unused = [key for key in ALLOWED_IMPORTS_IN_FUNCTIONS
              if not any(m == key[0] and (i == key[1] or i.startswith(f"{key[1]}.")) for m, i in used)]
    unused += [m for m in ALLOWED_DYNAMIC_IMPORTS if (m, "importlib") not in used]
    assert unused == [], "no longer lazy: take it off the allowed list"
    assert len(ALLOWED_IMPORTS_IN_FUNCTIONS) + len(ALLOWED_DYNAMIC_IMPORTS) <= 6  # a handful, not a habit
    for module, line, _, text in found:  # the reason is beside the import too
        source = project_modules()[module].read_text("utf-8").splitlines()
        near = " ".join(source[max(0, line - 2):line]).lower()  # the line above, and the import's own
        assert "# lazy: " in near, f"{module}:{line} {text.strip()}: say why in a `# lazy: …` comment beside it"


def test_the_count_sees_imports_in_functions_methods_and_importlib(tmp_path):
    """The check above would pass on a blind counter: this one proves it can fail."""
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "__init__.py").write_text("")
    (tmp_path / "core" / "a.py").write_text(
        "import json\n"
        "import importlib\n"
        "def f():\n    import csv\n    return csv\n"
        "class C:\n    async def g(self):\n        from core import b\n        return b\n"
        "    h = lambda self: importlib.import_module('core.b')\n")
    (tmp_path / "core" / "b.py").write_text("x = 1\n")
    found = imports_in_functions(project_modules(tmp_path))
    assert [(module, line, imported) for module, line, imported, _ in found] == [
        ("core.a", 4, "csv"), ("core.a", 8, "core"), ("core.a", 10, "importlib")]
    assert not _allowed("core.a", "csv") and not _allowed("core.a", "importlib")
    assert _allowed("gridline.cli", "importlib") and _allowed("core.platform.media_stores", "core.platform.media_s3")
