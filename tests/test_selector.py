"""The selector: activations and inits of SEAL.md, top-p selection, the official file format."""

import pickle

import pytest
import torch

from seal_ray.errors import UserError
from seal_ray.selector import (
    DEFAULT_INIT, init_logits, keep_count, length_warning, load_selector, save_selector, selector_weights, top_p_ids,
)


def test_softmax_weights_are_n_times_softmax_and_average_one():
    logits = torch.tensor([0.3, -1.2, 2.0, 0.0])
    weights = selector_weights(logits, "softmax")
    assert torch.allclose(weights, 4 * torch.softmax(logits, 0))
    assert weights.mean().item() == pytest.approx(1.0)


def test_sigmoid_weights_are_twice_sigmoid_and_one_at_init():
    logits = torch.tensor([0.0, 1.0, -3.0])
    assert torch.allclose(selector_weights(logits, "sigmoid"), 2 * torch.sigmoid(logits))
    at_init = selector_weights(init_logits(5, "sigmoid"), "sigmoid")
    assert torch.allclose(at_init, torch.ones(5), atol=1e-4)


def test_relu_weights_drop_a_logit_at_zero_for_good():
    logits = torch.tensor([1.0, 0.0, -0.5], requires_grad=True)
    weights = selector_weights(logits, "relu")
    assert weights.tolist() == [1.0, 0.0, 0.0]
    weights.sum().backward()
    assert logits.grad.tolist() == [1.0, 0.0, 0.0]  # no gradient brings a dropped logit back


def test_inits_match_seal_md():
    assert DEFAULT_INIT == {"softmax": 0.1, "sigmoid": -1e-4, "relu": 1.0}
    for activation, value in DEFAULT_INIT.items():
        logits = init_logits(7, activation)
        assert logits.dtype == torch.float32 and logits.shape == (7,)
        assert torch.all(logits == torch.tensor(value, dtype=torch.float32))
    assert torch.all(init_logits(3, "relu", init=0.5) == 0.5)


def test_softmax_gradient_moves_every_logit_sigmoid_only_in_batch():
    for activation, moves_all in (("softmax", True), ("sigmoid", False)):
        logits = init_logits(6, activation).requires_grad_(True)
        batch = torch.tensor([1, 4])
        (selector_weights(logits, activation)[batch] * torch.tensor([2.0, 0.5])).sum().backward()
        nonzero = (logits.grad != 0).nonzero().flatten().tolist()
        assert nonzero == (list(range(6)) if moves_all else [1, 4])


def test_unknown_activation_suggests_the_close_name():
    with pytest.raises(UserError, match="did you mean 'sigmoid'"):
        selector_weights(torch.zeros(2), "sigmod")


def test_top_p_breaks_ties_towards_the_smaller_id():
    logits = torch.tensor([1.0, 5.0, 1.0, 1.0, 3.0])
    ids = [40, 10, 30, 20, 50]
    # k = floor(0.6 * 5) = 3: ids 10 (5.0), 50 (3.0), then the smallest id among the 1.0 ties: 20.
    assert top_p_ids(logits, ids, 0.6) == [10, 20, 50]


def test_keep_count_floors_without_rounding_error():
    assert keep_count(111_900, 0.8) == 89_520
    assert keep_count(10, 0.25) == 2
    assert keep_count(3, 1.0) == 3


def test_top_p_on_the_official_selector_matches_torch_topk(official_selector_path):
    logits = load_selector(official_selector_path)
    assert logits.shape == (111_900,) and logits.dtype == torch.float32
    kept = top_p_ids(logits, list(range(logits.numel())), 0.8)
    assert len(kept) == 89_520
    assert kept == sorted(torch.topk(logits, 89_520).indices.tolist())


def test_selector_written_and_read_back_is_bit_identical(tmp_path, official_selector_path):
    original = load_selector(official_selector_path)
    save_selector(original, tmp_path / "copy.pt")
    again = load_selector(tmp_path / "copy.pt")
    assert again.dtype == torch.float32
    assert torch.equal(original.view(torch.int32), again.view(torch.int32))


def test_a_pickle_payload_is_refused_not_run(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UserError, match="weights_only"):
        load_selector(path)


@pytest.mark.parametrize("tensor, message", [
    (torch.zeros(2, 3), "1-D"),
    (torch.arange(4), "float32"),
])
def test_wrong_shape_or_dtype_is_refused(tmp_path, tensor, message):
    path = tmp_path / "bad.pt"
    torch.save(tensor, path)
    with pytest.raises(UserError, match=message):
        load_selector(path)


def test_length_warning_names_the_index_shift():
    assert length_warning(5, 5) is None
    assert "shifted" in length_warning(111_900, 112_000)
