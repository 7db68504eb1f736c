"""``pyro-sculpt molecules --size tiny``: every output is written, the rows and the EMD matrix are consistent, and a
second run reuses the cached bases and classifiers (and retrains a base of other settings, and the classifier of
that base)."""

import json

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("scipy")

import torch  # noqa: E402

from pyro_sculpt.experiments import cli, molecules  # noqa: E402
from pyro_sculpt.gflownets import GFlowNet  # noqa: E402


def test_the_tiny_run_writes_its_table_matrix_and_figures_and_reuses_its_bases(tmp_path, capsys):
    out = tmp_path / "mol"
    assert cli.main(["molecules", "--size", "tiny", "--out", str(out), "--no-progress", "--particles", "60"]) == 0
    res = json.loads((out / "results.json").read_text())
    names = res["emd"]["names"]
    expected = ["random trees", "QED", "SA", "MW", "mixture QED, SA", "QED ⊗ SA", "QED ◑ SA", "QED ◐ SA"]
    product = ["QED × SA", "QED × SA + 2 moves"]
    guided = ["QED ⊗ SA, classifier", "QED ◑ SA, classifier", "QED ◐ SA, classifier", "QED ⊗ SA, classifier + SMC"]
    assert names == expected + ["QED ⊗ SA ⊗ MW"] + product + guided + ["QED ⊗ SA ⊗ MW, classifier"]
    emd = torch.tensor(res["emd"]["matrix"])
    off = ~torch.eye(len(names), dtype=torch.bool)
    assert torch.equal(emd, emd.T) and (emd.diagonal() == 0).all() and (emd[off] > 0).all()
    for row in res["rows"].values():
        assert row["validity"] == 1.0  # every sampled tree is a valid molecule
        for bins in ("paper", "strict"):
            r = row[bins]
            assert 0 <= r["qed&sa&mw"] <= r["qed&sa"] <= min(r["qed"], r["sa"]) <= 1
            assert abs(r["qed&sa"] + r["qed&!sa"] - r["qed"]) < 1e-12
        # the strict bins are inside the paper's
        assert all(row["strict"][k] <= row["paper"][k] for k in ("qed", "sa", "qed&sa"))
    for name in ("QED ⊗ SA", "QED ◑ SA", "QED ◐ SA", "QED ⊗ SA ⊗ MW", "QED ⊗ SA, classifier + SMC") + tuple(product):
        assert res["smc"][name]["min_ess"] > 0 and res["smc"][name]["seconds"] > 0
    acceptance = res["smc"]["QED × SA + 2 moves"]["acceptance"]
    assert len(acceptance) == 2 and all(0 <= a <= 1 for a in acceptance)
    samples = json.loads((out / "samples.json").read_text())
    assert list(samples) == names and all(len(v) == 60 for v in samples.values())
    sch = molecules.schedule("tiny")
    files = {obj: molecules.base_path(out, obj, sch, k) for k, obj in enumerate(("qed", "sa", "mw"))}  # seed 0
    for f in [out / "results.md", out / "scatter.png", out / "molecules.png", *files.values()]:
        assert f.stat().st_size > 0
    assert "| QED ⊗ SA |" in (out / "results.md").read_text()
    assert set(res["train_seconds"]) == {"qed", "sa", "mw", "classifier QED, SA", "classifier QED, SA, MW"}
    assert all(res["trained_here"].values()) and set(res["trained_here"]) == set(res["train_seconds"])
    two = sorted(p for p in out.glob("classifier_qed_sa_*.pt") if "_mw_" not in p.name)
    three = sorted(out.glob("classifier_qed_sa_mw_*.pt"))
    assert len(two) == 1 and len(three) == 1
    # a second run loads every base; a base of other settings is retrained
    env = molecules.FragmentEnv(sch.vocabulary, max_fragments=sch.max_fragments)
    GFlowNet(env, "qed", policy="env", hidden=8, layers=1, beta_range=sch.beta_range).save(files["mw"])
    capsys.readouterr()
    again = molecules.main(out, "tiny", progress=False, particles=30, three_models=True)
    printed = capsys.readouterr().out
    assert f"loaded {files['qed']}" in printed and f"loaded {files['sa']}" in printed
    assert f"loaded {files['mw']}" not in printed
    assert GFlowNet.load(files["mw"]).hidden == sch.hidden
    # the tiny bases train deterministically: the retrained MW base has the very weights of the first, and both
    # classifiers, keyed by the bases' weights, are reused
    assert again["trained_here"] == {"qed": False, "sa": False, "mw": True, "classifier QED, SA": False,
                                     "classifier QED, SA, MW": False}  # fmt: skip
    assert "qed 0 (loaded from --out)" in (out / "results.md").read_text()
    assert f"loaded {two[0]}" in printed and f"loaded {three[0]}" in printed
    # another seed trains its own bases and classifier instead of loading these
    other = molecules.main(out, "tiny", seed=5, progress=False, particles=30, three_models=False)
    assert not any(f"loaded {f}" in capsys.readouterr().out for f in files.values())
    assert all(other["trained_here"].values())
    assert molecules.base_path(out, "qed", sch, 5).exists() and len(list(out.glob("gfn_qed_*.pt"))) == 2
    assert len([p for p in out.glob("classifier_qed_sa_*.pt") if "_mw_" not in p.name]) == 2  # other bases, other key


def test_unknown_size_is_an_error():
    with pytest.raises(ValueError, match="size"):
        molecules.schedule("medium")


def test_bad_arguments_are_refused_before_any_training(tmp_path):
    for particles in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="particles must be an integer >= 2"):
            molecules.main(tmp_path, "tiny", progress=False, particles=particles)
    for seed in (-1, 2**32, 1.5):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\)"):
            molecules.main(tmp_path, "tiny", seed=seed, progress=False)
    assert list(tmp_path.iterdir()) == []
    # the run's sub-seeds (seed + k for its models and sets) wrap into the range: --seed 2**32 - 1 runs
    assert molecules._sub_seed(2**32 - 1, 0) == 2**32 - 1 and molecules._sub_seed(2**32 - 1, 210) == 209


def test_drawing_labels_spell_every_set_in_ascii():
    for name in ("QED ⊗ SA", "QED × SA", "QED × SA + 10 moves", "QED ⊗ SA, classifier + SMC", "QED ◑ SA, classifier"):
        label = molecules._ascii_name(name)
        assert label.isascii() and label != name
    assert molecules._ascii_name("QED × SA + 10 moves") == "product(QED, SA) + 10 moves"
    assert molecules._ascii_name("mixture QED, SA") == "mixture QED, SA"


def test_the_classifier_key_follows_the_bases_weights(tmp_path):
    sch = molecules.schedule("tiny")
    env = molecules.FragmentEnv(sch.vocabulary, max_fragments=sch.max_fragments)
    torch.manual_seed(0)
    bases = [GFlowNet(env, obj, policy="env", hidden=8, layers=1) for obj in ("qed", "sa")]
    path = molecules._classifier_path(tmp_path, ("qed", "sa"), bases, sch, 10)
    assert path == molecules._classifier_path(tmp_path, ("qed", "sa"), bases, sch, 10)
    assert path != molecules._classifier_path(tmp_path, ("qed", "sa"), bases, sch, 11)  # another seed
    with torch.no_grad():
        next(bases[1].parameters()).view(-1)[0] += 1e-3
    assert path != molecules._classifier_path(tmp_path, ("qed", "sa"), bases, sch, 10)  # other weights
