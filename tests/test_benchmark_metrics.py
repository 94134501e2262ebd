import pytest
import torch

from benchmarks.metrics import (
    deletion_insertion_auc,
    pointing_game,
    rank_correlation,
    relevance_mass,
    spatial,
)

BOXES = torch.tensor([[1, 2, 4, 5], [0, 0, 2, 2]])  # (x0, y0, x1, y1), exclusive ends


def box_maps() -> torch.Tensor:
    maps = torch.zeros(2, 6, 6)
    for i, (x0, y0, x1, y1) in enumerate(BOXES.tolist()):
        maps[i, y0:y1, x0:x1] = 1.0
    return maps


def test_a_map_that_is_the_box_scores_one():
    maps = box_maps()
    assert pointing_game(maps, BOXES).tolist() == [1.0, 1.0]
    assert relevance_mass(maps, BOXES).tolist() == [1.0, 1.0]


def test_localisation_by_hand():
    maps = box_maps()
    maps[0, 0, 5] = 3.0  # the peak of map 0 leaves its box; 3 of 12 positive units out
    maps[1, 5, 5] = -7.0  # negative values do not count
    assert pointing_game(maps, BOXES).tolist() == [0.0, 1.0]
    torch.testing.assert_close(relevance_mass(maps, BOXES), torch.tensor([9 / 12, 1.0]))
    assert relevance_mass(torch.zeros(2, 6, 6), BOXES).tolist() == [0.0, 0.0]


def mean_score(images: torch.Tensor) -> torch.Tensor:
    return images.mean(dim=(1, 2, 3))


@pytest.mark.parametrize("m", [1, 4, 9])
def test_deletion_and_insertion_auc_of_a_perfect_ranking(m):
    # Toy model: the score is the share of lit pixels. With the lit pixels ranked first
    # and one pixel a step, deletion falls linearly to 0 after m steps and insertion
    # rises to m/P: areas m^2/2P^2 and m^2/2P^2 + m(P-m)/P^2.
    p = 16
    image = torch.zeros(1, 1, 4, 4)
    image.view(-1)[torch.randperm(p)[:m]] = 1.0
    deletion, insertion = deletion_insertion_auc(
        mean_score, image, image[:, 0], torch.zeros_like(image), steps=p
    )
    torch.testing.assert_close(deletion, torch.tensor([m**2 / (2 * p**2)]))
    torch.testing.assert_close(
        insertion, torch.tensor([m**2 / (2 * p**2) + m * (p - m) / p**2])
    )
    worst, _ = deletion_insertion_auc(
        mean_score, image, -image[:, 0], torch.zeros_like(image), steps=p
    )
    assert worst > deletion


def test_rank_correlation_by_hand():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    b = torch.tensor(
        [[10.0, 20.0, 30.0, 40.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]]
    )
    torch.testing.assert_close(rank_correlation(a, b), torch.tensor([1.0, -1.0, 0.0]))


def test_spatial_sums_channels():
    x = torch.arange(24.0).view(1, 2, 3, 4)
    torch.testing.assert_close(spatial(x), x[:, 0] + x[:, 1])
