"""Publishing the sampled dataset: dataset card, Hub upload."""
