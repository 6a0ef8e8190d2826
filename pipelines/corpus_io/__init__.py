"""Corpus I/O: mC4 readers, parquet / json.gz writers, dead letters, stage outputs."""
