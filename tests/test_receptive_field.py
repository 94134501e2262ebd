import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from captum_deconvnet import ReceptiveField, receptive_field
from lightning_zfnet import zfnet

from .test_deconvnet_contract import snapshot
from .test_incremental import Masked, Stores

# PAPER.md: receptive field / jump of ZFNet's layers, by index in model.features.
PAPER = {0: (7, 2), 2: (11, 4), 4: (27, 8), 6: (43, 16), 8: (75, 16)}
PAPER |= {10: (107, 16), 12: (139, 16), 14: (171, 32)}


@pytest.mark.parametrize("index", PAPER)
def test_zfnet_fields_are_the_papers(index):
    model = zfnet(num_classes=10, width=0.125)
    field = receptive_field(model, model.features[index], (3, 224, 224))
    size, jump = PAPER[index]
    assert field.size == (size, size) and field.jump == (jump, jump)


def test_layers_that_keep_the_map_keep_the_field():
    model = zfnet(num_classes=10, width=0.125)
    conv1 = receptive_field(model, model.features[0], (3, 224, 224))
    assert receptive_field(model, model.features[1], (3, 224, 224)) == conv1  # ReLU


def test_box_is_the_field_clipped_to_the_image():
    conv2 = ReceptiveField(size=(27, 27), jump=(8, 8), start=(-3, -3))
    assert conv2.box(0, 0, (64, 64)) == (0, 0, 24, 24)
    # row 2 starts at -3 + 2 * 8 = 13, column 1 at -3 + 8 = 5
    assert conv2.box(2, 1, (64, 64)) == (5, 13, 32, 40)
    assert conv2.box(7, 7, (64, 64)) == (53, 53, 64, 64)


class Branchy(nn.Module):
    """Strided and dilated convolutions, max and average pools, module and
    functional forms, and a residual sum of two branches of different fields."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.block = nn.Sequential(nn.Conv2d(2, 2, 3, padding=2, dilation=2), nn.ReLU())
        self.wide = nn.Conv2d(2, 2, (5, 3), padding=(0, 1))
        self.avg = nn.AvgPool2d(2)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = x + self.block(x)  # the block's field is wider than the shortcut's
        x = F.max_pool2d(x, 2, stride=1)
        x = torch.max_pool2d(x, 3, 1, 1)  # torch's own name for it
        x = F.conv2d(x, self.conv1.weight[:, :1].repeat(1, 2, 1, 1), padding=1)
        return self.avg(self.wide(x))


class Padded(nn.Module):
    """Constant padding as a module and as F.pad, uneven on the two sides, and a
    crop (negative padding)."""

    def __init__(self):
        super().__init__()
        self.pad = nn.ZeroPad2d((2, 0, 1, 3))
        self.conv1 = nn.Conv2d(1, 2, 3, stride=2)
        self.const = nn.ConstantPad2d((0, 1, 2, 0), 0.5)
        self.conv2 = nn.Conv2d(2, 2, 3)

    def forward(self, x):
        x = self.conv1(self.pad(x))
        x = F.pad(x, (1, 2, 0, 1))
        x = F.pad(x, (-1, 0, 0, -1))
        return self.conv2(self.const(x))


class Cropped(nn.Module):
    """A crop by indexing, uneven on the two sides."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 3)

    def forward(self, x):
        return self.conv2(self.conv1(x)[:, :, 1:-1, 2:])


def positive(model: nn.Module) -> nn.Module:
    """Weights positive and biases zero: raising any input pixel raises every
    activation whose field holds it, so the fields can be found by trying."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand_like(p) + 0.1 if p.ndim > 1 else torch.zeros_like(p))
    return model


def brute_force_boxes(model, layer, side, channels=1, chunk=1024):
    """Per map position, the bounding box ``(x0, y0, x1, y1)`` of the input pixels
    that change it when raised one at a time (-1s where none does); ``(h, w, 4)``."""
    x = torch.rand(1, channels, side, side) + 0.1
    outputs, changed = [], []
    handle = layer.register_forward_hook(lambda m, a, out: outputs.append(out))
    with torch.no_grad():
        for first in range(0, side * side, chunk):  # x first in each batch
            pixels = range(first, min(first + chunk, side * side))
            batch = x.repeat(1 + len(pixels), 1, 1, 1)
            batch[1:].view(len(pixels), channels, -1)[
                range(len(pixels)), :, pixels
            ] += 100.0
            model(batch)
            changed.append((outputs[-1][1:] != outputs[-1][:1]).any(dim=1))
    handle.remove()
    changed = torch.cat(changed)  # (pixel, h, w)
    changed = changed.view(side, side, *changed.shape[1:])
    rows, cols = changed.any(dim=1), changed.any(dim=0)  # (side, h, w) each
    boxes = torch.stack([_first(cols), _first(rows), _last(cols), _last(rows)], -1)
    return boxes.masked_fill(~rows.any(0)[..., None], -1)  # no pixel reaches it


def _first(hit):
    return hit.int().argmax(dim=0)


def _last(hit):
    return len(hit) - hit.flip(0).int().argmax(dim=0)


# Layers whose dilated window has holes: at the clipped border the outermost pixels
# of a field may be holes, not read.
HOLES = {(Branchy, "block"), (Branchy, "block.0")}


@pytest.mark.parametrize(
    ("net", "name"),
    [(Branchy, n) for n in ("conv1", "pool", "block", "block.0", "wide", "avg")]
    + [(Padded, n) for n in ("pad", "conv1", "const", "conv2")]
    + [(Cropped, "conv2")],
)
def test_boxes_match_brute_force(net, name):
    torch.manual_seed(0)
    model = positive(net())
    layer = model.get_submodule(name)
    side = 71
    field = receptive_field(model, layer, (1, side, side))
    boxes = brute_force_boxes(model, layer, side)
    check_boxes(field, boxes, side, holes=(net, name) in HOLES)


def check_boxes(field, boxes, side, holes=False):
    """Each position's box against the pixels found to change it (``boxes``), and
    all boxes together against all pixels found."""
    found_all = boxes.flatten(0, 1)
    found_all = found_all[found_all[:, 0] >= 0]
    reached = [*found_all[:, :2].amin(0).tolist(), *found_all[:, 2:].amax(0).tolist()]
    inside, union = 0, [side, side, 0, 0]
    for (row, col), found in zip(
        torch.cartesian_prod(*map(torch.arange, boxes.shape[:2])).tolist(),
        boxes.flatten(0, 1).tolist(),
        strict=True,
    ):
        box = list(field.box(row, col, (side, side)))
        if box[2] > box[0] and box[3] > box[1]:
            union = [*map(min, union[:2], box[:2]), *map(max, union[2:], box[2:])]
        if found == [-1] * 4:  # padding alone: a box at the border, if any
            assert any(b == r for b, r in zip(box, reached, strict=True))
        elif not holes:
            assert box == found, (row, col)
        else:
            # Clipped at the border, the pixels found lie within the box ...
            assert box[:2] <= found[:2] and found[2:] <= box[2:]
            # ... and where the whole field is in the image they span it.
            if (box[2] - box[0], box[3] - box[1]) == field.size[::-1]:
                assert box == found
                inside += 1
    assert inside > 0 or not holes
    assert union == reached  # no box holds a pixel that no position reads
    assert field.extent == tuple(reached)


def test_a_strided_layer_that_drops_the_last_row_leaves_it_out_of_the_boxes():
    """SqueezeNet 1.1's first convolution (3x3, stride 2, no padding) reads rows
    0 to 30 of a 32x32 image (0 to 62 of 64x64); the Fire modules' 3x3 windows,
    padded by 1, stand for positions past its last, whose fields would hold the
    last row."""
    torch.manual_seed(0)
    model = positive(torchvision.models.squeezenet1_1(weights=None))
    for index in (3, 4):  # Fire modules, after the first pool
        layer = model.features[index]
        field = receptive_field(model, layer, (3, 32, 32))
        assert field.extent == (0, 0, 31, 31)
        boxes = brute_force_boxes(model.features[: index + 1], layer, 32, channels=3)
        check_boxes(field, boxes, 32)


def test_box_of_a_traced_field_needs_its_image_size():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3, padding=1))
    field = receptive_field(model, model[1], (1, 8, 8))
    # Position 2 sees conv1's positions 1 to 3, rows 2 to 8; the last is padding
    assert field.box(2, 2, (8, 8)) == (2, 2, 7, 7)  # column and row 7 are unread
    with pytest.raises(ValueError, match=r"\(9, 9\) is not the \(8, 8\)"):
        field.box(2, 2, (9, 9))


def test_torchvisions_input_transform_keeps_the_field():
    """GoogLeNet's ``transform_input`` (the pretrained setting) rescales each
    channel through ``x[:, c].unsqueeze(1)``: the fields are those without it."""
    fields = [
        receptive_field(model, model.inception3a, (3, 96, 96))
        for model in (
            torchvision.models.googlenet(
                init_weights=True, aux_logits=False, transform_input=transform
            )
            for transform in (False, True)
        )
    ]
    assert fields[0] == fields[1] == ReceptiveField((43, 43), (8, 8), (-15, -15))


def test_resnet_fields_follow_the_main_branch():
    model = torchvision.models.resnet18()
    assert receptive_field(model, model.layer4, (3, 64, 64)).size == (435, 435)
    block = receptive_field(model, model.layer2[0], (3, 64, 64))
    assert (block.size, block.jump) == ((67, 67), (8, 8))


class SideWork(nn.Module):
    """Returns its first convolution's map; computes more it does not return."""

    def __init__(self):
        super().__init__()
        self.first, self.unused = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 5, stride=2)

    def forward(self, x):
        out = self.first(x)
        self.unused(out)  # dead: its field is not the block's
        self.mean = out.mean()  # kept for logging: no map, but not the output
        return out


class TwoMaps(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3)

    def forward(self, x):
        out = self.conv(x)
        return out, out * 2


def test_the_field_is_that_of_the_map_a_block_returns():
    """The last node inside a block was taken for its output: the field of the
    dead 5x5 convolution, or a refusal for the mean. By hand: a 3x3 convolution,
    then another."""
    side, two = SideWork(), TwoMaps()
    model = nn.Sequential(side, nn.Conv2d(4, 4, 3), nn.ReLU())
    field = receptive_field(model, side, (3, 12, 10))
    assert field == ReceptiveField(size=(3, 3), jump=(1, 1), start=(0, 0))
    assert field.map_size == (10, 8)
    assert receptive_field(model, model[1], (3, 12, 10)).size == (5, 5)
    pair = nn.Sequential(nn.Conv2d(3, 4, 1), two)
    with pytest.raises(ValueError, match="'1' returns no single tensor"):
        receptive_field(pair, two, (3, 8, 8))


class Flip(nn.Module):
    def forward(self, x):
        return torch.flip(x, (-1,))


def test_unbounded_fields_and_bad_layers_are_named():
    model = zfnet(num_classes=10, width=0.125)
    with pytest.raises(ValueError, match="flatten"):
        receptive_field(model, model.classifier[0], (3, 224, 224))
    with pytest.raises(ValueError, match="not a submodule"):
        receptive_field(model, nn.Conv2d(1, 1, 1), (3, 224, 224))
    upsampled = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Upsample(scale_factor=2))
    with pytest.raises(ValueError, match="1 \\(Upsample\\) resamples"):
        receptive_field(upsampled, upsampled[1], (1, 8, 8))
    # operations that keep the map's size but move values between positions
    for mixing in (nn.ConvTranspose2d(1, 1, 3, padding=1), Flip()):
        model = nn.Sequential(nn.Conv2d(1, 1, 3), mixing, nn.Identity())
        with pytest.raises(ValueError, match="not known to keep"):
            receptive_field(model, model[2], (1, 8, 8))
    small = nn.Sequential(nn.Conv2d(3, 4, 5))
    with pytest.raises(ValueError, match=r"\(3, 4, 4\) \(input_shape\)"):
        receptive_field(small, small[0], (3, 4, 4))  # smaller than the kernel
    with pytest.raises(TypeError, match=r"tensor of shape \(1, 3, 8, 8\)"):
        receptive_field(small, small[0], torch.zeros(1, 3, 8, 8))  # not its shape
    with pytest.raises(TypeError, match="must be one image's .C, H, W., got 8"):
        receptive_field(small, small[0], 8)
    assert receptive_field(small, small[0], torch.tensor([3, 8, 8])).size == (5, 5)
    for mirrored in (nn.ReflectionPad2d(1), nn.ReplicationPad2d(1)):
        model = nn.Sequential(mirrored, nn.Conv2d(1, 1, 3))
        with pytest.raises(ValueError, match="across the border"):
            receptive_field(model, model[1], (1, 8, 8))
    with pytest.raises(ValueError, match="circular"):
        circular = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular"))
        receptive_field(circular, circular[0], (1, 8, 8))


def test_model_is_left_as_it_was():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout()).train()
    before = snapshot(model) + [model[1].running_mean.clone().tolist()]
    receptive_field(model, model[1], (1, 8, 8))
    assert snapshot(model) + [model[1].running_mean.tolist()] == before


def test_tracing_leaves_what_the_forward_stores_as_it_was():
    model = Stores().eval()
    assert receptive_field(model, model.conv, (3, 16, 16)).size == (3, 3)
    assert model.ramp is None and model.features is None and model.seen == []


def test_an_optional_argument_is_traced_at_its_default():
    """``forward(x, mask=None)`` with ``if mask is not None``: two 3x3
    convolutions, by hand 5x5 at stride 1."""
    model = Masked().eval()
    field = receptive_field(model, model.c2, (3, 16, 16))
    assert field == ReceptiveField(size=(5, 5), jump=(1, 1), start=(-2, -2))
