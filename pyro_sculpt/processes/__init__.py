"""Layer 1: iterative generative processes and their Pyro interface."""

from pyro_sculpt.processes.categorical import FastCategorical, categorical, sample_inverse_cdf
from pyro_sculpt.processes.deferred import DeferredCategorical
from pyro_sculpt.processes.distribution import ProcessDistribution
from pyro_sculpt.processes.process import IterativeProcess, State
from pyro_sculpt.processes.reparam import ProcessReparam
from pyro_sculpt.processes.runner import replace_step_dist, run, sample, step_site_name, step_sites

__all__ = [
    "DeferredCategorical",
    "FastCategorical",
    "IterativeProcess",
    "ProcessDistribution",
    "ProcessReparam",
    "State",
    "categorical",
    "replace_step_dist",
    "run",
    "sample",
    "step_site_name",
    "sample_inverse_cdf",
    "step_sites",
]
