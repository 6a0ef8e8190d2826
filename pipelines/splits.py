"""The dataset splits, in their order everywhere (outputs, stats.json, token shards, the card)."""
TRAIN, VALIDATION = "train", "validation"
SPLITS = (TRAIN, VALIDATION)
