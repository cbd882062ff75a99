"""The import directions of docs/architecture.md, read from the source (ast), so a new import that
breaks the layering fails here:

    application (logo_attn.logoformer) -> client swaps (swap_torchvision, swap_timm) -> their shared
    body (client_attention) -> layers (layers, baselines, swin) -> context parallelism
    (distributed) -> ops -> dispatcher (backends)
    -> backends (reference, _cpp, kernels) -> shared leaves (geometry, checks, flops)

A module may import modules of lower layers and of its own package; kernels/ imports nothing of the
package but the torch-free geometry module, which imports nothing at all.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# layer of each module of the package (a package's modules share its layer)
LAYERS = {
    "logo_attn.logoformer": 6,
    "logo_attn.train": 7, "logo_attn.evaluate": 7,  # the command-line entry points, above the application
    # the client swaps reuse the Swin layer's pieces through their shared body
    "logo_attn.swap_torchvision": 5.7, "logo_attn.swap_timm": 5.7, "logo_attn.client_attention": 5.5,
    "logo_attn.layers": 5, "logo_attn.baselines": 5, "logo_attn.swin": 5,
    "logo_attn.distributed": 4.5,  # context parallelism: uses the ops, used by the layers
    "logo_attn.ops": 4,
    "logo_attn.info": 3.5, "logo_attn.backends": 3,
    "logo_attn.reference": 2, "logo_attn._cpp": 2, "logo_attn._extension": 2, "logo_attn.kernels": 2,
    "logo_attn.flops": 1, "logo_attn.checks": 1, "logo_attn.tolerance": 1,
    "logo_attn.geometry": 0, "logo_attn._version": 0,
}


def module_files():
    """(module name, path) of every source file of the package, kernels/ as logo_attn.kernels."""
    for path in sorted((ROOT / "logo_attn").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield ".".join(p for p in parts if p != "__init__"), path, path.name == "__init__.py"
    for path in sorted((ROOT / "kernels").glob("*.py")):
        name = "logo_attn.kernels" + ("" if path.name == "__init__.py" else f".{path.stem}")
        yield name, path, path.name == "__init__.py"


def imports(module, path, is_package):
    """Absolute names of the logo_attn modules a file imports at module level or in functions."""
    tree = ast.parse(path.read_text())
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("logo_attn")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("logo_attn"):
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names}
    return found


def layer(name):
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if name == prefix or name.startswith(prefix + "."):
            return prefix, LAYERS[prefix]
    return None, None


EDGES = [(module, target) for module, path, is_package in module_files() for target in imports(module, path, is_package)]


def test_every_module_has_a_layer():
    unknown = {m for m, _, _ in module_files() if layer(m)[0] is None and m != "logo_attn"}
    assert not unknown, f"modules without a layer in this test (and docs/architecture.md): {unknown}"


def test_imports_go_down():
    upward = []
    for module, target in EDGES:
        (own, rank), (theirs, target_rank) = layer(module), layer(target)
        if own is not None and theirs is not None and own != theirs and target_rank >= rank:
            upward.append(f"{module} (layer {rank}) imports {target} (layer {target_rank})")
    assert not upward, "\n".join(upward)


def test_the_library_never_imports_the_application_except_lazily():
    """Only the package's __getattr__ (for `from logo_attn import LOGOFormer`) and the entry points
    reach into logo_attn.logoformer."""
    tree = ast.parse((ROOT / "logo_attn" / "__init__.py").read_text())
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not any("logoformer" in (getattr(n, "module", "") or "") for n in top_level)


def test_kernels_import_only_geometry_from_the_package():
    for module, path, is_package in module_files():
        if module.startswith("logo_attn.kernels"):
            outside = {t for t in imports(module, path, is_package)
                       if not t.startswith("logo_attn.kernels") and not t.startswith("logo_attn.geometry")}
            assert not outside, f"{module} imports {outside}"


def test_geometry_imports_nothing():
    tree = ast.parse((ROOT / "logo_attn" / "geometry.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert names <= {"__future__", "collections.abc"}, names


def test_importing_the_library_does_not_load_the_application():
    import subprocess
    import sys

    code = "import sys, logo_attn; print(sorted(m for m in sys.modules if 'logoformer' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_importing_the_library_does_not_import_the_swap_clients():
    """The swaps import torchvision / timm (and MONAI) inside themselves, when called."""
    import subprocess
    import sys

    code = ("import sys, logo_attn; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('torchvision', 'timm', 'monai')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
