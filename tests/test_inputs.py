import pytest
import torch
from captum._utils.common import _select_targets

from captum_deconvnet._inputs import (
    as_tuple,
    check_submodule,
    select_targets,
    target_selector,
)

OUTPUT = torch.arange(24.0).reshape(4, 6)


@pytest.mark.parametrize(
    "target", [2, -1, torch.tensor(3), torch.tensor([0, 5, 1, 2]), [1, 2, 3, 4]]
)
def test_targets_select_what_captum_selects(target):
    torch.testing.assert_close(
        select_targets(OUTPUT, target), _select_targets(OUTPUT, target)
    )


def test_tuple_targets_on_3d_output():
    output = torch.arange(24.0).reshape(2, 3, 4)
    torch.testing.assert_close(select_targets(output, (1, 2)), output[:, 1, 2])
    torch.testing.assert_close(
        select_targets(output, [(0, 1), (2, 3)]),
        torch.stack([output[0, 0, 1], output[1, 2, 3]]),
    )


def test_per_example_targets_take_negative_indices_and_repeat_per_copy():
    output = torch.randn(3, 2, 5)
    target = [(1, -1), (-2, 0), (0, 4)]
    rows = [output[0, 1, -1], output[1, -2, 0], output[2, 0, 4]]
    torch.testing.assert_close(select_targets(output, target), torch.stack(rows))
    flat = output.reshape(3, 10)
    cases = [(output, target), (output, (1, 2)), (flat, torch.tensor([4, 0, 9]))]
    cases += [(flat, 7), (flat, [-1, 2, 3]), (flat[:, :1], None), (flat[:, 0], None)]
    for batch, target in cases:
        copies = torch.cat([batch, batch * 2, -batch])  # copies of the batch, stacked
        select = target_selector(batch, target)
        # the reference: select_targets on each copy of the batch alone
        expected = torch.cat([select_targets(c, target) for c in copies.split(3)])
        assert torch.equal(select(copies), expected)
        assert torch.equal(select(batch), select_targets(batch, target))
    with pytest.raises(ValueError, match=r"returned shape \(6, 2\) for copies"):
        select(torch.zeros(6, 2))


@pytest.mark.parametrize(
    "target, word",
    [
        (6, "6"),
        (None, "target=None"),
        ([1, 2], "4 entries"),
        ((1, 2), r"\(1, 2\)"),
        (torch.tensor([1, 2]), "shape"),
    ],
)
def test_bad_targets_are_named(target, word):
    with pytest.raises(ValueError, match=word):
        select_targets(OUTPUT, target)


@pytest.mark.parametrize(
    "target", [torch.tensor(2.0), torch.tensor([0.0, 1, 2, 3]), torch.tensor(True)]
)
def test_target_tensors_of_other_than_integers_are_refused(target):
    with pytest.raises(TypeError, match=str(target.dtype)):
        select_targets(OUTPUT, target)


def test_target_none_with_one_output_per_example():
    torch.testing.assert_close(select_targets(OUTPUT[:, :1], None), OUTPUT[:, 0])


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match="uint8"):
        as_tuple(torch.zeros(2, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="batch"):
        as_tuple(torch.tensor(1.0))
    with pytest.raises(ValueError, match="batch sizes"):
        as_tuple((torch.zeros(2, 3), torch.zeros(3, 3)))
    assert as_tuple(torch.zeros(2, 3))[1] is False
    assert as_tuple((torch.zeros(2, 3),))[1] is True


def test_layer_must_belong_to_the_model():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    check_submodule(model, model[0])
    with pytest.raises(ValueError, match="not a submodule"):
        check_submodule(model, torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    "target", [True, False, [True, 0, 1, 2], (1, False), [torch.tensor(1)] * 4, 2.0]
)
def test_targets_that_are_not_class_indices_are_refused_by_name(target):
    with pytest.raises(TypeError, match="target"):
        select_targets(OUTPUT, target)
