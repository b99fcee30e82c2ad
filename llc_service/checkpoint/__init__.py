"""Safe checkpoint loading: safetensors only, no custom code, fp32, shard/truncation/NaN checks.

``load_checkpoint(ref_or_uri)`` -> ``LoadedCheckpoint(model, tokenizer, model_type, num_params, local_dir)``
or ``CheckpointError``. Remote checkpoints are copied once per node into a size-bounded cache; ``release``
afterwards. torch and transformers are imported only when a checkpoint is loaded.
"""

from llc_service.checkpoint.cache import CheckpointCache, default_cache_dir
from llc_service.checkpoint.errors import CheckpointError
from llc_service.checkpoint.load import LoadedCheckpoint, load_checkpoint, release

__all__ = ["CheckpointCache", "CheckpointError", "LoadedCheckpoint", "default_cache_dir", "load_checkpoint",
           "release"]
