"""The errors ppsample raises for its user: one base type, PpsampleError, whose message is the
whole story (no traceback needed), and its kinds. Only the CLI (pipelines/cli.py) turns them
into a one-line `ppsample: error: MESSAGE` and an exit code (`exit_code`); every other module
raises them and lets them through.

lm_models cannot import this module (it is below pipelines): its errors derive from
lm_models.errors.ModelError, and the CLI maps every ModelError as it maps an InputError (the
first line of its message, exit 1).

They are ordinary Exceptions, so Beam forwards one raised in a worker like any other; the CLI
finds it in the exception chain (in-process runners) or, when a worker's traceback arrives as
text (multi-process and remote runners), by the qualified name of a class defined here
(`subclasses(PpsampleError)`), and prints its message alone.
"""
from __future__ import annotations


class PpsampleError(Exception):
    """A user-facing error: `message` is one line for the user; the CLI exits `exit_code`."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __reduce__(self):  # pickled by Beam between processes: keep the subclass and message
        return type(self), (self.message,)


class UsageError(PpsampleError):
    """A command-line mistake (unknown flag, conflicting options): exit 2."""

    exit_code = 2


class InputError(PpsampleError):
    """Input the run cannot use (a model, a sampling request, a Dataflow configuration, data
    that does not match a config): found before or during the run, exit 1."""


class InputNotFoundError(InputError, FileNotFoundError):
    """An --input pattern that matched no file. Also a FileNotFoundError, for code that calls
    the readers as a library and catches that."""


class RefusedInputError(InputError):
    """Input a stage refuses as it is, where that stage's contract is exit 2: publish's sampled
    outputs and --local-dir, finetune's token shards, config and a non-finite loss (the TPU
    supervisor reads exit 2 as "bad data or config: retrying cannot help")."""

    exit_code = 2


class RemoteError(PpsampleError):
    """A remote service or machine failed: the Hub upload stopped (or has no token), a TPU-VM
    step failed, the supervised training gave up; the message says what to do next. Exit 1."""


class OutputError(PpsampleError):
    """An output or input directory problem (foreign, incomplete, another stage's), or a run
    whose result is unusable (nothing scored, documents lost): exit 1."""


def subclasses(cls: type) -> list[type]:
    """Every subclass of `cls` loaded so far (the CLI matches a forwarded traceback's
    `module.Class: message` line against PpsampleError's)."""
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *subclasses(sub)]
    return found
