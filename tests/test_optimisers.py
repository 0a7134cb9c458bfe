"""Row-wise AdaGrad, per-occurrence L2 and the plateau schedule, each against a reference on a tiny problem."""

import pytest
import torch
import torch.nn.functional as F

from deepfm import Estimator
from deepfm.config import TrainingConfig
from deepfm.data.design import DistinctIds, distinct_ids
from deepfm.data.synthetic import SyntheticSpec, make_ctr_table
from deepfm.data.tensors import Batch
from deepfm.models.layers import FeaturesEmbedding
from deepfm.training.optim import ModelOptimizer, batch_occurrences
from deepfm.training.rowwise import LazyAdagrad, add_occurrence_l2
from deepfm.training.trainer import Trainer

IDS = torch.tensor([[0, 3], [3, 5], [0, 3], [7, 5]])  # row 3 occurs 3 times, rows 0 and 5 twice, row 7 once


def sparse_gradient(table: torch.Tensor, ids: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
    """The sparse gradient of Σ upstream · table[ids], coalesced as ``FeaturesEmbedding`` produces it."""
    weight = table.detach().clone().requires_grad_(True)
    (F.embedding(ids, weight, sparse=True) * upstream).sum().backward()
    return weight.grad.coalesce()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # the compiled pass, and the tensor ops
def test_rowwise_adagrad_keeps_one_accumulator_per_row_and_matches_its_equations(dtype):
    torch.manual_seed(0)
    start = torch.randn(8, 3, dtype=dtype)
    ours = torch.nn.Parameter(start.clone())
    optimizer = LazyAdagrad([ours], lr=0.1, eps=1e-8, row_l2=0.01, per_row=True)
    reference, accumulator = start.clone(), torch.zeros(8, dtype=dtype)
    for step in range(3):
        upstream = torch.randn(*IDS.shape, 3, dtype=dtype)
        ours.grad = sparse_gradient(ours, IDS, upstream)
        optimizer.step()
        grad = sparse_gradient(reference, IDS, upstream).to_dense()
        touched = grad.abs().sum(1) > 0
        grad[touched] += 0.01 * reference[touched]  # lazy L2: only the rows of the batch
        accumulator[touched] += grad[touched].square().mean(1)
        reference[touched] -= 0.1 * grad[touched] / (accumulator[touched].sqrt() + 1e-8).unsqueeze(1)
        torch.testing.assert_close(ours.detach(), reference)
    assert optimizer.state[ours]["sum"].shape == (8,)
    assert float(optimizer.state[ours]["sum"][1]) == 0.0, "a row no batch touched keeps an empty accumulator"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # the compiled pass, and the tensor ops
def test_lazy_adagrad_per_coordinate_matches_torch_adagrad_on_sparse_gradients(dtype):
    torch.manual_seed(2)
    start = torch.randn(8, 3, dtype=dtype)
    ours, reference = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    fast, slow = LazyAdagrad([ours], lr=0.1), torch.optim.Adagrad([reference], lr=0.1)
    for step in range(3):
        upstream = torch.randn(*IDS.shape, 3, dtype=dtype)
        ours.grad = sparse_gradient(ours, IDS, upstream)
        reference.grad = sparse_gradient(reference, IDS, upstream)
        fast.step()
        slow.step()
        torch.testing.assert_close(ours.detach(), reference.detach())


@pytest.mark.parametrize("per_row", [False, True])
def test_lazy_adagrad_steps_fp32_tables_in_one_compiled_pass_a_block_of_rows_per_thread(per_row, monkeypatch):
    """fp32 CPU tables: one compiled pass over the touched rows (two blocks on two threads), the same update as the
    tensor ops make on a float64 copy, to fp32 rounding; untouched rows and their accumulators stay as they were."""
    from deepfm.compiled import in_row_blocks
    from deepfm.training import rowwise

    blocks = []
    monkeypatch.setattr(rowwise, "in_row_blocks", lambda p, arrays, *a: blocks.append(len(
        results := in_row_blocks(p, arrays, *a))) or results)
    torch.manual_seed(3)
    start = torch.randn(5000, 4)
    ours, reference = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.double())
    fast = LazyAdagrad([ours], lr=0.1, row_l2=0.05, per_row=per_row, initial_accumulator=0.01)
    slow = LazyAdagrad([reference], lr=0.1, row_l2=0.05, per_row=per_row, initial_accumulator=0.01)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for _ in range(3):
            rows = torch.randperm(4000)[:2000].sort().values.unsqueeze(0)  # distinct and sorted, as a lookup's
            grad_values = torch.randn(2000, 4)
            ours.grad = torch.sparse_coo_tensor(rows, grad_values, (5000, 4), is_coalesced=True)
            reference.grad = torch.sparse_coo_tensor(rows, grad_values.double(), (5000, 4), is_coalesced=True)
            fast.step()
            slow.step()
    finally:
        torch.set_num_threads(previous)
    assert blocks == [2, 2, 2]
    torch.testing.assert_close(ours.detach(), reference.detach().float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.state[ours]["sum"], slow.state[reference]["sum"].float(), rtol=1e-5, atol=1e-6)
    assert torch.equal(ours.detach()[4000:], start[4000:]), "rows no batch touched"
    assert bool((fast.state[ours]["sum"][4000:] == 0.01).all()), "their accumulators too"


def test_per_occurrence_l2_is_the_gradient_of_the_mean_squared_norm_of_the_batch_slots():
    torch.manual_seed(1)
    table = FeaturesEmbedding(8, 3)
    upstream = torch.randn(*IDS.shape, 3)
    strength = 0.05
    reference = table.weight.detach().clone().requires_grad_(True)
    slots = F.embedding(IDS, reference)
    loss = (slots * upstream).sum() + strength * slots.square().sum(dim=(1, 2)).mean()  # λ · mean_b Σ_f ‖v_f‖²
    loss.backward()

    config = TrainingConfig(optimizer="sgd", lr=1.0, embed_l2=strength, embed_reg="occurrences")
    optimizer = ModelOptimizer(torch.nn.Sequential(table), config)
    table.weight.grad = sparse_gradient(table.weight, IDS, upstream)
    before = table.weight.detach().clone()
    optimizer.add_occurrence_penalty(batch_occurrences(Batch(ids=IDS, values=None, bags=[], labels=torch.zeros(4))))
    optimizer.step()
    torch.testing.assert_close(before - table.weight.detach(), reference.grad)


@pytest.mark.parametrize("grouping", ["sorted", "counted", "none"])  # slot runs by sorting, by counting; none (as on GPU)
def test_per_occurrence_counts_come_from_every_slot_of_the_batch(grouping):
    batch = Batch(ids=IDS, values=None, bags=[], labels=torch.zeros(4))
    if grouping == "counted":
        batch.prepare()
    elif grouping == "none":
        batch._distinct = DistinctIds(*distinct_ids(IDS))
    rows, counts, size = batch_occurrences(batch)
    assert rows.tolist() == [0, 3, 5, 7] and counts.tolist() == [2, 3, 2, 1] and size == 4
    assert counts.dtype == torch.int64


@pytest.mark.parametrize("optimizer", ["adam", "rowwise_adagrad"])
def test_per_occurrence_l2_turns_the_row_wise_optimisers_lazy_l2_off(optimizer):
    model = torch.nn.Sequential(FeaturesEmbedding(8, 3))
    config = TrainingConfig(optimizer=optimizer, embed_l2=0.3, embed_reg="occurrences")
    assert ModelOptimizer(model, config).optimizers["sparse"].param_groups[0]["row_l2"] == 0.0
    lazy = TrainingConfig(optimizer=optimizer, embed_l2=0.3, embed_reg="rows")
    assert ModelOptimizer(model, lazy).optimizers["sparse"].param_groups[0]["row_l2"] == 0.3


SPEC = SyntheticSpec(rows=2000, categorical=4, numeric=1, vocabulary=100, seed=3)


def test_plateau_schedule_reloads_the_best_weights_and_divides_the_learning_rate(monkeypatch):
    train, _ = make_ctr_table(SPEC, part=0)
    valid, _ = make_ctr_table(SPEC, rows=500, part=1)
    verdicts = iter([True, False, False, False])  # epoch 1 is the best; every later epoch is worse
    seen: list[tuple[float, torch.Tensor]] = []
    original_step = Trainer._step

    def scripted(self, candidate, best, by=0.0):
        return next(verdicts)

    def spy(self, batch):
        seen.append((self.optimizer.optimizers["sparse"].param_groups[0]["lr"],
                     self.model.linear.weights.weight.detach().clone()))
        return original_step(self, batch)

    from deepfm.tasks import BinaryTask
    monkeypatch.setattr(BinaryTask, "is_better", scripted)
    monkeypatch.setattr(Trainer, "_step", spy)
    logs: list[str] = []
    Estimator(model={"name": "fm"}, training={"epochs": 3, "patience": 3, "lr": 0.05, "batch_size": 2000,
                                              "lr_schedule": "plateau"}).fit(train, valid=valid, progress=False,
                                                                             log=logs.append)
    assert [lr for lr, _ in seen] == pytest.approx([0.05, 0.05, 0.005])
    torch.testing.assert_close(seen[2][1], seen[1][1], msg="epoch 3 starts from epoch 1's weights")
    epoch_lines = [i for i, line in enumerate(logs) if line.startswith("epoch ")]
    reloads = [i for i, line in enumerate(logs) if "reloaded the best epoch" in line]
    assert len(epoch_lines) == 3 and len(reloads) == 2
    assert epoch_lines[1] < reloads[0] < epoch_lines[2] < reloads[1]  # each after the epoch that did not improve


@pytest.mark.parametrize("optimizer", ["adam", "adagrad", "sgd"])
def test_first_order_weights_take_linear_l2_and_latent_factors_embed_l2(optimizer):
    from deepfm.models.fm import FactorizationMachine

    torch.manual_seed(4)
    model = FactorizationMachine(8, 3)
    config = TrainingConfig(optimizer=optimizer, lr=1.0, embed_l2=0.2, linear_l2=0.0, embed_reg="occurrences")
    optimizer_ = ModelOptimizer(model, config)
    with torch.no_grad():
        model.linear.weights.weight.normal_()
    linear_before = model.linear.weights.weight.detach().clone()
    factors_before = model.embedding.weight.detach().clone()
    for table in (model.linear.weights.weight, model.embedding.weight):
        table.grad = sparse_gradient(table, IDS, torch.zeros(*IDS.shape, table.shape[1]))  # no data gradient
    optimizer_.add_occurrence_penalty(batch_occurrences(Batch(ids=IDS, values=None, bags=[], labels=torch.zeros(4))))
    optimizer_.step()
    torch.testing.assert_close(model.linear.weights.weight.detach(), linear_before, msg="linear_l2 0: w untouched")
    assert not torch.equal(model.embedding.weight.detach()[IDS.unique()], factors_before[IDS.unique()])


def test_adagrad_with_an_initial_accumulator_matches_torch_and_steps_rare_rows_in_proportion_to_their_gradient():
    torch.manual_seed(3)
    start = torch.randn(8, 3)
    ours, reference = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    fast = LazyAdagrad([ours], lr=0.1, initial_accumulator=0.01)
    slow = torch.optim.Adagrad([reference], lr=0.1, initial_accumulator_value=0.01)
    upstream = torch.randn(*IDS.shape, 3) * 1e-3  # small gradients, as a rare id's share of a batch mean
    ours.grad = sparse_gradient(ours, IDS, upstream)
    reference.grad = sparse_gradient(reference, IDS, upstream)
    fast.step()
    slow.step()
    torch.testing.assert_close(ours.detach(), reference.detach())
    step = (ours.detach() - start).abs().max()
    assert step < 0.1 * 0.05, "a small gradient takes a small step, not ±lr"

    sign_steps = torch.nn.Parameter(start.clone())  # G0 = 0: the first step is lr · g/|g| = ±lr, whatever g's size
    sign_steps.grad = sparse_gradient(sign_steps, IDS, upstream)
    LazyAdagrad([sign_steps], lr=0.1).step()
    touched = (sign_steps.detach() - start).abs()[[0, 3, 5, 7]]
    torch.testing.assert_close(touched, torch.full_like(touched, 0.1))


def test_the_dense_adam_runs_fused_on_cpu_and_makes_the_for_loop_adams_update():
    torch.manual_seed(4)
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 1))
    reference = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 1))
    reference.load_state_dict(mlp.state_dict())
    ours = ModelOptimizer(mlp, TrainingConfig(optimizer="adam", lr=0.01, weight_decay=1e-3))
    plain = torch.optim.Adam(reference.parameters(), lr=0.01, weight_decay=1e-3, foreach=False)
    assert ours.optimizers["dense"].param_groups[0]["fused"] is True
    for _ in range(3):
        x = torch.randn(8, 6)
        for model in (mlp, reference):
            model.zero_grad()
            model(x).square().mean().backward()
        ours.step()
        plain.step()
    for got, expected in zip(mlp.parameters(), reference.parameters()):
        torch.testing.assert_close(got, expected)


def test_training_saving_and_resuming_never_import_torch_dynamo(tmp_path):
    """torch.optim's wrappers import torch._dynamo (over a second) on their first call; training calls what they wrap."""
    import subprocess
    import sys

    code = """
import sys
from deepfm import Estimator
from deepfm.data.synthetic import SyntheticSpec, make_ctr_table
train, _ = make_ctr_table(SyntheticSpec(categorical=3, numeric=1, vocabulary=40, seed=0), rows=600)
for optimizer in ("adam", "adagrad", "rowwise_adagrad", "sgd"):
    settings = dict(model={"name": "deepfm", "embed_dim": 4, "mlp": [8]},
                    training={"optimizer": optimizer, "epochs": 1, "batch_size": 200})
    Estimator(**settings).fit(train, out=f"{sys.argv[1]}/{optimizer}", progress=False)
    settings["training"]["epochs"] = 2
    Estimator(**settings).fit(train, out=f"{sys.argv[1]}/{optimizer}", resume=True, progress=False)
    print(optimizer, "torch._dynamo" in sys.modules)
"""
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["adam", "False", "adagrad", "False", "rowwise_adagrad", "False", "sgd", "False"], run.stdout


@pytest.mark.parametrize("kind", ["Adam", "Adagrad", "SGD"])
def test_the_eager_optimisers_are_torchs_update_state_and_hooks(kind):
    from deepfm.training import eager

    torch.manual_seed(5)
    ours_model, torch_model = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    torch_model.load_state_dict(ours_model.state_dict())
    ours = getattr(eager, kind)(ours_model.parameters(), lr=0.1, weight_decay=1e-2)
    theirs = getattr(torch.optim, kind)(torch_model.parameters(), lr=0.1, weight_decay=1e-2)
    called = []
    ours.register_step_post_hook(lambda optimizer, args, kwargs: called.append("step"))
    ours.register_state_dict_post_hook(lambda optimizer, state: called.append("state_dict"))
    x = torch.randn(8, 4)
    for _ in range(3):
        losses = []
        for model, optimizer in ((ours_model, ours), (torch_model, theirs)):
            optimizer.zero_grad()
            losses.append(optimizer.step(lambda model=model: model(x).square().mean().backward() or torch.tensor(2.0)))
        assert losses[0] == losses[1] == 2.0, "step(closure) returns the closure's loss"
    for got, expected in zip(ours_model.parameters(), torch_model.parameters()):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        assert not got.grad.requires_grad, "the update ran without a graph"
    ours.zero_grad()
    assert all(p.grad is None for p in ours_model.parameters()), "set_to_none by default"
    state = ours.state_dict()
    assert called == ["step"] * 3 + ["state_dict"]
    expected_state = theirs.state_dict()
    assert state["param_groups"] == expected_state["param_groups"]
    assert state["state"].keys() == expected_state["state"].keys()
    for index, entries in expected_state["state"].items():
        for key, values in entries.items():
            torch.testing.assert_close(state["state"][index][key], values, rtol=0, atol=0)
    restored = getattr(eager, kind)(torch.nn.Linear(4, 3).parameters(), lr=0.1, weight_decay=1e-2)
    restored.load_state_dict(state)
    assert restored.state_dict()["param_groups"] == state["param_groups"]


def test_dense_optimizer_and_dense_lr_set_the_mlps_update_apart_from_the_tables():
    model = torch.nn.ModuleDict({"table": FeaturesEmbedding(8, 4), "mlp": torch.nn.Linear(4, 1)})
    hybrid = ModelOptimizer(model, TrainingConfig(optimizer="adagrad", lr=0.1, dense_optimizer="adam", dense_lr=1e-3))
    assert isinstance(hybrid.optimizers["sparse"], LazyAdagrad)
    assert isinstance(hybrid.optimizers["dense"], torch.optim.Adam)
    assert hybrid.optimizers["sparse"].param_groups[0]["lr"] == 0.1
    assert hybrid.optimizers["dense"].param_groups[0]["lr"] == 1e-3
    hybrid.scale_lr(0.1)  # the plateau schedule scales both
    assert hybrid.optimizers["dense"].param_groups[0]["lr"] == pytest.approx(1e-4)
    assert hybrid.optimizers["sparse"].param_groups[0]["lr"] == pytest.approx(1e-2)
    paired = ModelOptimizer(model, TrainingConfig(optimizer="adagrad", lr=0.1))
    assert isinstance(paired.optimizers["dense"], torch.optim.Adagrad), "unset: the optimiser paired with optimizer"
    assert paired.optimizers["dense"].param_groups[0]["lr"] == 0.1, "unset: lr"


@pytest.mark.parametrize("optimizer", ["adam", "adagrad", "rowwise_adagrad"])
def test_row_wise_optimisers_add_the_per_occurrence_l2_in_their_step_from_the_rows_they_gather(optimizer, monkeypatch):
    """One process: the penalty 2λ·c_i/B·v_i joins the gradient inside the row-wise step, from the table rows
    the step holds anyway (one gather of each table's rows a step fewer); the update is the same, to rounding,
    as adding it to the gradient first (``add_occurrence_l2``, which several processes need): the two add the
    penalty in another order, bit for bit equal for some seeds only."""
    from deepfm.models.fm import FactorizationMachine
    from deepfm.training import rowwise

    batch = Batch(ids=IDS, values=None, bags=[], labels=torch.zeros(4))
    config = TrainingConfig(optimizer=optimizer, lr=0.1, embed_l2=0.2, linear_l2=0.05, embed_reg="occurrences")
    results, gathered = [], []
    for deferred in (True, False):
        torch.manual_seed(4)
        model = FactorizationMachine(8, 3)
        optimizer_ = ModelOptimizer(model, config)
        gathers = []
        monkeypatch.setattr(rowwise, "take_rows", lambda table, index: gathers.append(table) or table.index_select(0, index))
        for step in range(3):
            optimizer_.zero_grad()
            model(batch).square().sum().backward()
            if deferred:
                optimizer_.add_occurrence_penalty(batch_occurrences(batch))
            else:  # the penalty added to the gradients first, as with several processes
                for group in optimizer_.optimizers["sparse"].param_groups:
                    for param in group["params"]:
                        add_occurrence_l2(param, *batch_occurrences(batch), optimizer_.l2_of(group["table"]))
            optimizer_.step()
        tables = [p for group in optimizer_.optimizers["sparse"].param_groups for p in group["params"]]
        results.append([p.detach().clone() for p in tables])
        gathered.append(sum(any(table is p for p in tables) for table in gathers))
    assert gathered[0] == gathered[1] - 3 * len(results[0]), "one gather of each table a step fewer"
    for deferred, eager in zip(*results):
        torch.testing.assert_close(deferred, eager, rtol=1e-6, atol=1e-7)
