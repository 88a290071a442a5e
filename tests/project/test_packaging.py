"""The distributions as a user gets them: an sdist, a wheel built from it, installed in a fresh venv.

The sdist must hold everything the native build needs, the wheel built from it must hold the
compiled CPU module, ``py.typed`` and every subpackage (``kernels/`` as
``cfcam_fast.kernels``, no top-level ``bench`` or ``kernels``), and the command line must run
from that wheel alone, outside the checkout. A native build that fails must fail the wheel,
unless ``CFCAM_ALLOW_NO_NATIVE=1``, whose wheel records why for ``backend_status()``.
docs/install.md describes the build.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.packaging]

ROOT = Path(__file__).resolve().parents[2]
CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


def _run(argv: list, cwd: Path | None = None, env: dict | None = None, check: bool = True,
         timeout: float = 1200) -> subprocess.CompletedProcess:
    """Run ``argv`` quietly; on an unexpected exit status, fail with the command's output."""
    argv = [str(a) for a in argv]
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        pytest.fail(f"`{' '.join(argv)}` exited with status {done.returncode}\n"
                    f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}", pytrace=False)
    return done


def _only(paths) -> Path:
    found = list(paths)
    assert len(found) == 1, found
    return found[0]


def _unpack(sdist: Path, into: Path) -> Path:
    """The sdist's source tree, unpacked under ``into``."""
    with tarfile.open(sdist) as tar:
        tar.extractall(into, filter="data")
    return _only(into.iterdir())


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> tuple[Path, Path]:
    """``(sdist, wheel)``: ``python -m build --sdist`` of the checkout, then a wheel built from
    that sdist's unpacked tree (with build isolation, so pyproject's build requirements are
    all the build gets)."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--sdist", "--outdir", out, ROOT])
    sdist = _only(out.glob("*.tar.gz"))
    source = _unpack(sdist, tmp_path_factory.mktemp("sdist"))
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", out, source])
    return sdist, _only(out.glob("*.whl"))


def _venv(path: Path) -> Path:
    """A new virtual environment without pip (this interpreter's pip installs into it); its python."""
    _run([sys.executable, "-m", "venv", "--without-pip", path])
    return path / "bin" / "python"


def _pip_install(python: Path, *args) -> None:
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", *args])


def _pins() -> list[str]:
    """This environment's torch and torchvision releases (here they install from local disk)."""
    pins = [f"torch=={torch.__version__.split('+')[0]}"]
    try:
        pins.append(f"torchvision=={metadata.version('torchvision').split('+')[0]}")
    except metadata.PackageNotFoundError:
        pass
    return pins


@pytest.fixture(scope="module")
def installed(dists, tmp_path_factory) -> Iterator[Path]:
    """The bin folder of a fresh venv with the wheel and its ``[models]`` extra installed;
    removed afterwards (with PyTorch it takes gigabytes)."""
    root = tmp_path_factory.mktemp("venv")
    python = _venv(root / "env")
    _pip_install(python, f"{dists[1]}[models]", *_pins())
    yield python.parent
    shutil.rmtree(root, ignore_errors=True)


def _in_venv(bin_dir: Path, argv: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command of the venv from ``cwd``, a folder outside the checkout."""
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return _run([bin_dir / argv[0], *argv[1:]], cwd=cwd, env={**clean, **(env or {})})


def test_sdist_holds_the_native_build_and_no_build_output(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    wanted = {"CMakeLists.txt", "LICENSE", "README.md", "pyproject.toml", "setup.py", "cfcam_fast/py.typed",
              "kernels/__init__.py", "cfcam_fast/benchmark/runner.py"}
    wanted |= {f"csrc/{p.name}" for p in (ROOT / "csrc").iterdir() if p.is_file()}
    assert wanted <= names, sorted(wanted - names)
    assert not [n for n in names if n.endswith((".so", "_native_build.json"))]


def test_wheel_from_the_sdist_holds_the_native_module_and_every_package(dists):
    _, wheel = dists
    names = zipfile.ZipFile(wheel).namelist()
    assert "-py3-none-any" not in wheel.name  # a platform wheel: it holds a compiled module
    assert [n for n in names if n.startswith("cfcam_fast/_native_cpu") and n.endswith(".so")], names
    assert "cfcam_fast/_native_build.json" not in names  # written only when the build failed
    packages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "cfcam_fast").rglob("__init__.py")}
    wanted = packages | {"cfcam_fast/py.typed", "cfcam_fast/kernels/__init__.py", "cfcam_fast/benchmark/runner.py"}
    assert wanted <= set(names), sorted(wanted - set(names))
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"cfcam_fast"}, tops
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_the_command_line_runs_from_the_wheel(installed, tmp_path):
    """``--help``, ``bench --help`` and ``explain`` on two photos, from a folder where neither
    the checkout's ``bench/`` nor its ``kernels/`` can be imported."""
    from PIL import Image
    from skimage import data

    assert "explain" in _in_venv(installed, ["cfcam-fast", "--help"], tmp_path).stdout
    assert "--repeats" in _in_venv(installed, ["cfcam-fast", "bench", "--help"], tmp_path).stdout
    Image.fromarray(data.chelsea()).save(tmp_path / "cat.png")
    Image.fromarray(data.coffee()).save(tmp_path / "coffee.jpg")
    out = tmp_path / "out"
    _in_venv(installed, ["cfcam-fast", "explain", "cat.png", "coffee.jpg", "--device", "cpu", "--out", out],
             tmp_path)
    assert len([p for p in out.rglob("*_cfcam.png") if p.stat().st_size > 0]) == 2
    records = _explain_records(out)
    assert sorted(Path(r["file"]).name for r in records) == ["cat.png", "coffee.jpg"]
    cat = next(r for r in records if r["file"].endswith("cat.png"))
    assert cat["class"] in CAT_CLASSES  # the [models] extra brought the pretrained weights


def _explain_records(out: Path) -> list[dict]:
    """explain's per-image records: ``results.jsonl``, or the entries of ``summary.json``."""
    if (out / "results.jsonl").is_file():
        return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line]
    return json.loads((out / "summary.json").read_text())


def test_the_wheel_has_native_dbscan_and_its_kernels_inside_the_package(installed, tmp_path):
    code = ("import importlib.util, json\nimport cfcam_fast as cf, cfcam_fast.kernels\n"
            "print(json.dumps({'status': cf.backend_status(), 'kernels': cfcam_fast.kernels.__file__,\n"
            "    'cfcam_fast': cf.__file__, 'top': [m for m in ('kernels', 'bench')\n"
            "    if importlib.util.find_spec(m)]}))\n")
    found = json.loads(_in_venv(installed, ["python", "-c", code], tmp_path).stdout)
    native = {k: v for k, v in found["status"].items() if "dbscan" in k and "native" in k}
    assert list(native.values()) == ["available"], found["status"]
    package = Path(found["cfcam_fast"]).parent
    assert package.parent.name == "site-packages"  # the wheel's copy, not the checkout's
    assert Path(found["kernels"]) == package / "kernels" / "__init__.py"
    assert found["top"] == []


def test_the_checkout_maps_kernels_into_the_package():
    """An editable install (``make test``) imports ``cfcam_fast.kernels`` from ``kernels/``."""
    import cfcam_fast

    spec = importlib.util.find_spec("cfcam_fast.kernels")
    if Path(cfcam_fast.__file__).parent != ROOT / "cfcam_fast":
        pytest.skip("cfcam_fast is not installed from this checkout (not editable)")
    assert Path(spec.origin) == ROOT / "kernels" / "__init__.py"


def test_a_failed_native_build_fails_unless_allowed_and_then_says_why(dists, installed, tmp_path):
    """A C++ compiler that cannot compile fails the wheel; with ``CFCAM_ALLOW_NO_NATIVE=1`` the
    wheel builds without ``_native_cpu`` and ``backend_status()`` reports the build's error."""
    sdist, _ = dists
    broken = {**os.environ, "CXX": "/bin/false"}
    build = [sys.executable, "-m", "build", "--wheel", "--no-isolation"]  # isolation is checked above
    failed = _run([*build, "--outdir", tmp_path / "refused", _unpack(sdist, tmp_path / "a")], env=broken,
                  check=False)
    assert failed.returncode != 0
    assert "CFCAM_ALLOW_NO_NATIVE=1" in failed.stdout + failed.stderr
    assert not list((tmp_path / "refused").glob("*.whl"))

    _run([*build, "--outdir", tmp_path / "allowed", _unpack(sdist, tmp_path / "b")],
         env={**broken, "CFCAM_ALLOW_NO_NATIVE": "1"})
    wheel = _only((tmp_path / "allowed").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert [n for n in names if n.startswith("cfcam_fast/_native_")] == ["cfcam_fast/_native_build.json"]
    # Installed beside the good wheel, ahead of it on the path: the dependencies are the venv's.
    target = tmp_path / "no_native"
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", target, wheel])
    code = "import json, cfcam_fast as cf\nprint(json.dumps(cf.backend_status()))\n"
    status = json.loads(_in_venv(installed, ["python", "-c", code], tmp_path, {"PYTHONPATH": str(target)}).stdout)
    native = [v for k, v in status.items() if "dbscan" in k and "native" in k]
    assert len(native) == 1 and "CFCAM_ALLOW_NO_NATIVE=1" in native[0] and "/bin/false" in native[0], status
