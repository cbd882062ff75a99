"""The install: a plain `pip install .` compiles logo_attn._C against the torch of the environment it
installs into, even under build isolation (build_backend/backend.py); a build that cannot compile it
still installs and records why (setup.py); importing such an install warns once with the reason and
the fix, and every op still runs (logo_attn/_extension.py).

The builds here call the backend's hooks the way pip's default isolation does: the target's own
interpreter, its site-packages hidden by a sitecustomize on PYTHONPATH, setuptools from a separate
build environment. They run without a C++ compiler, so nothing is compiled and nothing is
downloaded; the real compile under real isolation is the compatibility stage of .ci/run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from logo_attn import _extension

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "build_backend", "logo_attn", "kernels", "csrc")
NO_COMPILER = "/nonexistent/c++"


def load_setup():
    """setup.py as a module: its helpers without running setup() (that happens only as __main__)."""
    spec = importlib.util.spec_from_file_location("logo_attn_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pyproject_uses_the_backend_with_the_supported_torch():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    system = config["build-system"]
    assert system["build-backend"] == "backend" and system["backend-path"] == ["build_backend"]
    assert not any(r.startswith("torch") for r in system["requires"]), "a static torch build requirement"
    spec = importlib.util.spec_from_file_location("logo_attn_backend", ROOT / "build_backend" / "backend.py")
    backend = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(backend)
    assert backend.TORCH_REQUIREMENT in config["project"]["dependencies"]


# --------------------------------------------------------------------------------------------------
# Builds the way pip's build isolation runs them
# --------------------------------------------------------------------------------------------------

# pip's sitecustomize, reduced: the interpreter's own site-packages leave sys.path, the build
# environment's enter it.
ISOLATION = """
import os, site, sys
hidden = {{os.path.normcase(p) for p in [*site.getsitepackages(), site.getusersitepackages()]}}
sys.path[:] = [p for p in sys.path if os.path.normcase(p) not in hidden]
site.addsitedir({build_env!r})
"""

# The frontend (pip) starts each hook in a child process of its own interpreter.
FRONTEND = """
import subprocess, sys
sys.exit(subprocess.run([sys.executable, "-c", sys.argv[1], *sys.argv[2:]]).returncode)
"""
HOOK = """
import json, sys
sys.path.insert(0, "build_backend")
import backend
hook, out, *args = sys.argv[1:]
with open(out, "w") as f:
    json.dump(getattr(backend, hook)(*args), f)
"""


def project_copy(tmp_path: Path) -> Path:
    """The files an sdist holds, without the products of this checkout's own build."""
    dest = tmp_path / "project"
    dest.mkdir()
    for name in PROJECT:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("*.so", "*.o", "_build.json", "__pycache__")
            shutil.copytree(ROOT / name, dest / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, dest / name)
    return dest


def isolation_overlay(tmp_path: Path) -> Path:
    """A sitecustomize directory for PYTHONPATH, over a build environment holding setuptools (and
    wheel, which setuptools < 70.1 needs) and not torch."""
    build_env, overlay = tmp_path / "build-env", tmp_path / "overlay"
    build_env.mkdir()
    overlay.mkdir()
    site_packages = Path(importlib.util.find_spec("setuptools").origin).parents[1]
    for pattern in ("setuptools*", "pkg_resources", "_distutils_hack", "distutils-precedence.pth", "wheel*"):
        for path in site_packages.glob(pattern):  # the packages and their dist-info (setuptools' commands)
            (build_env / path.name).symlink_to(path)
    (overlay / "sitecustomize.py").write_text(ISOLATION.format(build_env=str(build_env)))
    return overlay


def run_hook(tmp_path: Path, hook: str, *args: str, python: str = sys.executable, **env: str):
    """(the hook's result or None, the process) for `hook` run like pip runs it, from `python`."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("LOGO_ATTN_") and k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH")}
    env = {**base, "PYTHONPATH": str(isolation_overlay(tmp_path)), "PYTHONNOUSERSITE": "1", "CXX": NO_COMPILER, **env}
    out = tmp_path / f"{hook}.json"
    run = subprocess.run([python, "-c", FRONTEND, HOOK, hook, str(out), *args], cwd=project_copy(tmp_path),
                         env=env, capture_output=True, text=True, timeout=600)
    return (json.loads(out.read_text()) if run.returncode == 0 else None), run


def build_wheel(tmp_path: Path, **env: str) -> Path:
    wheels = tmp_path / "wheels"
    wheels.mkdir(parents=True)
    name, run = run_hook(tmp_path, "build_wheel", str(wheels), **env)
    assert run.returncode == 0, run.stderr[-4000:]
    return wheels / name


def import_installed(wheel: Path, tmp_path: Path) -> dict:
    """Import logo_attn from the unpacked wheel in a fresh process: the extension warnings it gave,
    why the "cpu" backend cannot run, and local attention on CPU against SDPA (one window = all tokens)."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = """
import json, sys, warnings
# This checkout's editable install maps every logo_attn.* name to the working tree (its _C included).
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import logo_attn
    from logo_attn import _extension
    _extension.warn_once_if_unusable()
import torch
q, k, v = (torch.randn(2, 12, 3, 8, dtype=torch.float64) for _ in range(3))
out = logo_attn.local_attention(q, k, v, grid=(2, 2, 3), window=(2, 2, 3))
want = torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
print(json.dumps({
    "file": logo_attn.__file__,
    "warnings": [str(w.message) for w in caught if issubclass(w.category, _extension.ExtensionWarning)],
    "cpu": logo_attn.available_backends()["cpu"].reason,
    "error": (out - want).abs().max().item(),
}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(site)}, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(result["file"]).is_relative_to(site), f"imported {result['file']}, not the built wheel"
    return result


def record_of(wheel: Path) -> dict:
    return json.loads(zipfile.ZipFile(wheel).read("logo_attn/_build.json"))


def test_isolated_build_uses_the_target_torch_and_records_a_missing_compiler(tmp_path):
    requires, run = run_hook(tmp_path, "get_requires_for_build_wheel")
    assert run.returncode == 0, run.stderr[-4000:]
    assert not any(r.startswith("torch") for r in requires), f"asked for a second torch: {requires}"
    # the target's torch by its distribution version, which lacks the local tag (+cpu) of torch.__version__
    assert f"compiling against torch {torch.__version__.split('+')[0]}" in run.stderr

    wheel = build_wheel(tmp_path / "wheel")
    record = record_of(wheel)
    assert record["torch"] == torch.__version__  # torch was imported from the target environment
    assert record["extension"] == "skipped" and NO_COMPILER in record["reason"] and "compiler" in record["fix"]

    result = import_installed(wheel, tmp_path)
    assert len(result["warnings"]) == 1, result["warnings"]
    message = result["warnings"][0]
    assert NO_COMPILER in message and "install a C++ compiler" in message and "`pip install .`" in message
    assert NO_COMPILER in result["cpu"]
    assert result["error"] < 1e-12


def test_deliberately_skipped_extension_installs_without_warning(tmp_path):
    wheel = build_wheel(tmp_path, LOGO_ATTN_SKIP_CPP="1")
    assert wheel.name.endswith("-py3-none-any.whl")  # no extension: a pure wheel
    assert record_of(wheel)["deliberate"]
    result = import_installed(wheel, tmp_path)
    assert result["warnings"] == []
    assert "LOGO_ATTN_SKIP_CPP=1" in result["cpu"]  # logo_attn.info still says why
    assert result["error"] < 1e-12


def test_force_cpp_fails_a_build_that_cannot_compile(tmp_path):
    _, run = run_hook(tmp_path, "build_wheel", str(tmp_path), LOGO_ATTN_FORCE_CPP="1")
    assert run.returncode != 0
    assert f"LOGO_ATTN_FORCE_CPP=1 but logo_attn._C cannot be built: no C++ compiler: `{NO_COMPILER}`" in run.stderr


def test_target_without_torch_asks_the_frontend_for_one(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    requires, run = run_hook(tmp_path, "get_requires_for_build_wheel", python=str(venv / "bin" / "python"))
    assert run.returncode == 0, run.stderr[-4000:]
    assert "torch>=2.11" in requires
    assert "no torch found in the target environment" in run.stderr


# --------------------------------------------------------------------------------------------------
# setup.py's choices, without compiling
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def setup_module(monkeypatch):
    for name in [k for k in os.environ if k.startswith("LOGO_ATTN_")]:
        monkeypatch.delenv(name)
    return load_setup()


def fake_cuda_home(tmp_path: Path, release: str, headers: bool = True) -> str:
    """A directory laid out like a CUDA toolkit: bin/nvcc reporting `release`, include/cuda_runtime.h."""
    home = tmp_path / "cuda"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "nvcc").write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.1'\n")
    (home / "bin" / "nvcc").chmod(0o755)
    if headers:
        (home / "include").mkdir()
        (home / "include" / "cuda_runtime.h").touch()
    return str(home)


def test_cuda_kernels_need_cuda_torch_and_an_nvcc_of_its_major_version(setup_module, tmp_path, monkeypatch):
    plan, sources = setup_module.cuda_plan, ["csrc/cuda/local_attn.cu"]
    cuda_torch = SimpleNamespace(version=SimpleNamespace(cuda="13.0"))
    home = fake_cuda_home(tmp_path, "13.2")
    assert plan(cuda_torch, home, sources)[0]
    assert plan(SimpleNamespace(version=SimpleNamespace(cuda=None)), home, sources) == (False, "this torch has no CUDA")
    assert plan(cuda_torch, None, sources) == (False, "nvcc was not found (set CUDA_HOME)")
    assert plan(cuda_torch, home, []) == (False, "csrc/cuda/ holds no sources")
    old = fake_cuda_home(tmp_path / "old", "12.4")
    assert plan(cuda_torch, old, sources) == (False, f"nvcc 12.4 ({old}) cannot build for this torch's CUDA 13.0")
    # an nvcc wrapper script in /usr/local/bin: torch guesses /usr/local as the toolkit
    wrapper = fake_cuda_home(tmp_path / "wrapper", "13.0", headers=False)
    assert plan(cuda_torch, wrapper, sources) == (
        False, f"the CUDA headers are not in {wrapper}/include; set CUDA_HOME to the CUDA toolkit")
    monkeypatch.setenv("LOGO_ATTN_SKIP_CUDA", "1")
    assert plan(cuda_torch, home, sources) == (False, "LOGO_ATTN_SKIP_CUDA=1")


# no variable and no GPU visible: what the (stand-in) CUDA torch was built for, PTX for the newest;
# LOGO_ATTN_CUDA_ARCHS wins over TORCH_CUDA_ARCH_LIST (which may be set for other builds)
@pytest.mark.parametrize("env,archs", [({}, "8.0;9.0+PTX"), ({"LOGO_ATTN_CUDA_ARCHS": "8.0;9.0"}, "8.0;9.0"),
                                       ({"TORCH_CUDA_ARCH_LIST": "10.0"}, "10.0"),
                                       ({"TORCH_CUDA_ARCH_LIST": "10.0", "LOGO_ATTN_CUDA_ARCHS": "8.0"}, "8.0")])
def test_cuda_build_compiles_the_cu_sources_for_the_chosen_architectures(setup_module, tmp_path, monkeypatch,
                                                                        env, archs):
    from torch.utils import cpp_extension

    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "")  # undone after the test, whatever setup.py sets
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    monkeypatch.delenv("LOGO_ATTN_CUDA_ARCHS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch._C, "_cuda_getArchFlags", lambda: "sm_80 sm_90", raising=False)
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", fake_cuda_home(tmp_path, "13.0"))
    args = setup_module.extension_args()
    (extension,) = args["ext_modules"]
    assert any(s.endswith(".cu") for s in extension.sources) and any(s.endswith(".cpp") for s in extension.sources)
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == archs
    assert setup_module.RECORD["cuda_kernels"] and f"architectures {archs}" in setup_module.RECORD["cuda_reason"]


class FakeTorchBuildExt:
    """Stands in for torch's BuildExtension: "compiles" by name, failing the extensions in `broken`."""

    broken: set[str] = set()

    def __init__(self, distribution, use_ninja):
        self.distribution, self.built, self.compiler = distribution, [], None

    def run(self):
        name = self.extensions[0].name
        if name in self.broken:
            raise RuntimeError(f"{name} does not compile")
        self.built.append(name)


@pytest.mark.parametrize("broken,built,cuda",
                         [({"cuda"}, ["cpu"], False), (set(), ["cuda"], True), ({"cuda", "cpu"}, [], False)])
def test_a_failed_cuda_compile_falls_back_to_the_cpu_kernels(setup_module, monkeypatch, broken, built, cuda):
    attempts = [SimpleNamespace(name="cuda"), SimpleNamespace(name="cpu")]
    setup_module.RECORD.update(extension="built", torch="2.13.0", cuda_kernels=True)
    monkeypatch.setattr(FakeTorchBuildExt, "broken", broken)
    command = setup_module.build_ext_with_fallback(FakeTorchBuildExt, attempts)(SimpleNamespace(ext_modules=None))
    command.run()
    assert command.built == built
    assert setup_module.RECORD["cuda_kernels"] == cuda
    assert setup_module.RECORD["extension"] == ("built" if built else "skipped")
    if "cuda" in broken:
        assert "cuda does not compile" in (setup_module.RECORD["cuda_reason"] + setup_module.RECORD["reason"])


@pytest.mark.parametrize("force", ["LOGO_ATTN_FORCE_CPP", "LOGO_ATTN_FORCE_CUDA"])
def test_force_flags_turn_a_failed_compile_into_a_failed_build(setup_module, monkeypatch, force):
    monkeypatch.setenv(force, "1")
    monkeypatch.setattr(FakeTorchBuildExt, "broken", {"cuda", "cpu"})
    command = setup_module.build_ext_with_fallback(FakeTorchBuildExt, [SimpleNamespace(name="cuda")])(SimpleNamespace())
    with pytest.raises(RuntimeError, match="cuda does not compile"):
        command.run()


def test_the_cpu_attempt_compiles_after_a_failed_one_with_torch_build_extension(setup_module, tmp_path):
    """The fallback with torch's real BuildExtension and compiler: a second run of one command object."""
    from setuptools import Distribution
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    (tmp_path / "broken.cpp").write_text("this is not C++\n")
    (tmp_path / "fine.cpp").write_text("int logo_attn_test_symbol() { return 1; }\n")
    attempts = [CppExtension("logo_attn_test_ext", [str(tmp_path / name)]) for name in ("broken.cpp", "fine.cpp")]
    command = setup_module.build_ext_with_fallback(BuildExtension, attempts)(Distribution({"name": "t"}))
    command.build_lib, command.build_temp = str(tmp_path / "lib"), str(tmp_path / "temp")
    command.ensure_finalized()
    command.run()
    assert list((tmp_path / "lib").glob("logo_attn_test_ext*.so")), "the second attempt built nothing"
    assert "RuntimeError: Error compiling objects" in setup_module.RECORD["cuda_reason"]


# --------------------------------------------------------------------------------------------------
# What importing logo_attn says about the extension
# --------------------------------------------------------------------------------------------------

BUILT = {"extension": "built", "torch": "2.13.0+cpu", "reason": "CPU kernels, against torch 2.13.0+cpu"}


def test_a_working_extension_is_not_reported():
    assert _extension.diagnose(BUILT, None, "2.13.0+cpu") == _extension.ExtensionStatus(True, None)
    # A CPU and a CUDA build of one torch release share the C++ ABI the CPU kernels use.
    assert _extension.diagnose(BUILT, None, "2.13.0").problem is None


def test_skipped_extension_reports_the_recorded_reason_and_fix():
    record = {"extension": "skipped", "reason": "no C++ compiler", "fix": "install g++", "deliberate": False}
    status = _extension.diagnose(record, ImportError("No module named 'logo_attn._C'"), "2.13.0")
    assert not status.loaded and not status.deliberate
    assert "not built: no C++ compiler" in status.problem and "Fix: install g++" in status.problem
    assert _extension.diagnose({**record, "deliberate": True}, None, "2.13.0").deliberate


def test_extension_built_against_another_torch_is_reported_loaded_or_not():
    failed = _extension.diagnose(BUILT, ImportError("undefined symbol: _ZN3c10"), "2.14.1")
    assert not failed.loaded
    assert "built against torch 2.13.0+cpu and cannot load into torch 2.14.1" in failed.problem
    assert "undefined symbol" in failed.problem and "--force-reinstall" in failed.problem
    loaded = _extension.diagnose(BUILT, None, "2.14.1")
    assert loaded.loaded and "built against torch 2.13.0+cpu but torch 2.14.1 is running" in loaded.problem


def test_missing_cuda_kernels_are_reported_with_the_recorded_reason():
    record = {**BUILT, "cuda_kernels": False, "cuda_reason": "the CUDA headers are not in /usr/local/include"}
    problem = _extension.cuda_kernels_problem(record)
    assert "without its CUDA kernels (the CUDA headers are not in /usr/local/include)" in problem
    assert "LOGO_ATTN_FORCE_CUDA=1" in problem


def test_unbuilt_source_tree_is_reported():
    status = _extension.diagnose(None, ImportError("No module named 'logo_attn._C'"), "2.13.0")
    assert not status.loaded and "never built" in status.problem and "`pip install .`" in status.problem


def test_this_install_matches_its_build_record():
    """The package under test: its record agrees with what loads (CI builds it with LOGO_ATTN_FORCE_CPP=1)."""
    record = _extension.read_record()
    if record is None:
        pytest.fail(f"{_extension.RECORD_PATH} is missing: the package under test was not built by setup.py")
    status = _extension.status()
    assert status.loaded == (record["extension"] == "built"), status
    if os.environ.get("LOGO_ATTN_FORCE_CPP", "0") not in ("", "0"):
        assert status.loaded and status.problem is None, status.problem


def test_pyproject_lists_every_subpackage():
    """A non-editable install holds only the packages pyproject names: a subpackage left out imports
    from the checkout in development and is missing for users (caught late twice: ops/, distributed/)."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "logo_attn").rglob("__init__.py")}
    found.add("logo_attn.kernels")  # installed from kernels/ (package-dir)
    assert found <= listed, f"pyproject.toml's packages lack {sorted(found - listed)}"
