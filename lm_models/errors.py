"""The errors lm_models raises for its user: one base type, ModelError, whose message is the
whole story (no traceback needed). lm_models is below pipelines and cannot import its errors
(pipelines/errors.py); the CLI (pipelines/cli.py) maps every ModelError to one
`ppsample: error: MESSAGE` line and exit 1, as it does a pipelines InputError. Each kind also
derives from the built-in exception it has always been (OSError, ValueError, RuntimeError), so
library callers that catch those keep working.
"""
from __future__ import annotations


class ModelError(Exception):
    """A model could not be found, fetched, trained or used; the message says which and why."""


class ModelSourceError(ModelError, OSError):
    """A model source could not be resolved or fetched; the message names the source."""
