"""Corpus stages: score, stats, sample and `run` (the Beam jobs and their driver)."""
