"""FNN (Zhang, Du & Wang 2016): an MLP over field vectors that an FM learned first.

Stage 1 trains an FM on the same data. Stage 2 initialises FNN's field vectors from it,
z_i = (w_i, v_i) = the FM's first-order weight and latent vector of feature i, and trains

    ŷ = MLP([w_0, z_1, …, z_m]),    z_f = Σ_{i∈f} (w_i, v_i) x_i,

end to end (the FM only initialises; nothing is frozen). Stage 1 uses the run's own training
settings: on Frappe that beat an FM trained with the FM's tuned lr and L2 (test AUC 0.9466 vs
0.9398; docs/results/frappe-fnn), whose weakly regularised vectors stage 2's L2 then unravels. ``pretrain_with_fm`` is stage 1;
``FNN`` is the stage-2 network, which also trains from a random start when stage 1 is skipped.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from deepfm import randomness
from deepfm.data.batch import Batch
from deepfm.models.fm import FactorizationMachine
from deepfm.models.layers import FeaturesEmbedding, MultiLayerPerceptron, squeeze_output


STAGE_1 = ("FNN stage 1: pre-training an FM for the embeddings, at FNN's own training settings (not the FM's: their "
           "weakly regularised vectors scored lower after stage 2 on Frappe, 0.9398 against 0.9466; "
           "docs/results/frappe-fnn)")


class FNN(nn.Module):
    def __init__(
        self,
        num_features: int,
        num_fields: int,
        embed_dim: int = 10,
        mlp: Sequence[int] = (400, 400, 400),
        dropout: float = 0.5,
        activation: str = "relu",
        batch_norm: bool = False,
        output_dim: int = 1,
    ):
        super().__init__()
        self.output_dim = output_dim  # C: the FM of stage 1 has C outputs too (C weights, C·k latent values per feature)
        self.bias = nn.Parameter(torch.zeros(() if output_dim == 1 else (output_dim,)))  # w_0
        self.first_order = FeaturesEmbedding(num_features, output_dim)  # w_i
        self.embedding = FeaturesEmbedding(num_features, embed_dim * output_dim)  # v_i
        width = output_dim + num_fields * output_dim * (1 + embed_dim)
        self.dnn = MultiLayerPerceptron(width, mlp, dropout, activation, batch_norm, output_dim)

    def forward(self, batch: Batch) -> torch.Tensor:  # logits (B,), or (B, C) for C outputs
        w = self.first_order(batch).fields  # (B, F, 1)
        v = self.embedding(batch).fields  # (B, F, k)
        z = torch.cat([w, v], dim=2).flatten(1)  # (B, F·(1+k)): z_f = (w_f, v_f)
        w0 = self.bias.expand(z.shape[0], self.output_dim)  # (B, C)
        return squeeze_output(self.dnn(torch.cat([w0, z], dim=1)), self.output_dim)

    @torch.no_grad()
    def load_fm(self, fm: FactorizationMachine) -> None:
        """Copy an FM's w_0, w_i and v_i into this network's input layer (FNN's initialisation)."""
        self.bias.copy_(fm.linear.bias)
        self.first_order.weight.copy_(fm.linear.weights.weight)
        self.embedding.weight.copy_(fm.embedding.weight)


def pretrain_with_fm(model: FNN, task, training, train, valid=None, log: Callable[[str], None] | None = None,
                     checkpoint_dir=None, resume: bool = False) -> FactorizationMachine:
    """Stage 1: train an FM of the same size with the same training settings, starting from ``model``'s output prior
    (its own early stopping on ``valid``; its own checkpoints in ``checkpoint_dir``, resumed with ``resume``),
    then copy its parameters into ``model``. Returns the FM. Its starting weights are drawn after the FNN's, as the
    fit's (``deepfm.randomness.initialised``): ``deepfm train`` and ``deepfm compare`` train one FNN from one seed."""
    from deepfm.training.trainer import Trainer  # training depends on models, not the reverse

    from deepfm.models.registry import output_bias  # (the registry builds FNNs)

    num_features, width = model.embedding.weight.shape
    fm = randomness.initialised(lambda: FactorizationMachine(num_features, width // model.output_dim, model.output_dim))
    with torch.no_grad():  # the FM starts from the output prior the FNN was built with (the click rate's log-odds, the
        fm.linear.bias.copy_(output_bias(model).view_as(fm.linear.bias))  # mean rating), as ``build_model``'s do
    say = log or (lambda message: None)
    say(STAGE_1)
    trained = fm
    if getattr(task, "name", task) == "ordinal":  # the FM's score under its own cumulative link
        from deepfm.models.heads import CumulativeLink

        trained = CumulativeLink(fm, task.initial_cutpoints())
    Trainer(trained, task, training, checkpoint_dir=checkpoint_dir, progress=False,
            log=lambda m: say("  fm " + m)).fit(train, valid, resume=resume)
    model.load_fm(fm)
    say("FNN stage 2: training the MLP on the FM-initialised embeddings")
    return fm
