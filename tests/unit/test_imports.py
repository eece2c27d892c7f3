"""The layering rules of docs/architecture.md, read from the source (no imports run):
no import circles, every import going down the layers, no arrow from the pipeline into the
command line or the tools, no private name (`_x`) of a project module used outside it, and no
module over the size we keep."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cli", "flows", "tasks", "infra", "models", "data", "report", "tools", "bench", "scripts")
PIPELINE = ("flows", "tasks", "infra", "models", "data", "report")  # what `src-iterate` runs
MAX_LINES = 400
# docs/architecture.md: each layer imports only those below it (cli, tools, bench and scripts
# are entry points over all of them)
LAYERS = ("flows", "tasks", "infra", "report", "models", "data")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            out[name] = f
    return out


def imports(f: Path, known: dict[str, Path]) -> list[tuple[str, str | None, int]]:
    """(module, imported name or None, line) of every import of a project module in `f`."""
    out = []
    for node in ast.walk(ast.parse(f.read_text(), str(f))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if sub in known:
                    out.append((sub, None, node.lineno))
                elif node.module in known:
                    out.append((node.module, a.name, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name in known]
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: {t for t, _, _ in imports(f, known) if t != m} for m, f in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_checks_find_what_they_look_for():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    g = graph()
    assert "infra.store" in g["flows.runner"] and "flows.src_iterate" in g["cli.main"]


def test_no_import_circles():
    assert cycles(graph()) == []


def test_every_import_goes_down_the_layers():
    rank = {layer: n for n, layer in enumerate(LAYERS)}
    up = [(a, b) for a, targets in graph().items() if a.split(".")[0] in rank
          for b in targets if b.split(".")[0] in rank and rank[b.split(".")[0]] < rank[a.split(".")[0]]]
    assert up == []


def test_the_layer_order_is_the_one_the_architecture_page_states():
    page = (ROOT / "docs" / "architecture.md").read_text()
    part = page.split("The layers, each importing only those below it:")[1].split("\n\n")[0]
    stated = [name for ln in part.splitlines() if ln.startswith("- `") for name in re.findall(r"`(\w+)/`", ln)]
    assert [s for s in stated if s in LAYERS] == list(LAYERS)


# third-party modules a pipeline function imports when it runs, not at module top, and why:
# optional extras (a machine without them still runs everything else) or seconds of import
# time that only some commands pay
LAZY = {
    "vllm": "optional, CUDA only (search.backend=vllm)", "prefect_ray": "optional, Ray clusters",
    "mlflow": "~2 s; only a tracked run", "matplotlib": "only the report draws",
    "transformers": "~3 s; only stages that load a model", "trl": "~4 s; only training",
    "peft": "only LoRA", "datasets": "~1 s; only training and hub data", "torch": "~1 s; the CLI without a model",
    "huggingface_hub": "only a hub id offline", "PIL": "only images", "numpy": "only plots",
    "pandas": "only tables", "tqdm": "only a terminal's progress bar", "prefect": "retraining's run logger",
}


def test_the_pipeline_imports_its_own_modules_at_the_top():
    """Every dependency between project modules is visible in the import block; what a function
    imports lazily is third-party and named in LAZY."""
    known, bad = modules(), []
    for m, f in known.items():
        if not m.startswith(PIPELINE):
            continue
        for fn in ast.walk(ast.parse(f.read_text(), str(f))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                    name = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                    top = name.split(".")[0]
                    if top in PACKAGES or top not in LAZY:
                        bad.append(f"{m}:{node.lineno} imports {name} inside {fn.name}")
    assert bad == []


def test_the_pipeline_never_imports_the_command_line_or_a_tool():
    bad = [(a, b) for a, targets in graph().items() if a.startswith(PIPELINE)
           for b in targets if b.startswith(("cli", "tools"))]
    assert bad == []


def test_no_private_name_is_used_outside_its_module():
    known = modules()
    bad = []
    for m, f in known.items():
        tree = ast.parse(f.read_text(), str(f))
        found = imports(f, known)
        bad += [f"{m}:{line} imports {t}.{name}" for t, name, line in found
                if name and name.startswith("_") and t != m]
        # `module._name` on a project module imported as a whole
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases.update({(a.asname or a.name): a.name for a in node.names if a.name in known})
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                aliases.update({(a.asname or a.name): f"{node.module}.{a.name}" for a in node.names
                                if f"{node.module}.{a.name}" in known})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in aliases):
                bad.append(f"{m}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert bad == []


def test_every_module_stays_small():
    big = {m: n for m, f in modules().items() if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert big == {}
