"""The layering of ../shared/DESIGN.md, read from the imports themselves (ast, every import
statement, also the lazy ones inside functions): a module that imports against it fails here.

  pipelines/options.py      -> never pipelines.corpus (argv helpers sit below the stages)
  pipelines/corpus_io/      -> never pipelines.corpus, pipelines.options, pipelines.dataflow
                               (I/O knows neither the stages nor the runner)
  sampling/                 -> numpy and the standard library only
  lm_models/                -> never pipelines
  pipelines/finetune/supervise.py -> never pipelines.finetune.launch (the gcloud/TPU-VM steps
                               both use are in pipelines/finetune/tpu_vm.py; launch may start
                               the supervisor, not the other way round)
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file (and of every imported name:
    `from pipelines import dataflow` imports pipelines.dataflow)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _sampling_rule(module: str) -> bool:
    top = module.split(".")[0]
    return top in ("numpy", "sampling", "__future__") or top in sys.stdlib_module_names


RULES = [
    # (files, forbidden(module) -> bool, what the rule says)
    ("pipelines/options.py", lambda m: _within(m, "pipelines.corpus"), "options -> corpus"),
    ("pipelines/corpus_io/**/*.py",
     lambda m: any(_within(m, p) for p in ("pipelines.corpus", "pipelines.options",
                                              "pipelines.dataflow")),
     "corpus_io -> corpus / options / dataflow"),
    ("sampling/**/*.py", lambda m: not _sampling_rule(m), "sampling -> anything but numpy"),
    ("lm_models/**/*.py", lambda m: _within(m, "pipelines"), "lm_models -> pipelines"),
    ("pipelines/finetune/supervise.py", lambda m: _within(m, "pipelines.finetune.launch"),
     "supervise -> launch"),
]


def violations(root: Path) -> list[str]:
    out = []
    for pattern, forbidden, rule in RULES:
        for path in sorted(root.glob(pattern)):
            flagged = set()
            for line, module in _imports(path, root):
                if forbidden(module) and line not in flagged:  # one report per statement
                    flagged.add(line)
                    out.append(f"{path.relative_to(root)}:{line}: imports {module} ({rule})")
    return out


def test_no_module_imports_against_the_layering():
    assert violations(REPO) == []


@pytest.mark.parametrize("rel, source", [
    ("pipelines/options.py", "def f():\n    from pipelines.corpus.plan import SamplingRequest\n"),
    ("pipelines/corpus_io/commit.py", "from pipelines import dataflow\n"),
    ("pipelines/corpus_io/writers.py", "import pipelines.options as opts\n"),
    ("pipelines/corpus_io/mc4_io.py", "from ..corpus import driver\n"),
    ("sampling/histogram.py", "import apache_beam\n"),
    ("lm_models/perplexity.py", "from pipelines.errors import InputError\n"),
    ("pipelines/finetune/supervise.py", "from pipelines.finetune import launch\n"),
])
def test_each_rule_catches_a_forbidden_import(tmp_path, rel, source):
    """The fault each rule guards against, injected into a copy of the file's place."""
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    found = violations(tmp_path)
    assert len(found) == 1 and found[0].startswith(rel), found


def test_allowed_imports_are_not_flagged(tmp_path):
    for rel, source in [("pipelines/corpus_io/writers.py", "from pipelines import corpus_io\n"
                                                          "from pipelines.errors import OutputError\n"),
                        ("sampling/histogram.py", "import numpy as np\nimport math\n"
                                                  "from sampling.boundaries import Boundaries\n"),
                        ("pipelines/finetune/launch.py", "from pipelines.finetune import supervise\n")]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    assert violations(tmp_path) == []
