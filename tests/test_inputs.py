import pytest
import torch
from captum._utils.common import _select_targets

from captum_deconvnet._inputs import (
    as_tuple,
    check_submodule,
    repeat_targets,
    select_targets,
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
    copies = torch.cat([output, output * 2])  # two copies of the batch, stacked
    for repeated in (
        repeat_targets(target, 2),
        repeat_targets(torch.tensor([1, 0, 1]), 2),
    ):
        assert len(repeated) == 6
    torch.testing.assert_close(
        select_targets(copies, repeat_targets(target, 2)),
        torch.cat([torch.stack(rows), 2 * torch.stack(rows)]),
    )
    assert repeat_targets((1, 2), 5) == (1, 2) and repeat_targets(3, 5) == 3


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
