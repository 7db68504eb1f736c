import pytest
import torch

import pyro_sculpt as ps
from pyro_sculpt.gflownets import TabularGFlowNet
from tests.conftest import exact_bases

ENV = ps.HyperGrid(2, 4)


def test_bases_on_different_envs():
    a = exact_bases(ENV, 1)[0]
    b = exact_bases(ps.HyperGrid(2, 5), 1)[0]
    with pytest.raises(ValueError, match=r"bases\[1\] has environment .* every base must share one environment") as e:
        ps.ExactClassifier([a, b], 2)
    assert "{'height': 5}, but bases[0] has {'height': 4}" in str(e.value)  # what differs (not 72 fragments' configs)


def test_bases_with_different_backward_policies():
    a, b = exact_bases(ENV, 2)

    class Learned(TabularGFlowNet):
        backward_policy = "learned"

    c = Learned(ENV, b.table)
    with pytest.raises(ValueError, match="share one backward policy"):
        ps.mixture(a, c)


def test_classifier_for_other_numbers():
    a, b, c = exact_bases(ENV, 3)
    clf3 = ps.ExactClassifier([a, b, c], 2)
    with pytest.raises(ValueError, match="trained for 3 base models, but 2 bases"):
        ps.harmonic_mean(a, b, clf3)
    clf1 = ps.ExactClassifier([a, b], 1)
    with pytest.raises(ValueError, match="trained for 1 observations, but y has 2 entries"):
        ps.harmonic_mean(a, b, clf1)
    learned = ps.ObservationClassifier(ENV, 2, 2, hidden=8)
    with pytest.raises(ValueError, match="alpha needs a classifier conditioned on alpha"):
        ps.harmonic_mean(a, b, learned, alpha=0.3)
    other_env = ps.ObservationClassifier(ps.HyperGrid(2, 5), 2, 2, hidden=8)
    with pytest.raises(ValueError, match="classifier is for env"):
        ps.harmonic_mean(a, b, other_env)


def test_y_and_alpha_out_of_range():
    a, b = exact_bases(ENV, 2)
    clf = ps.ExactClassifier([a, b], 2)
    with pytest.raises(ValueError, match=r"y\[1\] must be a base index in \[0, 1\] or None, got 2"):
        ps.sculpt([a, b], clf, (0, 2))
    with pytest.raises(ValueError, match=r"y\[0\] must be a base index"):
        ps.sculpt([a, b], clf, (-1, 0))
    for bad in (True, 0.0, torch.tensor(0.0), torch.tensor([0]), "0"):  # not integers
        with pytest.raises(ValueError, match=r"y\[0\] must be a base index"):
            ps.sculpt([a, b], clf, (bad, 1))
    # integers of NumPy or torch read as ints
    import numpy as np

    want = ps.sculpt([a, b], clf, (0, 1)).log_prob(ENV.all_states())
    for y in ((np.int64(0), 1), (torch.tensor(0), np.int32(1))):
        assert torch.allclose(ps.sculpt([a, b], clf, y).log_prob(ENV.all_states()), want)
    for bad in (0.0, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\)"):
            ps.harmonic_mean(a, b, clf, alpha=bad)
    with pytest.raises(ValueError, match="alpha is defined for two base models"):
        c = exact_bases(ENV, 3)[2]
        ps.sculpt([a, b, c], ps.ExactClassifier([a, b, c], 2), (0, 1), alpha=0.5)
    with pytest.raises(ValueError, match="weights must have one entry per base"):
        ps.mixture(a, b, weights=(1.0,))
    with pytest.raises(ValueError, match="at least two base models"):
        ps.mixture(a)


def test_classifier_checkpoint_round_trip_and_rejects_other_env(tmp_path):
    a, b = exact_bases(ENV, 2)
    clf = ps.ObservationClassifier(ENV, 2, 2, alpha_conditioned=True, hidden=16)
    clf.save(tmp_path / "c.pt")
    loaded = ps.ObservationClassifier.load(tmp_path / "c.pt")
    s = ENV.all_states()
    t = torch.zeros(len(s), dtype=torch.bool)
    obs = ps.sculpting.Observations.build((0, 1), 2, alpha=0.3)
    assert torch.allclose(clf.log_joint(s, t, obs), loaded.log_joint(s, t, obs))
    with pytest.raises(ValueError, match="was trained on env"):
        ps.ObservationClassifier.load(tmp_path / "c.pt", env=ps.HyperGrid(2, 5))
    ps.GFlowNet(ENV, hidden=8).save(tmp_path / "g.pt")
    with pytest.raises(ValueError, match="not a pyro_sculpt ObservationClassifier checkpoint"):
        ps.ObservationClassifier.load(tmp_path / "g.pt")


def test_a_classifier_for_other_bases_or_another_order_is_refused():
    a, b, c = exact_bases(ENV, 3)
    exact = ps.ExactClassifier([a, b], 2)
    for bases in ((b, a), (a, c)):  # a permutation composes the wrong models (contrast L1 1.77 before the check)
        with pytest.raises(ValueError, match="classifier was made for other bases"):
            ps.contrast(*bases, exact)
        with pytest.raises(ValueError, match="classifier was made for other bases"):
            ps.sculpt([*bases], exact, (0, 1))
    ps.contrast(a, b, exact)  # its own bases, in its order
    learned = ps.ObservationClassifier.for_bases([a, b], num_observations=2, hidden=8)
    with pytest.raises(ValueError, match="classifier was made for other bases"):
        ps.harmonic_mean(b, a, learned)
    with pytest.raises(ValueError, match="classifier was made for other bases"):
        ps.harmonic_mean(a, c, learned)
    a2, b2 = (ps.gflownets.TabularGFlowNet(ENV, p.table) for p in (a, b))  # the same models loaded again
    ps.harmonic_mean(a2, b2, learned)
    with pytest.raises(ValueError, match="classifier was made for other bases"):
        ps.harmonic_mean(a2, b2, exact)  # an exact classifier is a function of its own bases
    with pytest.raises(ValueError, match="classifier was made for other bases"):
        with ps.sculpt_guidance(classifier=exact, y=(0, 1)):
            ps.run("x", ps.mixture(b, a).process, num_particles=2)


def test_a_bad_logit_alpha_range_is_named_before_training():
    bases = exact_bases(ENV, 2, seed=0)
    clf = ps.ObservationClassifier(ENV, 2, 2, alpha_conditioned=True, hidden=8)
    for value in (float("nan"), float("inf"), -1.0, "3"):  # NaN failed at step 1 as a non-finite loss
        with pytest.raises(ValueError, match="logit_alpha_range must be a finite number >= 0"):
            clf.fit(bases, steps=1, batch_size=2, logit_alpha_range=value, progress_bar=False)
