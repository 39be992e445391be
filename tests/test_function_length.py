"""No function in engine/ or app/ is over 80 lines (issue 13): a long one is split along its
stages (see export_gguf, _train_locked, prepare_dataset, read_json) or, for a page's layout,
by group box (the Train and Export pages' _build_* methods)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 80


def long_functions(folder: Path) -> list[str]:
    long = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LIMIT:
                    long.append(f"{path.relative_to(folder.parent)}:{node.lineno} "
                                f"{node.name} ({lines} lines)")
    return long


@pytest.mark.parametrize("package", ["engine", "app"])
def test_no_function_is_over_80_lines(package):
    long = long_functions(ROOT / package)
    assert not long, "split these along their stages:\n" + "\n".join(long)


def test_the_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(f"def f():\n{body}\n", encoding="utf-8")
    (tmp_path / "pkg" / "ok.py").write_text("def g():\n    return 1\n", encoding="utf-8")
    assert long_functions(tmp_path / "pkg") == [f"pkg/m.py:1 f ({LIMIT + 1} lines)"]
