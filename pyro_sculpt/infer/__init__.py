"""Layer 5: inference on compositions (importance weights and twisted SMC of guided particles)."""

from pyro_sculpt.infer.smc import SMCResult, pareto_k, twisted_smc

__all__ = ["SMCResult", "pareto_k", "twisted_smc"]
