"""The runtime dependencies pyproject.toml declares are the ones the product imports (issue 23):
`pip install tailor` pulls nothing engine/ and app/ never import, and nothing they import is
missing from the list (it would work here only because something else pulled it in)."""
from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PRODUCT = ("engine", "app")

# Imported by the product but deliberately optional: a declared extra installs it, and the code
# that imports it says what is skipped without it.
# None now: llama-cpp-python, the one there was, is a runtime dependency (the export's load
# check in llama.cpp is part of the product; test_llama_cpp_is_a_runtime_dependency).
OPTIONAL_IMPORTS: dict[str, str] = {}


def normalize(name: str) -> str:
    """PEP 503: PySide6_Essentials, pyside6-essentials and PySide6.Essentials are one name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalize(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1))


def declared(pyproject: dict) -> set[str]:
    return {requirement_name(r) for r in pyproject["project"]["dependencies"]}


def extras(pyproject: dict) -> set[str]:
    return {requirement_name(r) for group in
            pyproject["project"].get("optional-dependencies", {}).values() for r in group}


def top_level_imports(roots=PRODUCT) -> dict[str, set[str]]:
    """Every absolute import under ``roots`` (function-level ones included): top-level module
    name -> the files importing it."""
    found: dict[str, set[str]] = {}
    for root in roots:
        for path in sorted((REPO / root).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(
                        str(path.relative_to(REPO)))
    return found


def third_party(imports: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: files for m, files in imports.items()
            if m not in sys.stdlib_module_names and m not in PRODUCT and m != "__future__"}


def distributions_of(imports, packages=None) -> dict[str, set[str]]:
    """Import name -> the normalized distribution names that provide it (mlx: mlx, mlx-cpu)."""
    packages = packages if packages is not None else metadata.packages_distributions()
    return {m: {normalize(d) for d in packages.get(m, [])} for m in imports}


def compare(declared_names: set[str], imports: dict[str, set[str]], packages=None,
            optional=OPTIONAL_IMPORTS) -> tuple[list[str], list[str]]:
    """(unused declared distributions, undeclared imports with the files importing them)."""
    imports = third_party(imports)
    provided = distributions_of(imports, packages)
    used: set[str] = set()
    undeclared = []
    for module, dists in sorted(provided.items()):
        used |= dists
        if module in optional:
            continue
        if not dists & declared_names:
            where = ", ".join(sorted(imports[module])[:3])
            source = ", ".join(sorted(dists)) or "no installed distribution"
            undeclared.append(f"{module} (from {source}; imported by {where})")
    unused = sorted(d for d in declared_names if d not in used)
    return unused, undeclared


def load_pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_runtime_dependency_is_imported_and_every_import_declared():
    unused, undeclared = compare(declared(load_pyproject()), top_level_imports())
    assert not unused, (f"declared in pyproject.toml but imported nowhere in engine/ or app/: "
                        f"{unused}")
    assert not undeclared, f"imported but not a declared runtime dependency: {undeclared}"


def test_optional_imports_are_installed_by_a_declared_extra():
    pyproject = load_pyproject()
    for module, dist in OPTIONAL_IMPORTS.items():
        assert normalize(dist) in extras(pyproject), f"{module}: {dist} is in no extra"
        assert normalize(dist) not in declared(pyproject)


def test_the_check_names_an_unused_and_an_undeclared_dependency():
    # the comparison itself, on a made-up project: it is what fails when pyproject drifts
    packages = {"numpy": ["numpy"], "yaml": ["PyYAML"], "PySide6": ["PySide6_Essentials"]}
    imports = {"numpy": {"engine/a.py"}, "yaml": {"engine/b.py"}, "json": {"engine/a.py"},
               "PySide6": {"app/c.py"}, "engine": {"app/c.py"}}
    unused, undeclared = compare({"numpy", "ollama", "pyside6-essentials"}, imports, packages,
                                 optional={})
    assert unused == ["ollama"]
    assert len(undeclared) == 1 and undeclared[0].startswith("yaml (from pyyaml; imported by "
                                                             "engine/b.py")


def test_license_is_an_spdx_expression():
    license_ = load_pyproject()["project"]["license"]
    assert isinstance(license_, str) and re.fullmatch(r"[A-Za-z0-9.+-]+", license_), license_
    assert metadata.metadata("tailor").get("License-Expression") in (None, license_)


def test_llama_cpp_is_a_runtime_dependency_and_bundled_in_the_app():
    # `pip install tailor` gets llama.cpp: without it no export would be verified
    assert "llama-cpp-python" in declared(load_pyproject())
    assert "llama-cpp-python" not in extras(load_pyproject())  # (one place, not two)
    # the frozen app collects it unconditionally (a build without it stops, saying why)
    spec = ast.parse((REPO / "packaging" / "tailor.spec").read_text(encoding="utf-8"))
    collected = next(node.iter for node in ast.walk(spec) if isinstance(node, ast.For)
                     and isinstance(node.iter, ast.Tuple)
                     and any(isinstance(e, ast.Constant) and e.value == "mlx_lm"
                             for e in node.iter.elts))
    assert "llama_cpp" in [e.value for e in collected.elts if isinstance(e, ast.Constant)]
