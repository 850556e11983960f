"""The package builds as an sdist and a binary wheel, and the wheel installs into a fresh
virtual environment with no compiler and runs (issue #17: `python -m build`, `pipx install .`)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sdist_and_binary_wheel_install_without_a_compiler(tmp_path: Path) -> None:
    src = tmp_path / "src"
    # a clean copy of the sources (no build products of the editable install)
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.so",
                                                             "*.c", "*.cpp", "__pycache__", "*.egg-info",
                                                             ".pytest_cache", ".hypothesis", "captures"))
    dist = tmp_path / "dist"
    # -O0: this checks the packaging, not the speed (a release build keeps -O3)
    res = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir",
                          str(dist), str(src)], capture_output=True, text=True, timeout=540,
                         env={**os.environ, "OBITUI_OPT": "-O0"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    sdists = list(dist.glob("obitui-*.tar.gz"))
    wheels = list(dist.glob("obitui-*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, os.listdir(dist)
    # a binary wheel for this platform, holding the compiled core
    assert "py3-none-any" not in wheels[0].name, wheels[0].name
    import zipfile
    names = zipfile.ZipFile(wheels[0]).namelist()
    for mod in ("shm", "fixed", "ring", "book"):
        assert any(n.startswith(f"obitui/core/{mod}.") and n.endswith(".so") for n in names), mod
    # a fresh venv, no compiler reachable: the wheel installs and its compiled core runs
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    env = {**os.environ, "CC": "/bin/false", "CXX": "/bin/false", "PATH": f"{env_dir / 'bin'}:/usr/bin:/bin"}
    res = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheels[0])],
                         capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    code = ("from obitui.core.book import OrderBook; from obitui.core.fixed import parse_fixed; "
            "import obitui.core.ring, obitui.core.shm; b = OrderBook(2, 5); "
            "b.apply_snapshot([['100.01', '1.5']], [['100.02', '2']]); print(b.top(1), parse_fixed('1.25', 2))")
    res = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert res.returncode == 0 and "100.01" in res.stdout and "125" in res.stdout, res.stdout + res.stderr
    res = subprocess.run([str(env_dir / "bin" / "obitui"), "--version"], capture_output=True, text=True,
                         timeout=60, env=env, cwd=tmp_path)
    from obitui import __version__
    assert res.returncode == 0 and res.stdout.strip() == f"obitui {__version__}", res.stderr
