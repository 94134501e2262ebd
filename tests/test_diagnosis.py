import math

import numpy as np
import pytest
import torch
from torch import nn

from captum_deconvnet import (
    filter_spectrum,
    firing_rates,
    high_frequency_fraction,
    radial_spectrum,
    shift_variation,
    shifted_activity,
)


def _box_fraction_above(side: int, cutoff: float, grid: int = 2001) -> float:
    """The continuous answer for a side x side box filter, by the midpoint rule on
    its closed-form response |sin(pi side f) / sin(pi f)|^2 per axis."""
    f = (np.arange(grid) + 0.5) / grid - 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        axis = np.where(
            f == 0, side**2, (np.sin(np.pi * side * f) / np.sin(np.pi * f)) ** 2
        )
    energy = axis[:, None] * axis[None, :]
    high = np.hypot(f[:, None], f[None, :]) >= cutoff
    return float(energy[high].sum() / energy.sum())


def test_an_impulse_spreads_its_energy_evenly_over_the_frequencies():
    impulse = torch.zeros(1, 1, 7, 7)
    impulse[0, 0, 3, 3] = 1.0
    # flat spectrum: the share outside the disc of radius 1/4 in the unit square
    expected = 1 - math.pi * 0.25**2
    assert high_frequency_fraction(impulse, 0.25, size=256).item() == pytest.approx(
        expected, abs=2e-3
    )


@pytest.mark.parametrize("side", [7, 11])
def test_box_filters_match_their_closed_form_response(side):
    box = torch.ones(1, 1, side, side)
    expected = _box_fraction_above(side, 0.25)
    assert high_frequency_fraction(box, 0.25, size=256).item() == pytest.approx(
        expected, abs=2e-3
    )
    assert expected < 0.1  # a low-pass filter


def test_a_checkerboard_is_all_high_frequency_and_scale_and_place_do_not_matter():
    rows, cols = torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij")
    checker = ((-1.0) ** (rows + cols))[None, None]
    box = torch.ones(1, 1, 7, 7)
    # modulating by (-1)^(i+j) moves the spectrum by (1/2, 1/2): the box's share
    # within 1/4 of the corner equals the checkerboard's below 1/4 of the centre
    fractions = high_frequency_fraction(torch.cat([checker, box]), 0.25, size=64)
    assert fractions[0] > 0.99 and fractions[1] < 0.1
    moved = torch.zeros(1, 1, 11, 11)
    moved[..., 2:9, 1:8] = -3 * checker
    torch.testing.assert_close(
        high_frequency_fraction(moved, 0.25), high_frequency_fraction(checker, 0.25)
    )


def test_input_channels_add_their_energies():
    rows, cols = torch.meshgrid(torch.arange(5), torch.arange(5), indexing="ij")
    checker = (-1.0) ** (rows + cols)
    both = torch.stack([checker, torch.ones(5, 5)])[None]  # equal energies
    each = high_frequency_fraction(torch.stack([checker, torch.ones(5, 5)])[:, None])
    assert high_frequency_fraction(both).item() == pytest.approx(each.mean().item())


def test_radial_rings_hold_all_the_energy_and_agree_with_the_cutoff():
    weight = torch.randn(4, 3, 7, 7)
    edges, shares = radial_spectrum(weight, bins=8)
    torch.testing.assert_close(shares.sum(dim=1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(
        shares[:, 4:].sum(dim=1), high_frequency_fraction(weight, float(edges[4]))
    )
    radius, energy = filter_spectrum(weight)
    assert radius.max() == pytest.approx(math.sqrt(0.5))
    impulse = torch.zeros(1, 1, 5, 5)
    impulse[..., 2, 2] = 1.0
    relative = radial_spectrum(impulse, bins=8, relative=True)[1]
    torch.testing.assert_close(relative, torch.ones(1, 8, dtype=torch.float64))


def test_spectrum_rejects_bad_arguments():
    with pytest.raises(ValueError, match="smaller than the kernel"):
        filter_spectrum(torch.ones(1, 1, 9, 9), size=8)
    with pytest.raises(ValueError, match="cutoff"):
        high_frequency_fraction(torch.ones(1, 1, 3, 3), cutoff=0.7)
    for bins in (0, 2.5):  # 2.5 gave a TypeError from inside torch.linspace
        with pytest.raises(
            ValueError, match=rf"bins must be a positive int, got {bins}"
        ):
            radial_spectrum(torch.ones(1, 1, 3, 3), bins=bins)


def test_firing_rates_count_positive_positions_and_find_dead_maps():
    conv = nn.Conv2d(1, 3, 1)
    with torch.no_grad():
        conv.weight[:] = torch.tensor([1.0, -1.0, 0.0]).view(3, 1, 1, 1)
        conv.bias[:] = torch.tensor([0.0, 0.0, -1.0])
    model = nn.Sequential(conv, nn.ReLU())
    images = torch.zeros(5, 1, 4, 4)
    images[:2, :, :2, :] = 1.0  # 2 images with 8 positive pixels of 16
    model.train()
    rates = firing_rates(model, model[1], images, batch_size=2)
    torch.testing.assert_close(
        rates, torch.tensor([16 / 80, 0.0, 0.0], dtype=torch.float64)
    )
    # a numpy batch size is a batch size
    same = firing_rates(model, model[1], images, batch_size=np.int64(2))
    torch.testing.assert_close(same, rates)
    assert model.training  # its mode comes back


def test_firing_rates_and_shifts_name_bad_arguments():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(1),
        nn.Linear(8, 2),
    )
    images = torch.randn(3, 1, 4, 4)
    with pytest.raises(ValueError, match="non-empty"):
        firing_rates(model, model[1], images[:0])
    with pytest.raises(ValueError, match="batch_size"):
        firing_rates(model, model[1], images, batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 2.0"):
        firing_rates(model, model[1], images, batch_size=2.0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) feature maps.*Linear"):
        firing_rates(model, model[4], images)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) feature maps"):
        shifted_activity(model, model[4], images, [(0, 0), (0, 1)], pad=4)
    with pytest.raises(ValueError, match="bins"):
        radial_spectrum(torch.ones(1, 1, 3, 3), bins=0)
    with pytest.raises(TypeError, match=r"weight tensor .*layer\.weight, got Conv2d"):
        high_frequency_fraction(model[0])
    with pytest.raises(TypeError, match="images must be a tensor.*got list"):
        firing_rates(model, model[1], images.tolist())
    with pytest.raises(TypeError, match="images must be a tensor.*got list"):
        shifted_activity(model, model[1], images.tolist(), [(0, 0)], pad=1)
    with pytest.raises(TypeError, match="activity must be a tensor.*got list"):
        shift_variation([[1.0], [0.0]])


def _decimate(pool: nn.Module) -> nn.Sequential:
    identity = nn.Conv2d(1, 1, 1, bias=False)
    nn.init.ones_(identity.weight)
    return nn.Sequential(identity, nn.ReLU(), pool)


def test_shift_variation_of_hand_made_activity():
    assert shift_variation(torch.tensor([[1.0], [0.0]])).item() == 1.0
    assert shift_variation(torch.full((3, 2, 4), 5.0)).item() == 0.0
    # sums over images and channels: std (1 and 0) over means (2 and 1)
    activity = torch.tensor([[[1.0, 1.0]], [[3.0, 1.0]]])
    assert shift_variation(activity).item() == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="zero at every shift"):
        shift_variation(torch.zeros(2, 3))


def test_a_grating_sampled_at_its_period_comes_and_goes_with_the_shift():
    grating = (torch.arange(16) % 2).float().expand(1, 1, 16, 16)  # columns 0,1,0,1
    model = _decimate(nn.MaxPool2d(kernel_size=1, stride=2))  # keep every 2nd pixel
    model.train()
    activity = shifted_activity(model, model[2], grating, [(0, 0), (0, 1)], pad=4)
    # with pad 4, shift 0 keeps the columns of zeros, shift 1 8 rows x 8 columns of ones
    torch.testing.assert_close(activity, torch.tensor([[[0.0]], [[64.0]]]).double())
    assert shift_variation(activity).item() == pytest.approx(1.0)
    # moving by the whole stride keeps the sum: no variation
    whole = shifted_activity(model, model[2], grating, [(0, 1), (0, 3)], pad=4)
    assert shift_variation(whole).item() == 0.0
    assert model.training  # its mode comes back


def test_averaging_before_sampling_removes_the_variation():
    grating = (torch.arange(16) % 2).float().expand(1, 1, 16, 16)
    model = _decimate(nn.AvgPool2d(kernel_size=2, stride=2))  # low-pass, then sample
    shifts = [(0, 0), (0, 1), (1, 0), (1, 1)]
    activity = shifted_activity(model, model[2], grating, shifts, pad=4)
    assert shift_variation(activity).item() == pytest.approx(0.0, abs=1e-12)


def test_shifts_beyond_the_margin_are_refused():
    model = _decimate(nn.MaxPool2d(kernel_size=1, stride=2))
    with pytest.raises(ValueError, match="within pad"):
        shifted_activity(model, model[2], torch.ones(1, 1, 8, 8), [(0, 5)], pad=4)
