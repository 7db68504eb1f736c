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
    for f in ("results.md", "scatter.png", "molecules.png", "gfn_qed.pt", "gfn_sa.pt", "gfn_mw.pt"):
        assert (out / f).stat().st_size > 0
    assert "| QED ⊗ SA |" in (out / "results.md").read_text()
    assert set(res["train_seconds"]) == {"qed", "sa", "mw", "classifier QED, SA", "classifier QED, SA, MW"}
    two = sorted(p for p in out.glob("classifier_qed_sa_*.pt") if "_mw_" not in p.name)
    three = sorted(out.glob("classifier_qed_sa_mw_*.pt"))
    assert len(two) == 1 and len(three) == 1
    # a second run loads every base; a base of other settings is retrained
    sch = molecules.schedule("tiny")
    env = molecules.FragmentEnv(sch.vocabulary, max_fragments=sch.max_fragments)
    GFlowNet(env, "qed", policy="env", hidden=8, layers=1, beta_range=sch.beta_range).save(out / "gfn_mw.pt")
    capsys.readouterr()
    molecules.main(out, "tiny", progress=False, particles=30, three_models=True)
    printed = capsys.readouterr().out
    assert f"loaded {out / 'gfn_qed.pt'}" in printed and f"loaded {out / 'gfn_sa.pt'}" in printed
    assert f"loaded {out / 'gfn_mw.pt'}" not in printed
    assert GFlowNet.load(out / "gfn_mw.pt").hidden == sch.hidden
    # the QED-SA classifier is reused; the retrained MW base gives the 3-model classifier a new file
    assert f"loaded {two[0]}" in printed and f"loaded {three[0]}" not in printed
    assert len(list(out.glob("classifier_qed_sa_mw_*.pt"))) == 2


def test_unknown_size_is_an_error():
    with pytest.raises(ValueError, match="size"):
        molecules.schedule("medium")
