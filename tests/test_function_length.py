"""No function in engine/ is over 80 lines (issue 13): a long one is split along its stages
(see export_gguf, _train_locked, prepare_dataset, read_json)."""
from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "engine"
LIMIT = 80


def test_no_engine_function_is_over_80_lines():
    long = []
    for path in sorted(ENGINE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LIMIT:
                    long.append(f"{path.relative_to(ENGINE.parent)}:{node.lineno} "
                                f"{node.name} ({lines} lines)")
    assert not long, "split these along their stages:\n" + "\n".join(long)
