"""Layer 4: inference over iterative processes: generic SMC with twists, resampling, diagnostics."""

from pyro_sculpt.infer.diagnostics import effective_sample_size, pareto_k
from pyro_sculpt.infer.resampling import multinomial, systematic
from pyro_sculpt.infer.smc import SMCResult, as_twist, smc
from pyro_sculpt.infer.twist import ProcessProposal, Twist, index_particles

__all__ = [
    "ProcessProposal",
    "SMCResult",
    "Twist",
    "as_twist",
    "effective_sample_size",
    "index_particles",
    "multinomial",
    "pareto_k",
    "smc",
    "systematic",
]
