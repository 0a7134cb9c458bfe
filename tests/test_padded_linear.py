"""The first Linear's input gradient over a padded width: the same values as torch's Linear, where it applies."""

from __future__ import annotations

import pytest
import torch

from deepfm.models.padded_linear import MIN_WIDTH, PAD_TO, linear_without_bias, pads


def gradients(linear, x, weight, grad):
    x, weight = x.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    out = linear(x, weight)
    out.backward(grad)
    return out.detach(), x.grad, weight.grad


@pytest.mark.parametrize("width", [39 * 10, MIN_WIDTH + 1, 16 * 40 + 9])
def test_the_output_and_both_gradients_are_torchs_linears(width):
    torch.manual_seed(width)
    x, weight, grad = torch.randn(300, width), torch.randn(40, width), torch.randn(300, 40)
    assert pads(x.requires_grad_(), weight)
    ours = gradients(linear_without_bias, x, weight, grad)
    reference = gradients(torch.nn.functional.linear, x, weight, grad)
    for mine, theirs in zip(ours, reference):
        assert mine.shape == theirs.shape and mine.is_contiguous()
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_it_pads_only_a_wide_fp32_cpu_product_that_needs_an_input_gradient_and_whose_width_is_not_a_multiple():
    weight = torch.randn(8, 390)
    assert pads(torch.randn(4, 390, requires_grad=True), weight)
    assert not pads(torch.randn(4, 390), weight)  # no input gradient to compute
    assert not pads(torch.randn(4, 20 * PAD_TO, requires_grad=True), torch.randn(8, 20 * PAD_TO))
    assert not pads(torch.randn(4, 7, requires_grad=True), torch.randn(8, 7))  # narrow: padding would double it
    assert not pads(torch.randn(4, 390, dtype=torch.float64, requires_grad=True), weight.double())
    with torch.no_grad():
        assert not pads(torch.randn(4, 390, requires_grad=True), weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not pads(torch.randn(4, 390, requires_grad=True), weight)


def test_deepfms_first_linear_takes_it_in_training_on_cpu():
    from deepfm.models.layers import MultiLayerPerceptron

    mlp = MultiLayerPerceptron(390, (32, 32), dropout=0.2, batch_norm=True).train()
    x = torch.randn(64, 390, requires_grad=True)
    out = mlp(x)
    seen, stack = set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack.extend(next_node for next_node, _ in node.next_functions)
    names = {type(node).__name__ for node in seen}
    assert "_PaddedInputGradientBackward" in names
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_a_frozen_weight_gets_no_gradient_and_the_input_still_does():
    x, weight = torch.randn(8, 390, requires_grad=True), torch.randn(16, 390)
    linear_without_bias(x, weight).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(8, 16) @ weight)
