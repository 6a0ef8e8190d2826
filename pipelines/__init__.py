"""ppsample's pipelines: the CLI, its stages and what they share."""
from __future__ import annotations


def project_version() -> str:
    """The installed perplexity-sampling version (`ppsample --version`, stats.json "version");
    "unknown" when running from a checkout that is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("perplexity-sampling")
    except PackageNotFoundError:
        return "unknown"
