"""GPT-J finetune hand-off: token shards, prepare-finetune, finetune, TPU launch."""
