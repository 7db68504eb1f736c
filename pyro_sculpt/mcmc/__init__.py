"""Layer 2: batched MCMC kernels with a per-particle accept (ULA, MALA, HMC), in the functional ``init``/``step``
style; filled by the energy-based composition work (docs/math.md §2)."""

__all__: list[str] = []
