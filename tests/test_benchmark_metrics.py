import pytest
import torch

from benchmarks.metrics import (
    box_masks,
    deletion_insertion_auc,
    pointing_game,
    published_tolerance,
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


def test_box_masks_by_hand():
    masks = box_masks(BOXES, 6, 6)
    assert masks.dtype == torch.bool
    torch.testing.assert_close(masks.float(), box_maps())


def test_a_map_that_is_the_box_scores_one():
    maps, masks = box_maps(), box_masks(BOXES, 6, 6)
    maps[:, 0, 5] = 0.5  # no tie with the box
    assert pointing_game(maps, masks).tolist() == [1.0, 1.0]
    assert relevance_mass(box_maps(), masks).tolist() == [1.0, 1.0]


def test_localisation_by_hand():
    maps, masks = box_maps(), box_masks(BOXES, 6, 6)
    maps[0, 0, 5] = 3.0  # the peak of map 0 leaves its box; 3 of 12 positive units out
    maps[1, 5, 5] = -7.0  # negative values do not count
    assert pointing_game(maps, masks).tolist() == [0.0, 1.0]
    torch.testing.assert_close(relevance_mass(maps, masks), torch.tensor([9 / 12, 1.0]))
    assert relevance_mass(torch.zeros(2, 6, 6), masks).tolist() == [0.0, 0.0]


def torchray_hit(mask: list[list[bool]], point: tuple[int, int], tolerance: float):
    """TorchRay's PointingGame.evaluate, pixel by pixel: a hit when some object pixel
    lies closer than the tolerance to the point (or the point is on the object)."""
    y, x = point
    return any(
        mask[v][u] and ((v - y) ** 2 + (u - x) ** 2 < tolerance**2 or (v, u) == point)
        for v in range(len(mask))
        for u in range(len(mask[0]))
    )


@pytest.mark.parametrize("tolerance", [0.0, 1.0, 2.0, 2.5, 3.0, 3.01, 4.29, 5.0])
def test_the_tolerance_equals_torchray_s_rule(tolerance):
    mask = torch.zeros(12, 12, dtype=torch.bool)
    mask[4:7, 5:8] = True  # rows 4-6, columns 5-7
    points = [(y, x) for y in range(12) for x in range(12)]
    maps = torch.eye(144).view(144, 12, 12)  # one map per point, its only maximum
    hits = pointing_game(maps, mask.expand(144, 12, 12), tolerance)
    expected = [float(torchray_hit(mask.tolist(), p, tolerance)) for p in points]
    assert hits.tolist() == expected


def test_the_tolerance_is_strict_and_scales_with_the_image():
    mask = torch.zeros(1, 9, 9, dtype=torch.bool)
    mask[0, 4, 0] = True
    maps = torch.zeros(1, 9, 9)
    maps[0, 4, 3] = 1.0  # three pixels right of the object
    assert pointing_game(maps, mask, 3.0).item() == 0.0  # not closer than 3
    assert pointing_game(maps, mask, 3.5).item() == 1.0
    assert published_tolerance(224) == 15.0
    assert published_tolerance(64) == pytest.approx(15 * 64 / 224)


def test_ties_first_in_raster_order_or_any():
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[0, 4:, 4:] = True
    maps = torch.zeros(1, 6, 6)
    maps[0, 0, 0] = maps[0, 5, 5] = 2.0  # two maxima, the first one off the object
    assert pointing_game(maps, mask, ties="first").item() == 0.0
    assert pointing_game(maps, mask, ties="any").item() == 1.0
    maps[0, 5, 5] = 1.0  # no tie any more
    assert pointing_game(maps, mask, ties="any").item() == 0.0


def test_bad_pointing_game_arguments_are_named():
    maps, masks = box_maps(), box_masks(BOXES, 6, 6)
    with pytest.raises(ValueError, match="ties"):
        pointing_game(maps, masks, ties="last")
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(maps, masks, -1.0)
    with pytest.raises(ValueError, match="masks"):
        pointing_game(maps, masks[:, :5])


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
    black = torch.zeros_like(image)
    deletion, insertion = deletion_insertion_auc(
        mean_score, image, image[:, 0], black, black, steps=p
    )
    torch.testing.assert_close(deletion, torch.tensor([m**2 / (2 * p**2)]))
    torch.testing.assert_close(
        insertion, torch.tensor([m**2 / (2 * p**2) + m * (p - m) / p**2])
    )
    worst, _ = deletion_insertion_auc(
        mean_score, image, -image[:, 0], black, black, steps=p
    )
    assert worst > deletion


def test_each_curve_is_scored_once_from_its_own_substrate():
    calls = []

    def score(images):
        calls.append(images.clone())
        return images.mean(dim=(1, 2, 3))

    image = torch.ones(1, 1, 2, 2)
    deletion, insertion = deletion_insertion_auc(
        score,
        image,
        torch.rand(1, 2, 2),
        torch.zeros_like(image),
        torch.full_like(image, 0.5),
        steps=4,
    )
    assert len(calls) == 2 * 5  # one score per step and curve
    # Deletion from 1 to 0 in four equal steps; insertion from 0.5 to 1.
    torch.testing.assert_close(deletion, torch.tensor([0.5]))
    torch.testing.assert_close(insertion, torch.tensor([0.75]))


def test_rank_correlation_by_hand():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    b = torch.tensor(
        [[10.0, 20.0, 30.0, 40.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]]
    )
    torch.testing.assert_close(rank_correlation(a, b), torch.tensor([1.0, -1.0, 0.0]))


def test_spatial_sums_channels():
    x = torch.arange(24.0).view(1, 2, 3, 4)
    torch.testing.assert_close(spatial(x), x[:, 0] + x[:, 1])
