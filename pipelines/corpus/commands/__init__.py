"""The corpus subcommands (`run`, `score`, `stats`, `sample`): each one's flags and `main`."""
