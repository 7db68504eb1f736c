"""``Twist.rejuvenate_final``: the SMC loop resamples after the last step and hands the particles to the twist's
moves; the weights are then equal and the log-normaliser estimate is unchanged."""

import math

import torch

import pyro_sculpt as ps
from pyro_sculpt.infer.twist import Twist


class Deterministic(Twist):
    """Two steps with fixed increments per particle (so the log-normaliser is known exactly); records its moves."""

    max_steps = 2

    def __init__(self, final: bool):
        self.rejuvenate_final = final
        self.calls = []

    def init(self, n):
        return {"i": torch.arange(n), "done": torch.zeros(n, dtype=torch.bool)}

    def step(self, particles, t):
        inc = torch.where(particles["i"] % 2 == 0, 0.0, -1.0).double() if t == 1 else torch.zeros(len(particles["i"]))
        done = torch.full_like(particles["done"], t == 1)
        return {"i": particles["i"], "done": done}, inc.double(), done

    def rejuvenate(self, particles, t):
        self.calls.append((t, particles["i"].clone()))
        return {"i": particles["i"] + 1000, "done": particles["done"]}

    def terminal(self, particles):
        return particles["i"].double().unsqueeze(-1)


def test_final_rejuvenation_resamples_then_moves():
    n = 1000
    exact = math.log((1 + math.exp(-1)) / 2)
    plain = ps.infer.smc(Deterministic(False), n, seed=0)
    assert abs(plain.log_evidence - exact) < 1e-9 and plain.num_resamples == 0
    twist = Deterministic(True)
    res = ps.infer.smc(twist, n, seed=0, resampling="multinomial")  # (systematic keeps this periodic pattern as is)
    assert [t for t, _ in twist.calls] == [1]  # once, after the last step
    resampled = twist.calls[0][1]
    assert abs(float((resampled % 2 == 0).double().mean()) - 1 / (1 + math.exp(-1))) < 0.05  # by the final weights
    assert bool((res.x.squeeze(-1) >= 1000).all())  # the moved particles are the output
    assert torch.allclose(res.log_weights, torch.full((n,), -math.log(n), dtype=torch.float64))
    assert abs(res.log_evidence - exact) < 1e-9 and res.resample_steps == [1]


def test_final_rejuvenation_returns_the_particles_in_random_order():
    """Systematic resampling lists an ancestor's copies side by side; after the final moves the particles come back
    shuffled (the moved values unchanged), so that the first k of them are a fair subset."""
    n = 1000
    twist = Deterministic(True)
    res = ps.infer.smc(twist, n, seed=0)
    moved = twist.calls[0][1] + 1000
    out = res.x.squeeze(-1).long()
    assert torch.equal(out.sort().values, moved.sort().values)  # the same values
    assert bool((moved[1:] >= moved[:-1]).all())  # the moves saw them sorted by ancestor
    assert not bool((out[1:] >= out[:-1]).all())  # the output is not
    # the first tenth spans the ancestors: its mean index is the overall one (sorted: about a twentieth of it)
    assert abs(float(out[: n // 10].double().mean()) - float(moved.double().mean())) < 100
