"""The floors of keras_vdiff (docs/ARCHITECTURE.md): a module imports only from its own floor and the ones below.

The imports are read statically (``ast``, every ``import`` statement, also those
inside functions), so the test is fast and names the file, the line and the
import that breaks a rule.
"""

import ast
import importlib
import pathlib
import warnings

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_vdiff"

# Longest matching prefix wins. Same floor: may import each other; higher floor: never imported from below.
FLOORS = {
    "keras_vdiff.validation": 0,
    "keras_vdiff.conventions": 0,
    "keras_vdiff.atomic_files": 0,
    "keras_vdiff.presets": 0,
    "keras_vdiff.layers": 1,
    "keras_vdiff.models": 2,
    "keras_vdiff.text": 2,
    "keras_vdiff.autoencoders": 2,
    "keras_vdiff.data": 2,
    "keras_vdiff.metrics": 2,
    "keras_vdiff.diffusion": 3,
    "keras_vdiff.tasks": 4,
    "keras_vdiff.video_diffusion": 4,  # deprecated path of keras_vdiff.tasks.video_diffusion
    "keras_vdiff.training": 5,
    "keras_vdiff.cli": 6,
    "keras_vdiff.demo": 6,
    "keras_vdiff": 6,  # the package __init__ gathers every floor; the entry points may use it
}
FLOOR_NAMES = ["foundation", "layers", "models/text/autoencoders/data/metrics", "diffusion", "tasks", "training",
               "package and entry points (cli, demo)"]

# The one kind of upward import allowed: a deprecated name forwarded lazily from its old home, inside a
# module-level __getattr__, to where it lives now.
DEPRECATED_FORWARDS = {
    ("keras_vdiff.diffusion", "keras_vdiff.tasks.frame_conditioned"),
    ("keras_vdiff.diffusion.frame_conditioning", "keras_vdiff.tasks.frame_conditioned"),
}


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor_of(name):
    matches = [prefix for prefix in FLOORS if name == prefix or name.startswith(prefix + ".")]
    return FLOORS[max(matches, key=len)] if matches else None


def keras_vdiff_imports(path):
    """``(line, imported module)`` for every import of a keras_vdiff module in the file at ``path``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from keras_vdiff import models` imports the module keras_vdiff.models
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append((node.lineno, candidate if (PACKAGE.parent / candidate.replace(".", "/")).exists()
                              or (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists() else base))
    return [(line, target) for line, target in found if target.split(".")[0] == "keras_vdiff"]


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_floor():
    unplaced = [module_name(path) for path in MODULES if floor_of(module_name(path)) is None]
    assert not unplaced, f"Modules without a floor (add them to FLOORS and docs/ARCHITECTURE.md): {unplaced}"


def test_no_module_imports_a_higher_floor():
    violations = []
    for path in MODULES:
        source = module_name(path)
        for line, target in keras_vdiff_imports(path):
            if floor_of(target) > floor_of(source) and (source, target) not in DEPRECATED_FORWARDS:
                violations.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} ({FLOOR_NAMES[floor_of(source)]}) imports {target} "
                    f"({FLOOR_NAMES[floor_of(target)]})"
                )
    assert not violations, "Imports up the floors:\n" + "\n".join(violations)


def _within(name, prefix):
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("lower, higher", [
    ("keras_vdiff.layers", "keras_vdiff.models"),
    ("keras_vdiff.diffusion", "keras_vdiff.tasks"),
    ("keras_vdiff.autoencoders", "keras_vdiff.tasks"),
    ("keras_vdiff.presets", "keras_vdiff.models"),
    ("keras_vdiff.models", "keras_vdiff.tasks"),
    ("keras_vdiff.tasks", "keras_vdiff.training"),
    ("keras_vdiff.tasks", "keras_vdiff.cli"),
])
def test_named_rule(lower, higher):
    """The rules docs/ARCHITECTURE.md names, checked one by one (each is also implied by the floor order)."""
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
        for path in MODULES if _within(module_name(path), lower)
        for line, target in keras_vdiff_imports(path)
        if _within(target, higher) and (module_name(path), target) not in DEPRECATED_FORWARDS
    ]
    assert not offenders, f"{lower} must not import {higher}:\n" + "\n".join(offenders)


def test_the_analysis_sees_imports_inside_functions():
    """The import reader itself: a lazy import inside a function and ``from keras_vdiff import x`` are found."""
    path = PACKAGE / "diffusion" / "frame_conditioning.py"
    targets = {target for _, target in keras_vdiff_imports(path)}
    assert "keras_vdiff.tasks.frame_conditioned" in targets  # the lazy forward inside __getattr__
    assert "keras_vdiff.diffusion.frame_masks" in targets
    init_targets = {target for _, target in keras_vdiff_imports(PACKAGE / "__init__.py")}
    assert {"keras_vdiff.layers", "keras_vdiff.models", "keras_vdiff.tasks"} <= init_targets


def test_every_module_imports():
    """Each module (deprecated forwards included) imports cleanly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for path in MODULES:
            importlib.import_module(module_name(path))


def test_deprecated_paths_forward_with_a_warning():
    import keras_vdiff as kv
    from keras_vdiff import diffusion
    from keras_vdiff.diffusion import frame_conditioning

    with pytest.warns(DeprecationWarning, match="keras_vdiff.tasks"):
        assert diffusion.FrameConditionedDiffusion is kv.FrameConditionedDiffusion
    with pytest.warns(DeprecationWarning, match="keras_vdiff.tasks"):
        assert frame_conditioning.FrameConditionedDiffusion is kv.FrameConditionedDiffusion
    old = importlib.import_module("keras_vdiff.video_diffusion")
    assert old.VideoDiffusion is kv.VideoDiffusion
    assert old.unit_range_to_uint8 is importlib.import_module("keras_vdiff.conventions").unit_range_to_uint8
