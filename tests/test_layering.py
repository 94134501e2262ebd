"""The packages depend one way: captum_deconvnet <- lightning_zfnet <- the programs
(benchmarks, reports, experiments, explorer). The Captum plugin works without
Lightning."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = {"benchmarks", "reports", "experiments", "explorer"}
# What each package must not import: everything above it.
FORBIDDEN = {
    "captum_deconvnet": {"lightning_zfnet", "pytorch_lightning", "lightning"}
    | PROGRAMS,
    "lightning_zfnet": PROGRAMS,
    "benchmarks": PROGRAMS - {"benchmarks"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every absolute import in a file, also inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_one_above_it(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    upward = {
        str(path.relative_to(ROOT)): sorted(names)
        for path in files
        if (names := imported_packages(path) & FORBIDDEN[package])
    }
    assert upward == {}


def test_the_captum_plugin_imports_without_lightning():
    # Lightning made unimportable: the attribution classes and analyses still load.
    code = (
        "import sys; sys.modules['pytorch_lightning'] = None; "
        "sys.modules['lightning'] = None; import captum_deconvnet as c; "
        "assert c.DeconvNet and c.OcclusionSensitivity and c.feature_atlas"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
