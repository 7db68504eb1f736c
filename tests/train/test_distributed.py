"""Data-parallel training in the shared loop: two real processes (a spawned gloo group) train a GFlowNet and a
classifier to the weights of one process running both shards (the full batch, split as the processes split it);
errors for a batch the world size does not divide, a launch without torchrun's environment or without the
backend; checkpoints written by rank 0 only and loadable by any world size."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import pyro_sculpt as ps
from pyro_sculpt.gflownets import TabularGFlowNet
from pyro_sculpt.train import Distributed, distributed, fit_loop, init_distributed, is_main_process
from pyro_sculpt.train.data_parallel import check_backend, local_batch_size, rank_seed

ENV = ps.HyperGrid(2, 6)
STEPS = 20


def _bases():
    return [
        TabularGFlowNet.from_reward(ENV, ps.rewards.symmetric_shubert(0.5)),
        TabularGFlowNet.from_reward(ENV, ps.rewards.diagonal_sigmoid()),
    ]


def _train_gflownet():
    return ps.GFlowNet(ENV, ps.rewards.symmetric_shubert(0.5), hidden=32, layers=2).fit(
        steps=STEPS, batch_size=16, lr=5e-3, seed=3, progress_bar=False
    )


def _train_classifier():
    return ps.ObservationClassifier.for_bases(_bases(), 2, hidden=32).fit(
        steps=STEPS, batch_size=8, lr=5e-3, ramp=5, seed=4, progress_bar=False
    )


def _worker(rank: int, world_size: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world_size)
    try:
        world = init_distributed()  # wraps the group initialised above
        assert (world.rank, world.world_size, world.backend) == (rank, world_size, "gloo")
        with distributed(world):
            gfn = _train_gflownet()
            clf = _train_classifier()
            gfn.save(f"{tmp}/gfn.pt")  # rank 0 only
            clf.save(f"{tmp}/clf_rank{rank}.pt")  # rank 0 only: clf_rank1.pt must not exist
            try:
                ps.GFlowNet(ENV, ps.rewards.symmetric_shubert(0.5), hidden=8).fit(
                    steps=1, batch_size=15, seed=0, progress_bar=False
                )
            except ValueError as err:  # raised on every process before any collective: no process hangs
                error = str(err)
            else:
                error = ""
        torch.save(
            {
                "gfn": {k: v.clone() for k, v in gfn.state_dict().items()},
                "clf": {k: v.clone() for k, v in clf.state_dict().items()},
                "gfn_history": gfn.history,
                "error": error,
            },
            f"{tmp}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def _assert_close_state(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=0), (k, (a[k] - b[k]).abs().max())


@pytest.mark.slow
def test_two_processes_train_to_the_weights_of_the_full_batch(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    # the processes hold the same weights after every step (their gradients are averaged)
    _assert_close_state(r0["gfn"], r1["gfn"], 0.0)
    _assert_close_state(r0["clf"], r1["clf"], 0.0)
    # one process running both shards one after another: the full batch of 16 trajectories (8 per shard)
    with distributed(Distributed.single_process(2)):
        gfn, clf = _train_gflownet(), _train_classifier()
    _assert_close_state(r0["gfn"], gfn.state_dict(), 1e-5)
    _assert_close_state(r0["clf"], clf.state_dict(), 1e-5)
    assert [h["loss"] for h in r0["gfn_history"]] == pytest.approx([h["loss"] for h in gfn.history], rel=1e-5)
    # training moved the weights (the comparison is not of two initialisations)
    fresh = ps.GFlowNet(ENV, ps.rewards.symmetric_shubert(0.5), hidden=32, layers=2)
    torch.manual_seed(3)
    ps.train.reset_parameters_(fresh)
    moved = max(float((fresh.state_dict()[k] - v).abs().max()) for k, v in gfn.state_dict().items())
    assert moved > 1e-3
    # checkpoints: written once, by rank 0, and loadable by one process
    assert (tmp_path / "gfn.pt").exists() and (tmp_path / "clf_rank0.pt").exists()
    assert not (tmp_path / "clf_rank1.pt").exists()
    _assert_close_state(ps.GFlowNet.load(tmp_path / "gfn.pt", ENV).state_dict(), r0["gfn"], 0.0)
    # a batch the world size does not divide: the same clear error on both processes
    for r in (r0, r1):
        assert "batch_size=15 must be divisible by the world size 2" in r["error"]


def test_one_shard_is_the_plain_run_and_two_shards_differ_from_it():
    plain = _train_gflownet()
    with distributed(Distributed.single_process(1)):
        one = _train_gflownet()
    _assert_close_state(plain.state_dict(), one.state_dict(), 0.0)
    with distributed(Distributed.single_process(2)):
        two = _train_gflownet()
    assert not torch.allclose(two.log_z, plain.log_z)  # shard 1 draws other trajectories than the plain run
    assert rank_seed(7, 0) == 7 and rank_seed(7, 1) != rank_seed(7, 2)


def test_emulated_shards_average_the_gradients_of_their_batch_shares():
    """A loss that reads its share: the mean of x over the items of a batch of 4 split in 2 shards of 2."""

    class Mean(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.history = []

    model = Mean()
    seen = []

    def loss(state):
        x = torch.arange(4.0)[state.rank * state.batch_size : (state.rank + 1) * state.batch_size]
        seen.append((state.rank, state.batch_size))
        return (model.w * x).mean()

    opt_grads = []
    fit_loop(model, loss, param_groups=[{"params": [model.w], "lr": 0.1}], steps=1, batch_size=4,
             callback=lambda s, m: opt_grads.append(m.w.grad.clone()), progress_bar=False,
             distributed=Distributed.single_process(2))  # fmt: skip
    assert seen == [(0, 2), (1, 2)]
    assert float(opt_grads[0]) == pytest.approx(1.5)  # d/dw of mean(w * [0, 1, 2, 3])


def test_a_batch_the_world_size_does_not_divide_is_an_error():
    with pytest.raises(ValueError, match=r"batch_size=15 must be divisible by the world size 2"):
        with distributed(Distributed.single_process(2)):
            _train_gflownet().fit(steps=1, batch_size=15, progress_bar=False)
    assert local_batch_size(16, 4) == 4
    with pytest.raises(ValueError, match="world_size must be an integer >= 1"):
        Distributed.single_process(0)


def test_a_launch_without_torchrun_or_without_the_backend_is_an_error(monkeypatch):
    assert not dist.is_initialized()
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="needs the environment variable RANK.*torchrun"):
        init_distributed(backend="gloo")
    with pytest.raises(RuntimeError, match="needs the environment variable RANK"):
        fit_loop(torch.nn.Linear(1, 1), lambda s: torch.zeros(()), param_groups=[], steps=1, distributed=True)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        init_distributed(backend="gloo")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="backend='nccl' needs CUDA"):
            init_distributed(backend="nccl")
    with pytest.raises(RuntimeError, match="backend 'no_such_backend' is not available"):
        check_backend("no_such_backend")
    with pytest.raises(TypeError, match="distributed must be None, True, False or a ps.train.Distributed"):
        fit_loop(torch.nn.Linear(1, 1), lambda s: torch.zeros(()), param_groups=[], steps=1, distributed="gloo")
    assert not dist.is_initialized()


def test_only_rank_zero_writes_checkpoints(tmp_path):
    gfn = ps.GFlowNet(ENV, ps.rewards.symmetric_shubert(0.5), hidden=8)
    with distributed(Distributed(rank=1, world_size=2)):  # no collective is needed to save
        assert not is_main_process()
        gfn.save(tmp_path / "a.pt")
    assert not (tmp_path / "a.pt").exists()
    with distributed(Distributed(rank=0, world_size=2)):
        gfn.save(tmp_path / "a.pt")
    assert (tmp_path / "a.pt").exists() and is_main_process()
    assert os.listdir(tmp_path) == ["a.pt"]


def test_the_commands_say_how_to_launch_them_distributed():
    from pyro_sculpt.experiments import cli

    parser = cli.build_parser()
    assert "torchrun --nproc_per_node N" in " ".join(parser.format_help().split())
    for command in ("train", "grid", "gaussians"):
        sub = parser._subparsers._group_actions[0].choices[command]
        assert "torchrun" in sub.format_help()


def test_an_emulated_fit_without_a_seed_moves_the_global_generators_on():
    # shard 0 continues the global generators; they must end where it ended, not replay its draws in the next fit
    net = torch.nn.Linear(1, 1)
    net.history = []
    draws: list = []

    def loss(state):
        if state.rank == 0:
            draws.append(torch.rand(()).item())
        return (net(torch.ones(1, 1)) ** 2).mean()

    torch.manual_seed(0)
    for _ in range(2):
        with distributed(Distributed.single_process(2)):
            fit_loop(net, loss, param_groups=[{"params": net.parameters(), "lr": 1e-3}], steps=3, progress_bar=False)
    first, second = draws[:3], draws[3:]
    assert not set(first) & set(second)  # the second fit drew its own numbers (it replayed the first's before)
    assert torch.rand(()).item() not in draws


def test_is_main_process_reads_torch_group_outside_a_distributed_context(monkeypatch, tmp_path):
    # after init_distributed() (or init_process_group) without `with distributed(...)`, rank 1 used to say True:
    # it printed and wrote checkpoints as rank 0 did
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 1)
    assert not is_main_process()
    ps.GFlowNet(ENV, ps.rewards.symmetric_shubert(0.5), hidden=8).save(tmp_path / "a.pt")
    assert not (tmp_path / "a.pt").exists()
    with distributed(Distributed(rank=0, world_size=2)):  # an active world decides
        assert is_main_process()
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 0)
    assert is_main_process()
