"""The README's commands work as written.

Conventions (README.md): every ```bash block runs offline, in order, from the root of a fresh
clone, unless the line before its fence is `<!-- readme-test: skip (needs ...) -->`; a line
whose trailing comment starts with `# needs ` (network, a TPU, Dataflow, ...) is skipped too.

- fast: every `ppsample` command in every bash block (skipped ones included) parses with the
  real argument parsers (a typo or a removed flag in the README fails here);
- slow: the runnable blocks are executed by bash, in order, in a fresh copy of the repository
  (the tracked and untracked-but-not-ignored files), with the current interpreter's `ppsample`
  importing that copy.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP_BLOCK = re.compile(r"<!--\s*readme-test:\s*skip\b(.*?)-->")
FENCE = re.compile(r"^```(\w*)\s*$")


def readme_blocks(text: str | None = None) -> list[dict]:
    """The fenced blocks of the README: language, body, and the skip reason (or None)."""
    lines = (text if text is not None else (REPO / "README.md").read_text()).splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        previous = lines[i - 1] if i else ""
        skip = SKIP_BLOCK.search(previous)
        body, i = [], i + 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        blocks.append({"lang": match.group(1), "body": "\n".join(body),
                       "skip": skip.group(1).strip(" ()") if skip else None})
        i += 1
    return blocks


def _logical_lines(body: str) -> list[str]:
    """Lines with `\\` continuations joined."""
    out, current = [], ""
    for line in body.splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        out.append(current + line)
        current = ""
    if current:
        out.append(current)
    return out


def _needs(line: str) -> bool:
    return bool(re.search(r"#\s*needs\b", line))


def runnable_script(body: str) -> str:
    return "\n".join(line for line in _logical_lines(body) if not _needs(line))


def ppsample_commands(body: str) -> list[list[str]]:
    """Every `ppsample ...` command of a block, as argv (after `ppsample`)."""
    commands = []
    for line in _logical_lines(body):
        for part in re.split(r"&&|\|\||;", line):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:
                continue
            while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value prefixes
                words = words[1:]
            if words and words[0] == "ppsample":
                commands.append(words[1:])
    return commands


def parse_command(argv: list[str]) -> None:
    """Parses `ppsample argv` with the real parsers, running nothing; raises on an error."""
    from pipelines import cli
    from pipelines.options import StrictArgumentParser

    name, rest = argv[0], argv[1:]
    if name not in cli.COMMANDS:
        raise AssertionError(f"unknown command {name!r}")
    if name != "finetune":
        cli.parse_stage_args(name, rest)
        return
    if rest and rest[0] == "check-fit":
        from lm_models.gptj.check_fit import build_parser
        parser = build_parser()
        parser.exit_on_error = False
        parser.parse_args(rest[1:])
        return
    if rest and rest[0] == "launch":
        from pipelines.finetune.launch import add_arguments
        rest = rest[1:]
    else:
        from pipelines.finetune.stage import add_arguments
    parser = StrictArgumentParser(prog=f"ppsample {name}")
    add_arguments(parser)
    parser.parse_args(rest)


def test_readme_conventions_are_followed():
    blocks = readme_blocks()
    bash = [b for b in blocks if b["lang"] == "bash"]
    assert bash and any(b["skip"] is None for b in bash)
    for block in bash:
        if block["skip"] is not None:
            assert block["skip"].startswith("needs"), block["skip"]  # say why
    # the stage commands point at the bundled sample, which exists in the repository
    for block in bash:
        for argv in ppsample_commands(block["body"]):
            if "--input" in argv and argv[0] in ("run", "score"):
                pattern = argv[argv.index("--input") + 1]
                if "://" not in pattern and "$" not in pattern:
                    assert list(REPO.glob(pattern)), f"{pattern} matches nothing in the repository"


def test_parsers_of_the_test_itself():
    text = "x\n<!-- readme-test: skip (needs a TPU) -->\n```bash\nppsample run \\\n  --seed 1  # c\n```\n" \
           "```bash\nA=1 ppsample score --input x --output y && echo ok\nppsample stats --input s  # needs network\n```\n"
    first, second = readme_blocks(text)
    assert first["skip"] == "needs a TPU" and second["skip"] is None
    assert ppsample_commands(first["body"]) == [["run", "--seed", "1"]]
    assert ppsample_commands(second["body"])[0] == ["score", "--input", "x", "--output", "y"]
    assert runnable_script(second["body"]) == "A=1 ppsample score --input x --output y && echo ok"


def _all_commands():
    commands = []
    for block in readme_blocks():
        if block["lang"] == "bash":
            commands += ppsample_commands(block["body"])
    return commands


@pytest.mark.parametrize("argv", _all_commands(), ids=lambda argv: " ".join(argv)[:60])
def test_every_readme_command_parses(argv):
    from pipelines.errors import UsageError

    try:
        parse_command(argv)
    except (UsageError, SystemExit) as err:
        pytest.fail(f"`ppsample {' '.join(argv)}`: {err}")


OUTPUT_FLAGS = ("--output", "--workdir", "--local-dir")


def test_readme_commands_write_only_where_git_ignores():
    """A user who runs the README's examples in the checkout gets no untracked clutter in
    `git status`: every local folder they write (and `run`'s default) is ignored, anchored at
    the root. Outputs that are the repository's own files (train-lm rebuilding the bundled
    model) are meant to show up in git."""
    outputs = {"ppsample-output"}
    for argv in _all_commands():
        for flag in OUTPUT_FLAGS:
            if flag in argv:
                path = argv[argv.index(flag) + 1]
                if "://" not in path and "$" not in path and not (REPO / path).is_dir():
                    outputs.add(path.rstrip("/"))
    assert {"hub", "runs/tiny", "scored", "stats", "sampled", "tokens", "out/random"} <= outputs
    not_ignored = [path for path in sorted(outputs) if subprocess.run(
        ["git", "check-ignore", "-q", "--no-index",
         path if "." in path.rsplit("/", 1)[-1] else f"{path}/stats.json"],  # a file or a folder
        cwd=REPO).returncode != 0]
    assert not not_ignored, f"README outputs not in .gitignore: {not_ignored}"


def _fresh_copy(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        source = REPO / name.decode()
        if source.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@pytest.mark.slow
def test_readme_runs_as_written_in_a_fresh_clone(tmp_path):
    clone = tmp_path / "perplexity-sampling"
    clone.mkdir()
    _fresh_copy(clone)
    script = "\n".join(runnable_script(b["body"]) for b in readme_blocks()
                       if b["lang"] == "bash" and b["skip"] is None)
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(clone), "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-x", "-c", script], cwd=clone, env=env,
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-6000:]
    assert (clone / "ppsample-output" / "stats.json").is_file()
    assert (clone / "sampled" / "stats.json").is_file()
    assert (clone / "tokens" / "manifest.json").is_file()
