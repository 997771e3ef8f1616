"""A non-editable install (a wheel: `pip install .`, the Docker image) carries the tracking plan.

The wheel is built once from a copy of what the Dockerfile copies (pyproject.toml, README.md,
pipeline, agents, tables, schemas), the copy is deleted, and the wheel is installed with
``--no-deps`` into a fresh venv that does not see the checkout. The dependencies come from the
dev venv through a ``.pth`` path line, which puts that site-packages on ``sys.path`` but does
not process its own ``.pth`` files, so the dev venv's editable finder stays inactive. To prove
that the installed copy is what runs, an audit hook in the fresh venv logs every file opened
under the checkout (other than those dependencies) and every plan file opened, for the CLI
and for the worker it starts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from pipeline.contract.plan import load_plan
from pipeline.tools.broker import free_port

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "agents", "tables")
DEPS = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
LOG_ENV = "TRACKFLOW_TEST_OPEN_LOG"
NO_DEPS = ("--no-deps", "--no-index")

# Imported at start-up of every interpreter of the fresh venv (an `import` line in a .pth).
AUDIT_HOOK = f"""
import os, sys

_log = os.environ.get({LOG_ENV!r})
if _log:
    _fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    _repo = {str(REPO) + os.sep!r}
    _deps = tuple(d + os.sep for d in {DEPS!r})

    def _hook(event, args):
        if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        path = os.path.abspath(os.fsdecode(args[0]))
        foreign = (path.startswith(_repo) and not path.startswith(_deps)) or (
            "__editable__" in path
        )
        if foreign or path.endswith((".avsc", ".json")):
            kind = "FOREIGN" if foreign else "ok"
            os.write(_fd, f"{{os.getpid()}} {{kind}} {{path}}\\n".encode())

    sys.addaudithook(_hook)
"""

PROBE = """
import json, sys
import pipeline
from pipeline.alerting.rules import load_alert_rules
from pipeline.contract.plan import default_schemas_dir, load_plan
from pipeline.identity.rules import load_identity_rules
from pipeline.metrics.definitions import load_metrics

plan = load_plan()
print(json.dumps({
    "pipeline": pipeline.__file__,
    "schemas": str(default_schemas_dir()),
    "plan_root": str(plan.root),
    "events": sorted(plan.latest),
    "identity_types": list(load_identity_rules().types),
    "metrics": sorted(load_metrics(plan)),
    "alerts": sorted(load_alert_rules()),
    "meta_path": [repr(f) for f in sys.meta_path],
    "modules": sorted(sys.modules),
    "sys_path": sys.path,
}))
"""


def run(
    cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def repo_files(top: str) -> set[str]:
    """Files under REPO/top as wheel paths, without caches and hidden editor/OS files."""
    root = REPO / top
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TRACKFLOW_")
        and k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}
    }
    return {**env, "PYTHONNOUSERSITE": "1", **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in (*PACKAGES, "schemas"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    # Build isolation, as `pip install .` does: setuptools from build-system.requires.
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)])
    shutil.rmtree(src)  # nothing installed can fall back on the build tree
    (whl,) = out.glob("trackflow-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", str(root)])
    python = root / "bin" / "python"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            *NO_DEPS,
            str(wheel),
        ],
        env=clean_env(),
    )
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    site_dir = Path(site.stdout.strip())
    assert site_dir.is_relative_to(root)
    # After the install, so pip never saw the dev venv's editable trackflow.
    (site_dir / "_trackflow_test_deps.pth").write_text("".join(f"{d}\n" for d in DEPS))
    (site_dir / "_trackflow_test_audit.py").write_text(AUDIT_HOOK)
    (site_dir / "_trackflow_test_audit.pth").write_text("import _trackflow_test_audit\n")
    return root


def site_packages(venv: Path) -> Path:
    (site,) = (venv / "lib").glob("python3.*/site-packages")
    return site


def opened(log: Path) -> list[tuple[int, str, str]]:
    if not log.exists():
        return []
    return [
        (int(pid), kind, path)
        for pid, kind, path in (line.split(" ", 2) for line in log.read_text().splitlines())
    ]


def test_wheel_ships_every_module_and_every_schemas_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("pipeline/contract/schemas/") for n in names}
    missing = repo_files("schemas") - shipped
    assert not missing, f"schemas/ files missing from the wheel: {sorted(missing)}"
    modules = {f"{pkg}/{f}" for pkg in PACKAGES for f in repo_files(pkg) if f.endswith(".py")}
    missing = (modules | {"pipeline/py.typed"}) - names
    assert not missing, f"missing from the wheel (list new packages in pyproject): {missing}"
    assert not any(n.startswith("schemas/") for n in names), "schemas/ must not be top level"


def test_installed_copy_loads_the_plan_from_the_package(venv: Path, tmp_path: Path) -> None:
    log = tmp_path / "opened.log"
    probe = run(
        [str(venv / "bin" / "python"), "-c", PROBE],
        cwd=tmp_path,
        env=clean_env(**{LOG_ENV: str(log)}),
    )
    got = json.loads(probe.stdout)
    site = site_packages(venv)
    assert Path(got["pipeline"]).is_relative_to(site)
    assert Path(got["schemas"]) == site / "pipeline" / "contract" / "schemas"
    assert Path(got["plan_root"]) == Path(got["schemas"])
    # Not the dev venv's editable finder, not the checkout on sys.path.
    assert not [f for f in got["meta_path"] if "Editable" in f], got["meta_path"]
    assert not [m for m in got["modules"] if "editable" in m]
    assert not [p for p in got["sys_path"] if p and Path(p).resolve() in (REPO, REPO / "schemas")]
    # The same plan as the checkout's, read from the installed files only.
    repo_plan = load_plan(REPO / "schemas")
    assert got["events"] == sorted(repo_plan.latest)
    assert got["identity_types"]
    assert got["metrics"]
    assert got["alerts"]
    files = opened(log)
    assert not [f for f in files if f[1] == "FOREIGN"], files
    schemas = Path(got["schemas"])
    read = {
        Path(path).relative_to(schemas).as_posix()
        for _, _, path in files
        if Path(path).is_relative_to(schemas)
    }
    assert {"envelope/v1.avsc", "identity/rules.v1.json"} <= read
    dirs = {path.rsplit("/", 1)[0] for path in read}
    assert {f"events/{e}" for e in got["events"]} <= dirs
    assert {f"metrics/{m}" for m in got["metrics"]} <= dirs
    assert {f"alerts/{a}" for a in got["alerts"]} <= dirs


def test_installed_demo_runs_from_another_directory(venv: Path, tmp_path: Path) -> None:
    log = tmp_path / "opened.log"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    port = free_port()
    proc = subprocess.run(
        [str(venv / "bin" / "trackflow"), "demo", "--duration", "8", "--web-port", str(port)],
        cwd=cwd,
        env=clean_env(COLUMNS="200", **{LOG_ENV: str(log)}),
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = proc.stdout + proc.stderr
    worker_log = cwd / "data" / "worker.log"
    tail = worker_log.read_text()[-3000:] if worker_log.exists() else "(no worker.log)"
    assert proc.returncode == 0, f"demo exited {proc.returncode}\n{out[-5000:]}\n{tail}"
    stored = re.search(r"events stored in the lake\s*│\s*([\d,]+)", out)
    assert stored, out[-5000:]
    assert int(stored.group(1).replace(",", "")) > 0, out[-5000:]
    by_name = out[out.index("events stored by name") :].split("└", 1)[0]
    rows = dict(re.findall(r"│\s*([a-z_]+)\s*│\s*(\d+)\s*│", by_name))
    assert sum(map(int, rows.values())) > 0, by_name
    assert set(rows) <= set(load_plan(REPO / "schemas").latest)
    # Both the CLI and the worker it started read the plan, from the installed package only.
    files = opened(log)
    assert not [f for f in files if f[1] == "FOREIGN"], files
    schemas = site_packages(venv) / "pipeline" / "contract" / "schemas"
    readers = {pid for pid, _, path in files if Path(path).is_relative_to(schemas)}
    assert len(readers) >= 2, files
