"""The rules of docs/architecture.md, checked on the source: imports flow one way down the
floors, no cycles, no private name imported across modules, and the few places that may read a
run's task or placement."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "preln"

FLOORS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundation",
        ("preln", "errors", "atomic", "process", "losses", "scores", "textio", "decoding", "toml_records", "config"),
    ),
    (
        "data and model",
        ("data", "model", "kv_cache", "dropout", "schedules", "optim", "locks", "loggers", "distributed"),
    ),
    ("run mechanics", ("checkpoint", "runs", "telemetry", "decode", "tokenizer_export", "predict", "model_init")),
    ("tasks", ("tasks",)),
    ("trainer and inference", ("trainer", "inference")),
    ("evaluation and export", ("evaluate", "export")),
    ("loop policy", ("fit", "finetune")),
    ("lab", ("lab",)),
    ("command line", ("cli", "commands", "__main__")),
]
"""docs/architecture.md's floors, lowest first; a module is on the floor of its top-level name
under ``preln`` (``data.batching`` is on ``data``'s)."""


def module_name(path: Path) -> str:
    parts = ["preln", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, str]]:
    """(imported module, imported name) of every ``preln`` import in the file, function-level ones
    included (a lazy import is still a dependency)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                is_module = (SRC.parent / sub.replace(".", "/")).with_suffix(".py").exists() or (
                    SRC.parent / sub.replace(".", "/")
                ).is_dir()
                out.append((sub if is_module else target, "" if is_module else alias.name))
        elif isinstance(node, ast.Import):
            out += [(a.name, "") for a in node.names]
    return [(m, n) for m, n in out if m == "preln" or m.startswith("preln.")]


def floor(module: str) -> int:
    top = module.split(".")[1] if "." in module else "preln"
    for i, (_, names) in enumerate(FLOORS):
        if top in names:
            return i
    raise AssertionError(f"{module}: on no floor of docs/architecture.md (add it to FLOORS and the doc)")


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}
GRAPH = {m: sorted({t for t, _ in imports(p)} - {m}) for m, p in MODULES.items()}


def test_every_module_is_on_a_floor():
    for m in MODULES:
        floor(m)


def test_imports_flow_down_the_floors():
    up = [
        f"{m} ({FLOORS[floor(m)][0]}) imports {t} ({FLOORS[floor(t)][0]})"
        for m, targets in GRAPH.items()
        for t in targets
        if floor(t) > floor(m)
    ]
    assert not up, "\n".join(up)


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in GRAPH.get(m, []):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(t) :], t]))
            if t in GRAPH and not state.get(t):
                visit(t, [*path, t])
        state[m] = 2

    for m in GRAPH:
        if not state.get(m):
            visit(m, [m])


def test_no_private_name_is_imported_across_modules():
    private = [
        f"{m} imports {name} from {t}"
        for m, p in MODULES.items()
        for t, name in imports(p)
        if name.startswith("_") and not name.startswith("__") and t != m
    ]
    assert not private, "\n".join(private)


@pytest.mark.parametrize(
    "module, forbidden, why",
    [
        ("preln.trainer", ("preln.evaluate", "preln.inference", "preln.decode", "preln.scores"), "BLEU is policy"),
        ("preln.runs", ("preln.model", "preln.trainer"), "a run folder is files; models are built elsewhere"),
        ("preln.export", ("preln.evaluate", "preln.scores"), "exporting loads no scorer"),
        ("preln.inference", ("preln.evaluate", "preln.scores"), "decoding loads no scorer"),
        ("preln.model", ("preln.data", "preln.trainer", "preln.losses"), "the model knows nothing of training"),
    ],
)
def test_named_separations(module, forbidden, why):
    bad = [t for t in GRAPH[module] if t.startswith(forbidden)]
    assert not bad, f"{module} imports {bad}: {why}"


NORM_READ = re.compile(r"\.norm\s*(==|!=|\bin\b)|\bnorm\s*(==|!=)\s*[\"']")


def test_the_task_is_asked_not_branched_on():
    """No ``task ==`` branch outside ``tasks/``: a module asks the run's ``Task`` (its rules on a
    config included: ``tasks.check``)."""
    branches = [
        f"{m}:{n}: {line.strip()}"
        for m, p in MODULES.items()
        if not m.startswith("preln.tasks")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\.task\s*(==|!=|in\b|not in\b)", line)
    ]
    assert not branches, "\n".join(branches)


def test_the_placement_is_read_in_model_py_only():
    """Below the lab, ``model.norm`` is read by ``model.py`` (Residual and Stack), by the config's
    own checks, and by ``export.py`` (which Transformers class computes the same function)."""
    allowed = {"preln.model", "preln.config", "preln.export"}
    readers = [
        f"{m}:{n}: {line.strip()}"
        for m, p in MODULES.items()
        if m not in allowed and not m.startswith("preln.lab")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if NORM_READ.search(line)
    ]
    assert not readers, "\n".join(readers)


def test_the_rules_fail_on_a_violation(tmp_path, monkeypatch):
    """The scanner sees an upward import, a lazy one included, and a private one."""
    fake = SRC / "model.py"
    code = "def f():\n    from .fit import train\n    from .runs import _private\n"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: code if self == fake else Path.open(self).read())
    found = imports(fake)
    assert ("preln.fit", "train") in found and ("preln.runs", "_private") in found
    assert floor("preln.fit") > floor("preln.model")


def test_the_loop_never_writes_the_trainers_fields():
    """fit.py (the policy) asks the Trainer and decides; the Trainer's state (data cursor, update
    count, best loss, telemetry, prefetch) is changed by the Trainer's own methods only."""
    tree = ast.parse((SRC / "fit.py").read_text())
    writes = []
    for node in ast.walk(tree):
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
        )
        flat = []
        while targets:  # a, b = ... assigns each element
            t = targets.pop()
            targets += t.elts if isinstance(t, (ast.Tuple, ast.List)) else []
            flat += [] if isinstance(t, (ast.Tuple, ast.List)) else [t]
        for target in flat:
            chain = target
            while isinstance(chain, (ast.Attribute, ast.Subscript)):
                chain = chain.value
            base = ast.unparse(target)
            if isinstance(target, (ast.Attribute, ast.Subscript)) and (
                (isinstance(chain, ast.Name) and chain.id in ("t", "trainer")) or base.startswith("self.t.")
            ):
                writes.append(f"fit.py:{node.lineno}: {base} = ...")
    assert not writes, "\n".join(writes)
