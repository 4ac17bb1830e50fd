"""Optimizers torch lacks (rnnlab.training.prediction, hessian_free, kalman, evolutionary): each on a problem with a
known optimum, then end to end."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from conftest import train_in_process
from rnnlab.data.base import TaskSpec
from rnnlab.errors import ConfigError
from rnnlab.models.elman import Elman
from rnnlab.training.evolutionary import CMAES, GeneticAlgorithm
from rnnlab.training.hessian_free import GaussNewton, HessianFree, levenberg_marquardt
from rnnlab.training.kalman import ExtendedKalmanFilter
from rnnlab.training.prediction import Prediction, check_prediction_optimizer

ADDING_BASELINE = 0.167  # test MSE of predicting the mean on the adding problem
TINY_ADDING = ["data=adding", "data.seq_len=10", "data.val_size=256", "data.test_size=256", "model=elman"]


class LastOutputs(nn.Module):
    """An Elman network's outputs at each sequence's last valid step [B, C] (or its hidden states [B, T, H])."""

    def __init__(self, network: Elman, hidden: bool = False):
        super().__init__()
        self.network = network
        self.hidden = hidden

    def forward(self, x, lengths):
        if self.hidden:
            return self.network.run_layers(x, lengths, None)[0]
        outputs, _ = self.network(x, lengths)
        return outputs[torch.arange(x.shape[0]), lengths - 1]


def explicit_jacobian(module: nn.Module, *inputs) -> torch.Tensor:
    """d module(*inputs) / d theta as a dense [outputs, n] matrix, theta = the parameters in order, by
    torch.autograd.functional (independent of the optimizer's double-backward products)."""
    names, shapes = zip(*[(name, p.shape) for name, p in module.named_parameters()])
    theta = torch.cat([p.detach().reshape(-1) for p in module.parameters()])

    def of_theta(vector):
        pieces = vector.split([math.prod(shape) for shape in shapes])
        params = {name: piece.view(shape) for name, piece, shape in zip(names, pieces, shapes)}
        return functional_call(module, params, inputs).reshape(-1)

    return torch.autograd.functional.jacobian(of_theta, theta)


def linear_data(rows: int = 40, seed: int = 0):
    """Inputs [rows, 3], noisy targets [rows, 2] of a linear map, as float64."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 3, generator=generator, dtype=torch.float64)
    weight = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.3, -0.7]], dtype=torch.float64)
    y = x @ weight.T + torch.tensor([0.2, -0.4], dtype=torch.float64)
    return x, y + 0.1 * torch.randn(rows, 2, generator=generator, dtype=torch.float64)


def least_squares(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The closed-form least-squares [weight | bias] [C, F + 1]."""
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    return torch.linalg.lstsq(design, y).solution.T


def weight_and_bias(linear: nn.Linear) -> torch.Tensor:
    return torch.cat([linear.weight, linear.bias[:, None]], dim=1).detach()


# ----------------------------------------------------------------------------------------------- Hessian-free


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_gauss_newton_product_equals_explicit_jt_hl_j(loss):
    torch.manual_seed(0)
    net = LastOutputs(Elman(2, 3, hidden_size=4, implementation="cell").double())
    x, lengths = torch.randn(5, 6, 2, dtype=torch.float64), torch.tensor([6, 4, 5, 6, 3])
    targets = torch.randn(5, 3, dtype=torch.float64) if loss == "mse" else torch.tensor([0, 2, 1, 1, 0])
    prediction = Prediction(net(x, lengths), targets, loss)
    v = torch.randn(sum(p.numel() for p in net.parameters()), dtype=torch.float64)

    gv, sv = GaussNewton(HessianFree(net.parameters()), prediction).product(v)

    jacobian = explicit_jacobian(net, x, lengths)  # [15, n]
    z = prediction.outputs.detach()  # H_L = d^2 L / dz^2 of the mean loss by autograd, not by the optimizer's formula
    hessian = torch.autograd.functional.hessian(lambda out: Prediction(out, targets, loss).value(), z).reshape(15, 15)
    assert sv is None
    torch.testing.assert_close(gv, jacobian.T @ hessian @ jacobian @ v, atol=1e-6, rtol=1e-6)


def test_structural_damping_product_equals_explicit_jt_j_of_the_hidden_states():
    torch.manual_seed(1)
    network = Elman(2, 1, hidden_size=3, implementation="cell").double()
    x, lengths = torch.randn(4, 5, 2, dtype=torch.float64), torch.full((4,), 5)
    hidden, _ = network.run_layers(x, lengths, None)
    prediction = Prediction(network.readout(hidden)[:, -1], torch.zeros(4, 1, dtype=torch.float64), "mse", hidden)
    v = torch.randn(sum(p.numel() for p in network.parameters()), dtype=torch.float64)

    _, sv = GaussNewton(HessianFree(network.parameters()), prediction, with_hidden=True).product(v)

    jacobian = explicit_jacobian(LastOutputs(network, hidden=True), x, lengths)  # [4*5*3, n]
    torch.testing.assert_close(sv, jacobian.T @ jacobian @ v / jacobian.shape[0], atol=1e-8, rtol=1e-8)


def test_hessian_free_reaches_the_least_squares_solution_in_a_few_steps():
    x, y = linear_data()
    model = nn.Linear(3, 2).double()
    optimizer = HessianFree(model.parameters(), damping=1e-3, cg_tolerance=1e-12)
    losses, rhos = [], []
    for _ in range(4):
        losses.append(float(optimizer.step(lambda: Prediction(model(x), y, "mse"))))
        rhos.append(optimizer.stats.get("rho"))
    torch.testing.assert_close(weight_and_bias(model), least_squares(x, y), atol=1e-6, rtol=0)
    assert losses == sorted(losses, reverse=True)
    assert rhos[0] == pytest.approx(1.0, abs=1e-9)  # the quadratic model is exact for a linear model


def test_levenberg_marquardt_rule():
    assert levenberg_marquardt(1.0, 0.1, 1.5, 2 / 3) == 1.5
    assert levenberg_marquardt(1.0, 0.9, 1.5, 2 / 3) == pytest.approx(2 / 3)
    assert levenberg_marquardt(1.0, 0.5, 1.5, 2 / 3) == 1.0


def test_damping_falls_when_the_model_predicts_the_reduction_and_rises_when_it_overpredicts():
    # exact quadratic model: rho = 1, lambda drops by 2/3
    x, y = linear_data()
    model = nn.Linear(3, 2).double()
    exact = HessianFree(model.parameters(), damping=0.5)
    exact.step(lambda: Prediction(model(x), y, "mse"))
    assert exact.damping == pytest.approx(0.5 * 2 / 3)
    # z = w^2 with target -5 at w = 1: Gauss-Newton linearises z = 1 + 2 d and predicts the loss 36 -> 0 at d = -3,
    # but z(-2) = 4 scores 81: rho < 0 < 1/4, so lambda rises by 3/2 and the step is undone
    w = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    target = torch.tensor([[-5.0]], dtype=torch.float64)
    overpredicting = HessianFree([w], damping=1e-9)
    overpredicting.step(lambda: Prediction((w**2).view(1, 1), target, "mse"))
    assert overpredicting.stats["rho"] < 0.25
    assert overpredicting.damping == pytest.approx(1.5e-9)
    assert float(w.detach()) == 1.0


# ------------------------------------------------------------------------------------ extended Kalman filters


def recursive_least_squares(x, y, prior: float, noise: float) -> torch.Tensor:
    """Textbook RLS (one row at a time) for y = [x, 1] theta, theta_0 = 0, P_0 = prior I, noise variance ``noise``."""
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    theta = torch.zeros(design.shape[1], y.shape[1], dtype=x.dtype)
    covariance = prior * torch.eye(design.shape[1], dtype=x.dtype)
    for row, target in zip(design, y):
        gain = covariance @ row / (noise + row @ covariance @ row)
        theta = theta + torch.outer(gain, target - row @ theta)
        covariance = covariance - torch.outer(gain, row @ covariance)
    return theta.T


@pytest.mark.parametrize("chunk_size", [64, 3])
def test_ekf_on_linear_regression_equals_recursive_least_squares_and_the_closed_form(chunk_size):
    x, y = linear_data(rows=30)
    model = nn.Linear(3, 2).double()
    nn.init.zeros_(model.weight), nn.init.zeros_(model.bias)
    prior, noise = 10.0, 0.5
    optimizer = ExtendedKalmanFilter(
        model.parameters(), groups="global", initial_covariance=prior, process_noise=0.0, measurement_noise=noise,
        chunk_size=chunk_size,
    )
    for rows in torch.arange(30).split(10):  # three batches
        optimizer.step(lambda: Prediction(model(x[rows]), y[rows], "mse"))
    # the posterior mean of a Gaussian prior N(0, prior I) and noise N(0, noise): ridge with lambda = noise / prior.
    # EKF weights are [W (row-major), b]: one joint covariance couples both outputs (their rows share no weights).
    design = torch.cat([x, torch.ones(30, 1, dtype=x.dtype)], dim=1)
    closed_form = torch.linalg.solve(design.T @ design + noise / prior * torch.eye(4, dtype=x.dtype), design.T @ y).T
    torch.testing.assert_close(weight_and_bias(model), closed_form, atol=1e-9, rtol=0)
    torch.testing.assert_close(weight_and_bias(model), recursive_least_squares(x, y, prior, noise), atol=1e-9, rtol=0)


class TanhUnit(nn.Module):
    """z = tanh(x w^T): one parameter tensor, one output: one group whether grouped globally, by tensor or by neuron."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([[0.3, -0.2, 0.1, 0.05]], dtype=torch.float64))

    def forward(self, x):
        return torch.tanh(x @ self.weight.T)


@pytest.mark.parametrize("groups", ["tensor", "neuron"])
def test_dekf_with_one_group_equals_the_global_ekf(groups):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(24, 4, generator=generator, dtype=torch.float64)
    y = torch.tanh(x @ torch.tensor([[1.0], [-0.5], [0.2], [0.7]], dtype=torch.float64))
    weights = {}
    for mode in ("global", groups):
        model = TanhUnit()
        optimizer = ExtendedKalmanFilter(model.parameters(), groups=mode, process_noise=1e-3, chunk_size=5)
        for rows in torch.arange(24).split(8):
            optimizer.step(lambda: Prediction(model(x[rows]), y[rows], "mse"))
        weights[mode] = model.weight.detach()
    torch.testing.assert_close(weights[groups], weights["global"], atol=1e-12, rtol=0)
    assert not torch.equal(weights["global"], TanhUnit().weight.detach())  # it moved


def test_dekf_groups_are_rows_per_tensor_or_whole_tensors():
    model = Elman(2, 1, hidden_size=3)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == {"readout.weight": (1, 3), "readout.bias": (1,), "rnn.weight_ih_l0": (3, 2),
                      "rnn.weight_hh_l0": (3, 3), "rnn.bias_ih_l0": (3,), "rnn.bias_hh_l0": (3,)}
    neuron = ExtendedKalmanFilter(model.parameters(), groups="neuron").blocks()  # (offset, groups, size)
    assert neuron == [(0, 1, 3), (3, 1, 1), (4, 3, 2), (10, 3, 3), (19, 3, 1), (22, 3, 1)]
    tensor = ExtendedKalmanFilter(model.parameters(), groups="tensor").blocks()
    assert tensor == [(0, 1, 3), (3, 1, 1), (4, 1, 6), (10, 1, 9), (19, 1, 3), (22, 1, 3)]
    assert ExtendedKalmanFilter(model.parameters(), groups="global").blocks() == [(0, 1, 25)]


def memory_regression(rows: int, seed: int):
    """Inputs [rows, 6, 1] from U(-1, 1); target: the mean of the first two inputs (variance 1/6)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(rows, 6, 1, generator=generator) * 2 - 1
    return x, x[:, :2, 0].mean(1, keepdim=True)


@pytest.mark.parametrize("groups", ["global", "neuron"])
def test_ekf_and_dekf_train_a_tiny_elman_below_the_mean_predictor(groups):
    torch.manual_seed(0)
    model = Elman(1, 1, hidden_size=6)
    x, y = memory_regression(256, seed=0)
    lengths = torch.full((16,), 6)
    optimizer = ExtendedKalmanFilter(model.parameters(), groups=groups, initial_covariance=1.0, measurement_noise=0.1)
    for _ in range(2):
        for rows in torch.arange(256).split(16):
            optimizer.step(lambda: Prediction(model(x[rows], lengths)[0][:, -1], y[rows], "mse"))
    test_x, test_y = memory_regression(512, seed=1)
    with torch.no_grad():
        mse = float(((model(test_x)[0][:, -1] - test_y) ** 2).mean())
    assert mse < 0.2 * float(test_y.var()), (mse, float(test_y.var()))


# ------------------------------------------------------------------------------------- evolutionary searches


@pytest.mark.parametrize("search", ["cmaes", "genetic"])
def test_evolutionary_search_finds_the_weights_of_a_linear_model(search):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, generator=generator, dtype=torch.float64)
    truth = torch.tensor([[0.5, -1.0, 2.0, 0.3]], dtype=torch.float64)  # [weight | bias], noise-free targets
    y = x @ truth[:, :3].T + truth[:, 3]
    model = nn.Linear(3, 1).double()
    nn.init.zeros_(model.weight), nn.init.zeros_(model.bias)
    if search == "cmaes":
        optimizer, budget = CMAES(model.parameters(), sigma0=0.5, seed=1), 1000
    else:
        optimizer, budget = GeneticAlgorithm(model.parameters(), sigma=0.5, seed=1), 3000
    while optimizer.evaluations < budget:
        optimizer.step(lambda: Prediction(model(x), y, "mse"))
    torch.testing.assert_close(weight_and_bias(model), truth, atol=1e-3, rtol=0)


def test_evolutionary_search_is_seeded():
    x, y = linear_data(rows=16)
    results = []
    for _ in range(2):
        model = nn.Linear(3, 2).double()
        nn.init.zeros_(model.weight), nn.init.zeros_(model.bias)
        optimizer = GeneticAlgorithm(model.parameters(), seed=3)
        for _ in range(3):
            optimizer.step(lambda: Prediction(model(x), y, "mse"))
        results.append(weight_and_bias(model))
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize(
    "make",
    [lambda ps: HessianFree(ps, damping=0.3), lambda ps: ExtendedKalmanFilter(ps, groups="neuron")],
    ids=["hf", "dekf"],
)
def test_state_dict_round_trip_continues_identically(make):
    """What a checkpoint keeps (lambda and the CG warm start; the covariances) resumes the same trajectory."""
    x, y = linear_data(rows=24)
    models = [nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    first = make(models[0].parameters())
    for rows in torch.arange(24).split(8)[:2]:
        first.step(lambda: Prediction(models[0](x[rows]), y[rows], "mse"))
    models[1].load_state_dict(models[0].state_dict())
    second = make(models[1].parameters())
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)  # as a checkpoint holds it: plain tensors and numbers
    second.load_state_dict(torch.load(io.BytesIO(saved.getvalue()), weights_only=True))
    rows = torch.arange(16, 24)
    for model, optimizer in zip(models, (first, second)):
        optimizer.step(lambda: Prediction(model(x[rows]), y[rows], "mse"))
    for a, b in zip(*(model.parameters() for model in models)):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------- configuration


def test_unsupported_task_kinds_scheduler_and_values_name_their_key():
    factory = lambda params: HessianFree(params)  # noqa: E731  (a plain callable is not a prediction optimizer)
    assert not check_prediction_optimizer(factory, TaskSpec("ctc", per_step=True, metric="ler"))
    from functools import partial

    for kind in ("ctc", "multilabel"):
        with pytest.raises(ConfigError, match=r"^optimizer: .*regression, classification"):
            check_prediction_optimizer(partial(HessianFree), TaskSpec(kind, per_step=True, metric="nll"))
    regression = TaskSpec("regression", per_step=False, metric="mse")
    with pytest.raises(ConfigError, match=r"^scheduler: "):
        check_prediction_optimizer(partial(ExtendedKalmanFilter), regression, scheduler_factory=object())
    with pytest.raises(ConfigError, match=r"^optimizer\.damping: "):
        check_prediction_optimizer(partial(HessianFree, damping=-1.0), regression)
    with pytest.raises(ConfigError, match=r"^optimizer\.groups: "):
        check_prediction_optimizer(partial(ExtendedKalmanFilter, groups="layer"), regression)
    assert check_prediction_optimizer(partial(CMAES), regression)


def test_regularizer_penalties_are_refused(tmp_path):
    record = train_in_process(tmp_path, *TINY_ADDING, "debug=fast", "optimizer=ekf", "regularizer=l2")
    assert record["status"] == "failed" and record["error"].startswith("regularizer: "), record["error"]


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize(
    ("optimizer", "stat"),
    [("hessian_free", "train/damping"), ("ekf", "train/covariance_trace"), ("dekf", "train/covariance_trace"),
     ("cmaes", "train/best_loss"), ("genetic", "train/best_loss")],
)
def test_each_optimizer_trains_end_to_end(tmp_path, optimizer, stat):
    record = train_in_process(
        tmp_path, *TINY_ADDING, "debug=fast", "data.train_size=64", "data.batch_size=16", "model.hidden_size=4",
        f"optimizer={optimizer}",
    )
    assert record["status"] == "completed", record["error"]
    assert record["optimizer"] == optimizer and record["steps"] == 4
    assert stat in record["metrics"] and math.isfinite(record["metrics"]["test/mse"])


@pytest.mark.parametrize("optimizer", ["hessian_free", "ekf"])
def test_classification_data_runs_with_cross_entropy(tmp_path, optimizer):
    record = train_in_process(
        tmp_path, "data=digits", "data.batch_size=16", "model=elman", "model.hidden_size=4", f"optimizer={optimizer}",
        "debug=fast", "trainer.limit_train_batches=2",
    )
    assert record["status"] == "completed", record["error"]
    assert record["steps"] == 2 and 0.0 <= record["metrics"]["test/acc"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("optimizer", "overrides"),
    [("hessian_free", ["data.batch_size=128"]),
     ("ekf", ["data.batch_size=16", "trainer.limit_train_batches=10", "optimizer.measurement_noise=0.1"])],
)
def test_classification_learns_above_chance(tmp_path, optimizer, overrides):
    record = train_in_process(
        tmp_path, "data=digits", "model=elman", "model.hidden_size=8", f"optimizer={optimizer}", "debug=fast",
        "trainer.limit_val_batches=4", "trainer.limit_test_batches=12", *overrides,
    )
    assert record["status"] == "completed", record["error"]
    assert record["metrics"]["test/acc"] > 0.3, record["metrics"]  # chance 0.1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("optimizer", "overrides", "threshold"),
    [
        ("hessian_free", ["data.batch_size=128", "trainer.max_epochs=2"], 0.1),  # 32 steps
        ("ekf", ["data.batch_size=16", "trainer.max_epochs=1"], 0.1),  # 128 steps
        ("dekf", ["data.batch_size=16", "trainer.max_epochs=1"], 0.1),
        # the evolutionary searches beat the baseline, but slowly: 320 and 160 generations here
        ("cmaes", ["data.batch_size=128", "trainer.max_epochs=20"], 0.8),
        ("genetic", ["data.batch_size=128", "trainer.max_epochs=10"], 0.9),
    ],
)
def test_each_optimizer_beats_the_adding_baseline(tmp_path, optimizer, overrides, threshold):
    record = train_in_process(
        tmp_path, *TINY_ADDING, "data.train_size=2048", "model.hidden_size=8", f"optimizer={optimizer}", *overrides
    )
    assert record["status"] == "completed", record["error"]
    assert record["metrics"]["test/mse"] < threshold * ADDING_BASELINE, record["metrics"]
