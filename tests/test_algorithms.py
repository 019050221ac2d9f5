"""SEAL's update rules (SEAL.md, Algorithms 1 and 2) and the penalty schedules."""

import pytest
import torch

from seal_ray.algorithms import seal_objectives, sft_objective
from seal_ray.errors import UserError
from seal_ray.schedules import PenaltySchedule
from seal_ray.selector import selector_weights


def test_reference_ramp_gives_the_papers_gammas():
    ramp = PenaltySchedule("ramp", decay=0.03)
    assert [round(ramp.gamma_at(e), 3) for e in range(3)] == [0.0, 0.031, 0.064]
    assert [ramp.upper_weight(e) for e in range(3)] == pytest.approx([1.0, 0.97, 0.94])


def test_fixed_gamma_is_constant_and_maps_to_the_upper_weight():
    fixed = PenaltySchedule("fixed", gamma=0.5)
    assert [fixed.gamma_at(e) for e in range(3)] == pytest.approx([0.5, 0.5, 0.5])
    assert fixed.upper_weight(0) == pytest.approx(1 / 1.5)


def test_a_faster_ramp_reaches_larger_gammas_sooner():
    assert PenaltySchedule("ramp", decay=0.1).gamma_at(2) > PenaltySchedule("ramp", decay=0.03).gamma_at(2)


def test_a_ramp_that_reaches_zero_weight_is_an_error():
    with pytest.raises(UserError, match="decay"):
        PenaltySchedule("ramp", decay=0.6).upper_weight(2)


def test_algorithm2_selector_step_equals_a_hand_computation_on_three_samples():
    # Three samples, sigmoid selector, losses fixed: the selector gradient is (1/B) * p'(omega_i) * l_i.
    omega = torch.tensor([0.0, 1.0, -1.0], requires_grad=True)
    losses = torch.tensor([0.5, 2.0, 1.0], requires_grad=True)
    weights = selector_weights(omega, "sigmoid")
    objectives = seal_objectives(
        ft_losses=losses, ft_weights=weights, safe_losses=torch.tensor([0.3]), upper_weight=0.8, ft_denom=3, safe_denom=1,
    )
    objectives.selector.backward()
    sig = torch.sigmoid(torch.tensor([0.0, 1.0, -1.0]))
    by_hand = 2 * sig * (1 - sig) * torch.tensor([0.5, 2.0, 1.0]) / 3
    assert torch.allclose(omega.grad, by_hand)
    # One Adam step of lr eta from zero moments moves each logit by -eta * sign(grad) (up to eps).
    optimizer = torch.optim.Adam([omega], lr=0.01, betas=(0.9, 0.95))
    before = omega.detach().clone()
    optimizer.step()
    assert torch.allclose(omega.detach(), before - 0.01 * torch.sign(by_hand), atol=1e-6)
    # The selector objective never sends gradient into the losses (they are detached).
    assert losses.grad is None


def test_theta_objective_is_the_weighted_penalty_form():
    losses = torch.tensor([1.0, 3.0], requires_grad=True)
    weights = torch.tensor([0.5, 1.5], requires_grad=True)
    safe = torch.tensor([2.0, 4.0], requires_grad=True)
    obj = seal_objectives(ft_losses=losses, ft_weights=weights, safe_losses=safe, upper_weight=0.9, ft_denom=2, safe_denom=2)
    # w * mean(safe) + (1 - w) * mean(p * l) = 0.9 * 3 + 0.1 * (0.5 + 4.5) / 2
    assert obj.theta.item() == pytest.approx(0.9 * 3.0 + 0.1 * 2.5)
    obj.theta.backward()
    assert weights.grad is None  # p is detached in theta's step


def test_uniform_weights_without_the_upper_term_is_plain_sft():
    torch.manual_seed(0)
    model_a, model_b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    model_b.load_state_dict(model_a.state_dict())
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))

    def per_sample(model):
        return torch.nn.functional.cross_entropy(model(x), y, reduction="none")

    omega = torch.zeros(5, requires_grad=True)
    uniform = selector_weights(omega, "softmax")  # N * softmax(0) = 1 for every sample
    seal = seal_objectives(ft_losses=per_sample(model_a), ft_weights=uniform, safe_losses=torch.zeros(0),
                           upper_weight=0.0, ft_denom=5, safe_denom=1)
    seal.theta.backward()
    sft_objective(per_sample(model_b), 5).backward()
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-7)


def test_algorithm1_differs_from_algorithm2_exactly_by_the_theta_hat_term():
    losses = torch.tensor([0.7, 1.4, 0.2, 2.2])
    aux = torch.tensor([0.5, 0.4, 0.9, 1.0], requires_grad=True)
    safe = torch.tensor([1.0])
    grads = {}
    for name, aux_losses in (("alg2", None), ("alg1", aux)):
        omega = torch.tensor([0.1, 0.2, -0.3, 0.0], requires_grad=True)
        theta_losses = losses.clone().requires_grad_(True)
        obj = seal_objectives(ft_losses=theta_losses, ft_weights=selector_weights(omega, "softmax"), safe_losses=safe,
                              upper_weight=0.95, ft_denom=4, safe_denom=1, aux_losses=aux_losses)
        (obj.theta + obj.selector).backward()
        grads[name] = (omega.grad.clone(), theta_losses.grad.clone())
    omega = torch.tensor([0.1, 0.2, -0.3, 0.0], requires_grad=True)
    (-(selector_weights(omega, "softmax") * aux.detach()).sum() / 4).backward()
    assert torch.allclose(grads["alg1"][0] - grads["alg2"][0], omega.grad, atol=1e-7)
    assert torch.equal(grads["alg1"][1], grads["alg2"][1])  # theta's step is the same


def test_algorithm1_aux_objective_trains_theta_hat_on_the_weighted_lower_level():
    aux = torch.tensor([0.5, 1.5], requires_grad=True)
    weights = torch.tensor([2.0, 0.0], requires_grad=True)
    obj = seal_objectives(ft_losses=torch.tensor([1.0, 1.0]), ft_weights=weights, safe_losses=torch.tensor([1.0]),
                          upper_weight=1.0, ft_denom=2, safe_denom=1, aux_losses=aux)
    obj.aux.backward()
    assert aux.grad.tolist() == [1.0, 0.0]
    assert weights.grad is None
