"""JAX GPT-J: model, Hugging Face conversion; training step in lm_models.gptj.train_step."""
from lm_models.gptj.config import GPTJ_6B, GPTJConfig
from lm_models.gptj.convert import from_hf, to_hf
from lm_models.gptj.model import forward, init_params, param_shapes

__all__ = ["GPTJConfig", "GPTJ_6B", "init_params", "forward", "param_shapes", "from_hf", "to_hf"]
