"""OcclusionSensitivity: Captum's numbers, the paper's maps, a well-behaved class."""

from types import SimpleNamespace

import pytest
import torch
from captum.attr import Occlusion, PerturbationAttribution
from captum.metrics import sensitivity_max
from torch import nn
from torch.overrides import TorchFunctionMode

from captum_deconvnet import OcclusionSensitivity, _occlusion_args, _scan
from tests.helpers import snapshot

# the default path plans on these small inputs too, so that they test it
pytestmark = pytest.mark.usefixtures("every_plan")


def small_cnn(classes: int = 5) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 6 * 6, classes),
    ).eval()


class TwoInputs(nn.Module):
    """Images and a vector, added to the class scores, with a scale argument."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = small_cnn()
        self.vector = nn.Linear(4, 5)

    def forward(self, images, vector, scale=1.0):
        return self.cnn(images) * scale + self.vector(vector)


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 12, 12, generator=torch.Generator().manual_seed(1))


def assert_captum_equal(model, inputs, **kwargs) -> None:
    ours = OcclusionSensitivity(model).attribute(inputs, **kwargs)
    theirs = Occlusion(model).attribute(inputs, **kwargs)
    if not isinstance(ours, tuple):
        ours, theirs, inputs = (ours,), (theirs,), (inputs,)
    for a, b, x in zip(ours, theirs, inputs, strict=True):
        assert a.shape == b.shape and a.dtype == x.dtype  # Captum's is always float32
        torch.testing.assert_close(a, b.to(a.dtype), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("window", "strides"),
    [
        ((3, 4, 4), None),
        ((3, 4, 4), 2),
        ((3, 5, 5), 3),  # the last positions are clipped, as Captum clips them
        ((1, 4, 3), (1, 2, 3)),
        ((3, 12, 12), 5),  # a window over the whole image
    ],
)
def test_attribute_equals_captum_for_window_and_stride_forms(window, strides):
    assert_captum_equal(
        small_cnn(), images(), sliding_window_shapes=window, strides=strides, target=1
    )


@pytest.mark.parametrize(
    "target",
    [0, (3,), [1, 4], torch.tensor([2, 0]), torch.tensor(3), torch.tensor([[1], [2]])],
)
def test_attribute_equals_captum_for_every_target_form(target):
    if isinstance(target, torch.Tensor) and target.ndim == 2:
        target = target.flatten()
    assert_captum_equal(
        small_cnn(), images(), sliding_window_shapes=(3, 4, 4), strides=4, target=target
    )


def test_attribute_with_a_one_output_model_and_no_target():
    model = nn.Sequential(small_cnn(), nn.Linear(5, 1)).eval()
    assert_captum_equal(model, images(), sliding_window_shapes=(3, 6, 6), strides=3)


@pytest.mark.parametrize(
    "baselines",
    [0.5, torch.tensor(0.3), torch.rand(3, 12, 12), torch.rand(2, 3, 12, 12)],
)
def test_attribute_equals_captum_for_scalar_and_tensor_baselines(baselines):
    assert_captum_equal(
        small_cnn(), images(), sliding_window_shapes=(3, 4, 4), strides=2,
        baselines=baselines, target=[0, 3],
    )  # fmt: skip


def test_attribute_equals_captum_on_tuple_inputs_with_extra_args():
    model = TwoInputs().eval()
    vector = torch.randn(2, 4)
    assert_captum_equal(
        model,
        (images(), vector),
        sliding_window_shapes=((3, 4, 4), (2,)),
        strides=((2, 4, 4), 1),
        baselines=(0.1, torch.zeros(4)),
        target=2,
        additional_forward_args=(2.0,),
    )


def test_an_extra_tensor_without_a_row_per_example_is_refused_unless_one_at_a_time():
    """Captum repeats tensor arguments with the inputs when a pass holds several
    positions; a tensor that is not batched would be misused silently."""
    torch.manual_seed(0)
    linear = nn.Linear(12, 5).eval()

    def columns(x, cols):
        return linear(x)[:, cols].sum(1)

    x, cols = torch.randn(4, 12), torch.tensor([0, 2])
    kwargs = {"sliding_window_shapes": (3,), "strides": 3}
    kwargs["additional_forward_args"] = (cols,)
    with pytest.raises(ValueError, match=r"additional_forward_args\[0\].*\(2,\)"):
        OcclusionSensitivity(columns).attribute(x, **kwargs)
    ours = OcclusionSensitivity(columns).attribute(
        x, perturbations_per_eval=1, **kwargs
    )
    theirs = Occlusion(columns).attribute(x, perturbations_per_eval=1, **kwargs)
    torch.testing.assert_close(ours, theirs)
    batched = torch.randn(4, 12)  # a row per example: repeated with the copies
    kwargs["additional_forward_args"] = (batched,)
    assert_captum_equal(lambda x, b: linear(x * b).sum(1), x, **kwargs)


@pytest.mark.parametrize(
    ("window", "strides", "baselines"),
    [
        ((3, 4, 4), (1, 2, 2), torch.zeros(3, 12, 12)),  # flat forms, one input
        (((3, 4, 4),), ((1, 2, 2),), (0.5,)),  # nested forms
    ],
)
def test_a_tuple_of_one_input_takes_captums_flat_and_nested_forms(
    window, strides, baselines
):
    assert_captum_equal(
        small_cnn(), (images(),), sliding_window_shapes=window, strides=strides,
        baselines=baselines, target=1,
    )  # fmt: skip


def test_float64_inputs_are_accepted_and_keep_captum_numbers():
    model = small_cnn().double()
    assert_captum_equal(
        model, images().double(), sliding_window_shapes=(3, 4, 4), strides=4, target=1
    )


@pytest.mark.parametrize("incremental", [True, False])
def test_result_does_not_depend_on_the_batch(incremental):
    model, x = small_cnn(), images(3)
    kwargs = {"sliding_window_shapes": (3, 5, 5), "strides": 2, "target": [0, 1, 2]}
    reference = OcclusionSensitivity(model, incremental=False).attribute(
        x, perturbations_per_eval=1, **kwargs
    )
    for per_eval in (1, 2, 7, None):
        for max_batch in (1, 4, 1000):
            occlusion = OcclusionSensitivity(
                model, incremental=incremental, max_batch=max_batch
            )
            result = occlusion.attribute(x, perturbations_per_eval=per_eval, **kwargs)
            torch.testing.assert_close(result, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "window", "stride"),
    [
        ((3, 20, 17), (3, 5, 4), (1, 3, 2)),
        ((7,), (3,), (2,)),
        ((2, 6, 5, 4), (1, 3, 2, 2), (1, 1, 2, 1)),
    ],
)
@pytest.mark.parametrize("block", [2**24, 7])
def test_region_sums_equal_adding_each_region_in_turn(
    shape, window, stride, block, monkeypatch
):
    monkeypatch.setattr(_occlusion_args, "SUM_BLOCK_ELEMENTS", block)
    regions = _occlusion_args.occluder_regions(torch.Size(shape), window, stride)
    values = torch.randn(len(regions), 2, dtype=torch.float64)
    total, counts = _occlusion_args.region_sums(regions, values, shape)
    expected_total = torch.zeros(2, *shape, dtype=torch.float64)
    expected_counts = torch.zeros(shape, dtype=torch.float64)
    covers = _occlusion_args.region_covers(
        _occlusion_args.region_masks(regions, shape, "cpu")
    )
    for p, region in enumerate(regions):
        expected_total[(slice(None), *region)] += values[p].reshape(
            2, *[1] * len(shape)
        )
        expected_counts[region] += 1
        alone = torch.zeros(shape, dtype=torch.bool)
        alone[region] = True
        assert torch.equal(covers[p], alone)
    torch.testing.assert_close(total, expected_total, rtol=1e-12, atol=1e-12)
    assert torch.equal(counts, expected_counts)


def test_max_batch_bounds_the_copies_per_forward_pass():
    model, sizes = small_cnn(), []
    model[0].register_forward_pre_hook(lambda m, args: sizes.append(len(args[0])))
    occlusion = OcclusionSensitivity(model, max_batch=6, incremental=False)
    occlusion.attribute(images(3), (3, 4, 4), 2, target=0, perturbations_per_eval=50)
    assert max(sizes) <= 6
    assert sizes[1:-1] == [6] * (len(sizes) - 2)  # then full chunks, 2 positions each


def test_adaptive_chunks_settle_on_the_cheapest_size_past_one_slow_chunk(monkeypatch):
    """A clock the model advances: per copy, chunks of 8 cost least, and the first
    chunk of 8 meets a slow moment (a busy machine) that its second timing sees
    through; chunks of 16 cost more, so 8 is kept for the rest."""
    per_copy = {2: 4.0, 4: 3.0, 8: 2.0, 16: 2.5}
    clock, sizes = [0.0], []

    def spend(module, args):
        sizes.append(len(args[0]))
        slow = 10.0 if sizes.count(8) == 1 and sizes[-1] == 8 else 1.0
        clock[0] += per_copy.get(sizes[-1], 5.0) * sizes[-1] * slow

    model = small_cnn()
    model[0].register_forward_pre_hook(spend)
    monkeypatch.setattr(_scan, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(_scan, "FIRST_CHUNK_ELEMENTS", 2 * 3 * 12 * 12)  # 2 copies
    occlusion = OcclusionSensitivity(model, incremental=False)
    occlusion.attribute(torch.randn(1, 3, 12, 12), (3, 2, 2), 1, target=0)
    # the unoccluded pass, two chunks per size up to 16, then 8 until the 121st copy
    assert sizes == [1, 2, 2, 4, 4, 8, 8, 16, 16] + [8] * 7 + [5]


def test_adaptive_chunks_of_small_inputs_start_large():
    """Two 3x224x224 images' worth of elements: 2 copies of such an image, all 121
    positions of a 3x12x12 one at once (as many as max_batch allows)."""
    model, sizes = small_cnn(), []
    model[0].register_forward_pre_hook(lambda m, args: sizes.append(len(args[0])))
    occlusion = OcclusionSensitivity(model, incremental=False, max_batch=100)
    occlusion.attribute(torch.randn(1, 3, 12, 12), (3, 2, 2), 1, target=0)
    assert sizes == [1, 100, 21]
    big = nn.Sequential(nn.Conv2d(3, 1, 1), nn.Flatten(), nn.LazyLinear(2)).eval()
    big(torch.zeros(1, 3, 224, 224))
    big[0].register_forward_pre_hook(lambda m, args: sizes.append(len(args[0])))
    sizes.clear()
    OcclusionSensitivity(big, incremental=False).attribute(
        torch.randn(1, 3, 224, 224), (3, 112, 112), 112, target=0
    )
    assert sizes[:2] == [1, 2]


def totals(output: torch.Tensor) -> torch.Tensor:
    """Each channel's total activation (a linear layer's outputs are its channels,
    copied before a following in-place layer overwrites them)."""
    return output.sum((2, 3)) if output.ndim == 4 else output.clone()


def naive_maps(model, layer, x, window, stride, fill, target, channel):
    """The paper's Fig. 7, one occluded image at a time."""
    sums = []
    handle = layer.register_forward_hook(lambda m, a, out: sums.append(totals(out)))
    rows = (x.shape[2] - window) // stride + 1
    cols = (x.shape[3] - window) // stride + 1
    probability = torch.zeros(len(x), rows, cols)
    top = torch.zeros(len(x), rows, cols, dtype=torch.long)
    activation = torch.zeros(len(x), rows, cols)
    with torch.no_grad():
        for n in range(len(x)):
            for r in range(rows):
                for c in range(cols):
                    occluded = x[n : n + 1].clone()
                    y0, x0 = r * stride, c * stride
                    occluded[:, :, y0 : y0 + window, x0 : x0 + window] = fill[n]
                    sums.clear()
                    probs = model(occluded).softmax(1)[0]
                    probability[n, r, c] = probs[target[n]]
                    top[n, r, c] = probs.argmax()
                    activation[n, r, c] = sums[0][0, channel[n]]
    handle.remove()
    return probability, top, activation


@pytest.mark.parametrize("incremental", [True, False])
@pytest.mark.parametrize("layer_index", [3, 6])  # in the conv chain, after it
def test_sensitivity_maps_equal_a_naive_double_loop(incremental, layer_index):
    model, x = small_cnn(), images(2)
    layer = model[layer_index]
    occlusion = OcclusionSensitivity(model, incremental=incremental, max_batch=7)
    maps = occlusion.sensitivity_maps(x, window=4, stride=3, layer=layer)
    with torch.no_grad():
        output = model(x)
    fill = x.mean((2, 3), keepdim=True)  # the paper's grey
    sums = []
    with torch.no_grad():
        handle = layer.register_forward_hook(lambda m, a, o: sums.append(totals(o)))
        model(x)
        handle.remove()
    assert torch.equal(maps.target, output.argmax(1))
    assert torch.equal(maps.channel, sums[0].argmax(1))
    probability, top, activation = naive_maps(
        model, layer, x, 4, 3, fill, maps.target, maps.channel
    )
    torch.testing.assert_close(maps.probability, probability, rtol=1e-4, atol=1e-6)
    assert torch.equal(maps.top_class, top)
    torch.testing.assert_close(maps.activation, activation, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("incremental", [True, False])
def test_a_watched_layer_followed_by_an_in_place_layer_keeps_its_own_values(
    incremental,
):
    """A linear layer's output, overwritten by the in-place ReLU after it: the maps
    report the layer's values (negative ones too), not the ReLU's."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 10 * 10, 8),
        nn.ReLU(inplace=True), nn.Linear(8, 5),
    ).eval()  # fmt: skip
    x = images(2)
    with torch.no_grad():
        linear = model[:3](x)
    channel = linear.argmin(1)  # a negative value, which the ReLU would zero
    occlusion = OcclusionSensitivity(model, incremental=incremental)
    maps = occlusion.sensitivity_maps(x, 4, 4, layer=model[2], channel=channel)
    expected = linear[torch.arange(2), channel]
    assert (expected < 0).all()
    torch.testing.assert_close(maps.unoccluded_activation, expected)
    fill = x.mean((2, 3), keepdim=True)
    *_, activation = naive_maps(model, model[2], x, 4, 4, fill, maps.target, channel)
    torch.testing.assert_close(maps.activation, activation, rtol=1e-4, atol=1e-5)


class SplitsBatches(nn.Module):
    """Runs ``per_example`` (a convolution, or a ReLU after one) one example at a
    time, ``(C, H, W)``, when the batch holds more than one image: its outputs are
    those of a batched pass, but the module runs once per example."""

    def __init__(self, per_example: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.relu = nn.Conv2d(3, 10, 3), nn.ReLU()  # 10 x 10 x 10 maps
        self.fc = nn.Linear(10, 5)
        self.per_example = per_example

    def forward(self, x):
        if self.per_example == "conv" and len(x) > 1:
            h = torch.stack([self.conv(x_i) for x_i in x])
        else:
            h = self.conv(x)
        if self.per_example == "relu" and len(h) > 1:
            h = torch.stack([self.relu(h_i) for h_i in h])
        else:
            h = self.relu(h)
        return self.fc(h.mean((2, 3)))


# With 10 copies per pass, one example's sums (10 channels, 10 rows) have the
# shape of a batch's; only the check of the convolutions' inputs tells them apart.
@pytest.mark.parametrize("max_batch", [64, 10])
@pytest.mark.parametrize(
    ("per_example", "match"),
    [("conv", "split a batch of occluded copies"), ("relu", "ran on part of")],
)
def test_a_layer_run_one_example_at_a_time_is_refused_by_name(
    per_example, match, max_batch
):
    """One image runs as a batch, its copies one by one: the layer's first run in
    a pass sees one copy, so its values are refused, not misread."""
    model, x = SplitsBatches(per_example).eval(), images(1)
    layer = getattr(model, per_example)
    before = snapshot(model)
    occlusion = OcclusionSensitivity(model, max_batch=max_batch)
    with pytest.raises(ValueError, match=match) as error:
        occlusion.sensitivity_maps(x, 4, 2, layer=layer)
    assert repr(layer) in str(error.value)
    assert snapshot(model) == before
    # Without a layer the maps need only the outputs, which are right.
    maps = occlusion.sensitivity_maps(x, 4, 2)
    fill = x.mean((2, 3), keepdim=True)
    target, channel = maps.target, torch.zeros(1, dtype=torch.long)
    probability, top, _ = naive_maps(model, model.fc, x, 4, 2, fill, target, channel)
    torch.testing.assert_close(maps.probability, probability, rtol=1e-4, atol=1e-6)
    assert torch.equal(maps.top_class, top)


def test_sensitivity_maps_with_chosen_target_channel_and_fill():
    model, x = small_cnn(), images(2)
    maps = OcclusionSensitivity(model).sensitivity_maps(
        x, (4, 5), (2, 3), target=[3, 1], layer=model[3], channel=[5, 0], fill=0.25
    )
    assert maps.probability.shape == (2, 5, 3) and maps.window == (4, 5)
    fill = torch.full((2,), 0.25)
    sums, rows = [], []
    handle = model[3].register_forward_hook(lambda m, a, o: sums.append(o.sum((2, 3))))
    with torch.no_grad():
        for y0 in range(0, 9, 2):
            for x0 in range(0, 8, 3):
                occluded = x.clone()
                occluded[:, :, y0 : y0 + 4, x0 : x0 + 5] = fill[0]
                sums.clear()
                probs = model(occluded).softmax(1)
                rows.append((probs[[0, 1], [3, 1]], sums[0][[0, 1], [5, 0]]))
    handle.remove()
    probability = torch.stack([p for p, _ in rows], 1).reshape(2, 5, 3)
    activation = torch.stack([a for _, a in rows], 1).reshape(2, 5, 3)
    torch.testing.assert_close(maps.probability, probability, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(maps.activation, activation, rtol=1e-4, atol=1e-4)


def test_progress_bar_is_shown_on_request(capsys):
    occlusion = OcclusionSensitivity(small_cnn())
    occlusion.attribute(images(), (3, 4, 4), 4, target=0, show_progress=True)
    assert "Occlusion" in capsys.readouterr().err
    occlusion.attribute(images(), (3, 4, 4), 4, target=0)
    assert capsys.readouterr().err == ""


BAD_ATTRIBUTE_ARGS = [
    ({"sliding_window_shapes": (3, 13, 4)}, ValueError, "larger than the input"),
    ({"sliding_window_shapes": (4, 4)}, ValueError, "one size for each"),
    ({"sliding_window_shapes": (3, 4, 4), "strides": 0}, ValueError, "strides"),
    ({"sliding_window_shapes": (3, 4, 4), "strides": -2}, ValueError, "strides"),
    ({"sliding_window_shapes": (3, 4, 4), "strides": 5}, ValueError, "exceed"),
    (
        {"sliding_window_shapes": (3, 4, 4), "baselines": torch.zeros(3, 5, 5)},
        ValueError,
        "baselines of shape",
    ),
    ({"sliding_window_shapes": (3, 4, 4), "baselines": "grey"}, TypeError, "grey"),
    (
        {"sliding_window_shapes": (3, 4, 4), "perturbations_per_eval": 0},
        ValueError,
        "perturbations_per_eval",
    ),
    ({"sliding_window_shapes": (3, 4, 4), "target": 9}, ValueError, "target 9"),
]


@pytest.mark.filterwarnings("ignore:modules in training mode")
@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_ATTRIBUTE_ARGS)
def test_bad_attribute_arguments_are_named(kwargs, error, message):
    model = small_cnn().train()
    before = snapshot(model)
    with pytest.raises(error, match=message):
        OcclusionSensitivity(model).attribute(images(), **{"target": 0, **kwargs})
    assert snapshot(model) == before


def test_bad_sensitivity_map_arguments_are_named():
    model = small_cnn()
    before = snapshot(model)
    occlusion = OcclusionSensitivity(model)
    x = images()
    with pytest.raises(ValueError, match="larger than the images"):
        occlusion.sensitivity_maps(x, 13, 2)
    with pytest.raises(ValueError, match="stride"):
        occlusion.sensitivity_maps(x, 4, 0)
    with pytest.raises(ValueError, match="not a submodule"):
        occlusion.sensitivity_maps(x, 4, 2, layer=nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="channel 6 is out of range"):
        occlusion.sensitivity_maps(x, 4, 2, layer=model[3], channel=6)
    with pytest.raises(ValueError, match="fill"):
        occlusion.sensitivity_maps(x, 4, 2, fill=torch.zeros(2))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        occlusion.sensitivity_maps(x[0], 4, 2)
    with pytest.raises(ValueError, match="max_batch"):
        OcclusionSensitivity(model, max_batch=0)
    with pytest.raises(TypeError, match="callable"):
        OcclusionSensitivity("model")
    assert snapshot(model) == before


def test_model_is_left_unchanged_when_its_forward_raises():
    model = small_cnn().train()
    before = snapshot(model)
    calls = []

    def failing(module, args):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("boom")

    handle = model[5].register_forward_pre_hook(failing)
    warns = pytest.warns(UserWarning, match="training mode")
    with warns, pytest.raises(RuntimeError, match="boom"):
        OcclusionSensitivity(model).sensitivity_maps(images(), 4, 2, layer=model[3])
    handle.remove()
    assert snapshot(model) == before


def test_it_is_a_perturbation_attribution_that_captum_metrics_accept():
    model, x = small_cnn(), images(2)
    occlusion = OcclusionSensitivity(model)
    assert isinstance(occlusion, PerturbationAttribution)
    assert occlusion.multiplies_by_inputs == Occlusion(model).multiplies_by_inputs
    kwargs = {"sliding_window_shapes": (3, 6, 6), "strides": 6, "target": 1}
    torch.manual_seed(0)  # the same random perturbations for both
    ours = sensitivity_max(occlusion.attribute, x, n_perturb_samples=2, **kwargs)
    torch.manual_seed(0)
    theirs = sensitivity_max(
        Occlusion(model).attribute, x, n_perturb_samples=2, **kwargs
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_token_ids_are_occluded_as_captum_occludes_them():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(24, 3)).eval()
    ids = torch.randint(1, 10, (2, 6))
    kwargs = {"sliding_window_shapes": (2,), "target": 1, "baselines": 0}
    for incremental in (True, False):
        ours = OcclusionSensitivity(model, incremental=incremental).attribute(
            ids, **kwargs
        )
        assert ours.dtype == torch.float32
        torch.testing.assert_close(ours, Occlusion(model).attribute(ids, **kwargs))
    with pytest.raises(ValueError, match="whole numbers"):
        OcclusionSensitivity(model).attribute(ids, (2,), baselines=0.5, target=1)
    small = ids.to(torch.int8)  # 300 would wrap to 44
    with pytest.raises(ValueError, match=r"-128\.\.127"):
        OcclusionSensitivity(model).attribute(small, (2,), baselines=torch.tensor(300))
    with pytest.raises(TypeError, match="bool"):
        OcclusionSensitivity(model).attribute(ids > 3, (2,), target=1)
    with pytest.raises(TypeError, match=r"uint8.*\.float\(\)"):  # images
        OcclusionSensitivity(model).attribute(ids.to(torch.uint8), (2,), target=1)


class HostTransfers(TorchFunctionMode):
    """Counts the calls that copy data between the host and a device or read a
    value to the host: on a GPU each waits for the work queued before it."""

    NAMES = {"tensor", "tolist", "item", "cpu", "cuda", "numpy", "__bool__"}

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        places = (str, torch.device, torch.Tensor)  # .to(dtype) stays in place
        moves = name == "to" and (
            "device" in kwargs or any(isinstance(a, places) for a in args[1:])
        )
        self.count += name in self.NAMES or moves
        return func(*args, **kwargs)


@pytest.mark.parametrize("target", [2, torch.tensor([3, 0]), [(1,), (4,)]])
def test_full_passes_copy_nothing_to_the_host_per_chunk(target):
    """With 4 times as many chunks of copies, no more transfers: the masks and the
    targets' columns are made once per call (a round trip per chunk would keep a
    GPU idle while the next chunk is queued)."""
    model, x = small_cnn(), torch.rand(2, 3, 12, 12)
    kwargs = {"sliding_window_shapes": (3, 2, 2), "strides": 1, "target": target}
    occlusion = OcclusionSensitivity(model, incremental=False)
    captum = Occlusion(model).attribute(x, perturbations_per_eval=16, **kwargs)
    counts = []
    for per_eval in (32, 8):  # 121 positions: 4 and 16 chunks
        with HostTransfers() as transfers:
            ours = occlusion.attribute(x, perturbations_per_eval=per_eval, **kwargs)
        counts.append(transfers.count)
        torch.testing.assert_close(ours, captum)
    assert counts[0] == counts[1]


def test_sensitivity_maps_copy_nothing_to_the_host_per_chunk():
    model, x = small_cnn(), torch.rand(2, 3, 12, 12)
    counts = []
    for max_batch in (64, 16):  # 121 positions: 4 and 16 chunks
        occlusion = OcclusionSensitivity(model, incremental=False, max_batch=max_batch)
        with HostTransfers() as transfers:
            occlusion.sensitivity_maps(x, 2, 1, target=1, layer=model[3])
        counts.append(transfers.count)
    assert counts[0] == counts[1]
