"""Layer 2: batched MCMC kernels with a per-particle accept (docs/math.md §2), in the functional ``init``/``step``
style: ULA, MALA, U-HMC (underdamped, no test) and HMC (Metropolis test, momentum flipped on rejection); step-size
adaptation towards a target acceptance rate; targets built from log-densities, energies or operators on diffusion
models' log-densities; rejuvenation moves for SMC samplers (docs/mcmc.md); and on discrete spaces, independence
Metropolis-Hastings with a generative model as the proposal and Gibbs over coordinates (docs/math.md §3).

Example::

    kernel = ps.mcmc.MALA(ps.mcmc.operator_target([ring, gauss], t=0.2), step_size=0.01)
    state = kernel.init(x)
    state, info = kernel.step(state)       # info.accept_prob, info.accepted: one per particle
"""

from pyro_sculpt.mcmc.adaptation import StepSizeAdapter
from pyro_sculpt.mcmc.base import (
    DivergenceWarning,
    MCMCInfo,
    MCMCKernel,
    MCMCState,
    NoiseSource,
    metropolis,
    noise_source,
    per_particle,
    select,
    standard_normal,
    standard_uniform,
)
from pyro_sculpt.mcmc.chain import ChainTrace, run_chains
from pyro_sculpt.mcmc.corrector import CorrectorMessenger, PyroNoise, corrector
from pyro_sculpt.mcmc.diagnostics import level_diagnostics, plot_level_diagnostics
from pyro_sculpt.mcmc.gibbs import Gibbs, GibbsState
from pyro_sculpt.mcmc.hamiltonian import leapfrog
from pyro_sculpt.mcmc.hmc import HMC
from pyro_sculpt.mcmc.independence import IndependenceMH, IndependenceRejuvenation, IndependenceState
from pyro_sculpt.mcmc.kde import GaussianKDE
from pyro_sculpt.mcmc.line_integral import trapezoid_log_ratio
from pyro_sculpt.mcmc.mala import MALA
from pyro_sculpt.mcmc.population import PopulationIndependenceMH, PopulationState
from pyro_sculpt.mcmc.rejuvenation import Rejuvenation
from pyro_sculpt.mcmc.targets import energy_target, log_density_target, operator_target, score_target
from pyro_sculpt.mcmc.uhmc import UHMC
from pyro_sculpt.mcmc.ula import ULA

__all__ = [
    "HMC",
    "MALA",
    "UHMC",
    "ULA",
    "ChainTrace",
    "CorrectorMessenger",
    "DivergenceWarning",
    "GaussianKDE",
    "Gibbs",
    "GibbsState",
    "IndependenceMH",
    "IndependenceRejuvenation",
    "IndependenceState",
    "MCMCInfo",
    "MCMCKernel",
    "MCMCState",
    "NoiseSource",
    "PopulationIndependenceMH",
    "PopulationState",
    "PyroNoise",
    "Rejuvenation",
    "StepSizeAdapter",
    "corrector",
    "energy_target",
    "leapfrog",
    "level_diagnostics",
    "log_density_target",
    "metropolis",
    "noise_source",
    "operator_target",
    "per_particle",
    "plot_level_diagnostics",
    "run_chains",
    "score_target",
    "select",
    "standard_normal",
    "standard_uniform",
    "trapezoid_log_ratio",
]
