"""The project's own packaging metadata: a first `make run` prints no setuptools banner."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

APPLY_PYPROJECT = """
from setuptools.dist import Distribution
from setuptools.config.pyprojecttoml import apply_configuration
apply_configuration(Distribution(), "pyproject.toml")
"""


def test_pyproject_metadata_raises_no_setuptools_warning():
    # `-W error` turns any SetuptoolsDeprecationWarning (e.g. `project.license` as a table,
    # deprecated since setuptools 77) into a failure; the build backend applies the same code.
    proc = subprocess.run([sys.executable, "-W", "error", "-c", APPLY_PYPROJECT], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Warning" not in proc.stderr
