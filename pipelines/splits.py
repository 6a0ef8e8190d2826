"""The dataset splits, in their order everywhere (outputs, stats.json, token shards, the card)."""
TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION)
# The splits an input can carry (a FineWeb-2 style `test/` folder, a scored row's `split`): a
# test split is sampled and reported like the others but never trained on.
INPUT_SPLITS = (TRAIN, VALIDATION, TEST)
