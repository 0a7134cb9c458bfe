"""FM's compiled training step (``training.fm_step``) against autograd's, step for step.

Whatever the one pass computes, an FM trained with it must end where autograd's step ends: the same tables,
AdaGrad accumulators and bias (to float rounding) and the same losses. Where it does not apply, autograd steps.
"""

import numpy as np
import pytest
import torch

from deepfm.config import ModelConfig, TrainingConfig
from deepfm.data.batch import Bag, EncodedData
from deepfm.models import build_model
from deepfm.training import fm_step
from deepfm.training.trainer import Trainer

FIELDS, WIDTH, ROWS = 4, 25, 600  # field f holds ids f·WIDTH … f·WIDTH + WIDTH − 1


def make_data(task: str, layout: str, weighted: bool, seed: int = 0) -> EncodedData:
    """ROWS rows whose ids recur (as FM's one-hot data); ``layout``: ``one-hot``; ``numeric`` (two fields carry real
    values); ``bags`` (one-hot plus two weighted multi-valued fields of 0-3 entries a row, ids after the fields')."""
    rng = np.random.default_rng(seed)
    ids = (rng.zipf(1.6, (ROWS, FIELDS)) % WIDTH + np.arange(FIELDS) * WIDTH).astype(np.int32)
    values = None
    if layout == "numeric":
        values = np.ones(ids.shape, np.float32)
        values[:, 2:] = rng.normal(0, 1.5, (ROWS, 2))
    labels = rng.integers(0, 2, ROWS) if task == "binary" else rng.integers(1, 6, ROWS)
    weights = rng.uniform(0.2, 2.0, ROWS).astype(np.float32) if weighted else None
    bags = []
    for first in (FIELDS * WIDTH, FIELDS * WIDTH + 10) if layout == "bags" else ():
        lengths = rng.integers(0, 4, ROWS)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        bag_ids = rng.integers(first, first + 10, offsets[-1]).astype(np.int64)
        bags.append(Bag(offsets, bag_ids, rng.uniform(0.2, 1.0, offsets[-1]).astype(np.float32)))
    return EncodedData(ids=ids, values=values, bags=bags, labels=labels.astype(np.float32), weights=weights)


def train(data: EncodedData, task: str, compiled: bool, monkeypatch, **settings) -> tuple[Trainer, list[float]]:
    """Two epochs of an FM (k 8, batch 64), with the compiled step or without; the trainer and each epoch's loss."""
    monkeypatch.setattr(fm_step, "ENABLED", compiled)
    torch.manual_seed(7)
    model = build_model(ModelConfig(name="fm", embed_dim=8), FIELDS * WIDTH + 20, FIELDS)
    config = TrainingConfig(**{"epochs": 2, "batch_size": 64, "optimizer": "adagrad", "lr": 0.1, "patience": 0,
                               "embed_reg": "occurrences", "embed_l2": 1e-2, **settings})
    trainer = Trainer(model, task, config, progress=False)
    assert (trainer.compiled_fm_step() is not None) is compiled
    result = trainer.fit(data)
    return trainer, [record["train_loss"] for record in result.history]


def optimiser_state(trainer: Trainer) -> list[torch.Tensor]:
    sparse = trainer.optimizer.optimizers["sparse"]
    dense = trainer.optimizer.optimizers["dense"]
    return ([sparse.state[p]["sum"] for p in trainer.optimizer.sparse_params]
            + [t for p in trainer.optimizer.dense_params for t in dense.state[p].values()])  # AdaGrad's or Adam's


@pytest.mark.parametrize("task", ["binary", "regression"])
@pytest.mark.parametrize("layout", ["one-hot", "numeric", "bags"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("settings", [{}, {"optimizer": "rowwise_adagrad"}, {"embed_reg": "rows", "embed_l2": 1e-3},
                                      {"linear_l2": 0.1, "adagrad_init": 1e-2}],
                         ids=["adagrad", "rowwise", "lazy L2", "linear L2, G0"])
def test_the_compiled_step_trains_an_fm_as_autograd_does(task, layout, weighted, settings, monkeypatch):
    data = make_data(task, layout, weighted)
    by_autograd, losses = train(data, task, False, monkeypatch, **settings)
    compiled, compiled_losses = train(data, task, True, monkeypatch, **settings)
    np.testing.assert_allclose(compiled_losses, losses, rtol=1e-5)
    for ours, theirs in zip(compiled.model.state_dict().values(), by_autograd.model.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    for ours, theirs in zip(optimiser_state(compiled), optimiser_state(by_autograd)):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    other = train(data, task, False, monkeypatch, **{**settings, "lr": 0.05})[0]  # (the comparison can fail)
    assert not torch.allclose(other.model.embedding.weight, by_autograd.model.embedding.weight, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("model, task, settings", [
    ("deepfm", "binary", {}),
    ("fm", "multiclass", {}),
    ("fm", "binary", {"optimizer": "adam"}),
    ("fm", "binary", {"precision": "bf16"}),
], ids=["DeepFM", "several outputs", "Adam", "bf16"])
def test_autograd_steps_where_the_compiled_step_does_not_apply(model, task, settings):
    from deepfm.tasks import MulticlassTask, as_task

    head = MulticlassTask(["a", "b", "c"]) if task == "multiclass" else as_task(task)
    built = build_model(ModelConfig(name=model, embed_dim=8), 100, FIELDS, output_dim=head.output_dim)
    trainer = Trainer(built, head, TrainingConfig(**{"optimizer": "adagrad", **settings}), progress=False)
    assert trainer.compiled_fm_step() is None


@pytest.mark.parametrize("change", [
    lambda model, trainer: model.register_forward_hook(lambda *args: None),
    lambda model, trainer: model.embedding.weight.register_hook(lambda grad: grad),
    lambda model, trainer: trainer.optimizer.optimizers["sparse"].register_step_post_hook(lambda *args: None),
    lambda model, trainer: model.linear.bias.requires_grad_(False),
], ids=["module hook", "tensor hook", "optimiser hook", "frozen bias"])
def test_what_autograd_would_run_or_leave_alone_makes_autograd_step(change):
    model = build_model(ModelConfig(name="fm", embed_dim=8), 100, FIELDS)
    trainer = Trainer(model, "binary", TrainingConfig(optimizer="adagrad"), progress=False)
    assert trainer.compiled_fm_step() is not None
    change(model, trainer)
    assert trainer.compiled_fm_step() is None


def test_an_fm_subclass_steps_through_its_own_forward():
    from deepfm.models.fm import FactorizationMachine

    class Scaled(FactorizationMachine):
        def forward(self, batch):
            return 0.5 * super().forward(batch)

    trainer = Trainer(Scaled(100, 8), "binary", TrainingConfig(optimizer="adagrad"), progress=False)
    assert trainer.compiled_fm_step() is None


def test_w0_s_adagrad_in_the_step_is_torch_s_bit_for_bit():
    """The compiled step updates the bias itself where the dense optimiser is plain AdaGrad (FM's default)."""
    from deepfm.training import eager

    model = build_model(ModelConfig(name="fm", embed_dim=8), 100, FIELDS)
    trainer = Trainer(model, "binary", TrainingConfig(optimizer="adagrad", lr=0.1, adagrad_init=0.1), progress=False)
    step = trainer.compiled_fm_step()
    theirs = torch.nn.Parameter(model.linear.bias.detach().clone())
    torch_adagrad = eager.Adagrad([theirs], lr=0.1, initial_accumulator_value=0.1)
    for grad in np.random.default_rng(0).normal(0, 20, 200).astype(np.float32):  # (rounding g² apart differs at 3)
        step._step_bias(model.linear.bias, float(grad))
        theirs.grad = torch.tensor(grad)
        torch_adagrad.step()
    assert torch.equal(model.linear.bias.detach(), theirs.detach())
    ours = trainer.optimizer.optimizers["dense"].state[model.linear.bias]
    assert torch.equal(ours["sum"], torch_adagrad.state[theirs]["sum"]) and float(ours["step"]) == 200
