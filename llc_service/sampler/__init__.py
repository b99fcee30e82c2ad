"""Functional SGLD cores: ``build(...)`` returns ``init(w, anchor) -> state`` and ``update(state, grad, gen) -> state``.

The cores work on one flat fp32 vector of the sampled parameters (see :mod:`llc_service.sampler.flat`), so
every update is a handful of whole-vector kernels, whatever the number of parameter tensors.
"""

from llc_service.sampler.flat import FlatParams
from llc_service.sampler.rmsprop_sgld import build as build_rmsprop_sgld
from llc_service.sampler.sgld import SGLDState
from llc_service.sampler.sgld import build as build_sgld

__all__ = ["FlatParams", "SGLDState", "build_sgld", "build_rmsprop_sgld", "build_sampler"]


def build_sampler(cfg):
    """The core named by ``cfg.sampler`` with the step settings of a :class:`~llc_service.config.SamplerConfig`."""
    common = dict(epsilon=cfg.epsilon, nbeta=cfg.nbeta, gamma=cfg.gamma, weight_decay=cfg.weight_decay,
                  bounding_box=cfg.bounding_box, noise_scale=getattr(cfg, "noise_scale", 1.0))
    if cfg.sampler == "sgld":
        return build_sgld(**common)
    if cfg.sampler == "rmsprop_sgld":
        return build_rmsprop_sgld(alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps, **common)
    raise ValueError(f"config field 'sampler' must be one of ('sgld', 'rmsprop_sgld') (got {cfg.sampler!r})")
