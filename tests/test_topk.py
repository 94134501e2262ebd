import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from captum_deconvnet import TopKActivations, top_activations

from .helpers import Stream
from .scan_ddp import tiny_images, tiny_model


def naive_top(batches, k):
    """Sort every activation of every channel: (value desc, image, row, col)."""
    channels = batches[0][0].shape[1]
    best = []
    for c in range(channels):
        seen = []
        for activations, indices in batches:
            for i, image in enumerate(indices.tolist()):
                fmap = activations[i, c]
                for row in range(fmap.shape[0]):
                    for col in range(fmap.shape[1]):
                        seen.append((-float(fmap[row, col]), image, row, col))
        best.append(sorted(set(seen))[:k])
    return best


def as_lists(top, name):
    """The state in naive_top's form."""
    values, images, rows, cols = (t.tolist() for t in top.entries(name))
    return [
        [(-v, i, r, c) for v, i, r, c in zip(*channel, strict=True)]
        for channel in zip(values, images, rows, cols, strict=True)
    ]


def random_batches(sizes, seed=0, shape=(3, 4, 5)):
    """Batches of small integers (many ties) with shuffled, distinct image indices."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(sum(sizes), generator=generator)
    batches, start = [], 0
    for n in sizes:
        values = torch.randint(-3, 4, (n, *shape), generator=generator).float()
        batches.append((values, order[start : start + n]))
        start += n
    return batches


@pytest.mark.parametrize("k", [1, 4, 30])
def test_update_equals_a_full_sort(k):
    batches = random_batches([3, 1, 5, 2])
    top = TopKActivations(k)
    for activations, indices in batches:
        top.update("layer", activations, indices)
    assert as_lists(top, "layer") == naive_top(batches, k)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64])
def test_any_dtype_shortlisted_in_blocks_of_rows_equals_a_full_sort(dtype, monkeypatch):
    monkeypatch.setattr("captum_deconvnet.topk.SHORTLIST_ELEMENTS", 50)  # 1-2 rows
    batches = [(a.to(dtype), i) for a, i in random_batches([3, 1, 5, 2], seed=1)]
    top = TopKActivations(4)
    for activations, indices in batches:
        top.update("layer", activations, indices)
    assert top.entries("layer").values.dtype == torch.float64
    assert as_lists(top, "layer") == naive_top(batches, 4)


def test_an_activation_of_minus_infinity_fills_a_slot_before_an_empty_one():
    activations = torch.tensor([-torch.inf, 2.0, -torch.inf]).reshape(3, 1, 1, 1)
    batches = [
        (activations[:2], torch.tensor([0, 1])),
        (activations[2:], torch.tensor([2])),
    ]
    top = TopKActivations(4)
    for batch, indices in batches:
        top.update("layer", batch, indices)
    assert top.entries("layer").images.tolist() == [[1, 0, 2, -1]]
    assert as_lists(top, "layer")[0][:3] == naive_top(batches, 4)[0]


def test_merging_parts_in_any_order_equals_the_whole():
    batches = random_batches([2, 3, 4, 1, 3], seed=3)
    whole = TopKActivations(6)
    for activations, indices in batches:
        whole.update("layer", activations, indices)
    parts = []
    for part in (batches[:2], batches[2:3], batches[3:]):
        state = TopKActivations(6)
        for activations, indices in reversed(part):
            state.update("layer", activations, indices)
        parts.append(state)
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        merged = TopKActivations(6)
        for i in order:
            merged.merge(parts[i])
        assert as_lists(merged, "layer") == as_lists(whole, "layer")
    # An activation seen twice (a state merged with itself) counts once.
    assert as_lists(merged.merge(parts[0]), "layer") == as_lists(whole, "layer")


def test_slots_not_filled_are_marked_empty():
    top = TopKActivations(4)
    top.update("fc", torch.tensor([[1.0, 2.0]]), torch.tensor([7]))
    values, images, rows, cols = top.entries("fc")  # (N, C) is a 1x1 map
    assert values[:, 0].tolist() == [1.0, 2.0] and images[:, 0].tolist() == [7, 7]
    assert torch.all(values[:, 1:] == -torch.inf) and torch.all(images[:, 1:] == -1)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="k must"):
        TopKActivations(0)
    top = TopKActivations(2)
    with pytest.raises(ValueError, match="repeat"):
        top.update("a", torch.zeros(2, 1, 2, 2), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="image_indices"):
        top.update("a", torch.zeros(2, 1, 2, 2), torch.tensor([0]))
    top.update("a", torch.zeros(1, 1, 2, 2), torch.tensor([0]))
    with pytest.raises(ValueError, match="do not match"):
        top.update("a", torch.zeros(1, 1, 3, 3), torch.tensor([1]))
    with pytest.raises(ValueError, match="top-3"):
        top.merge(TopKActivations(3))
    with pytest.raises(KeyError, match="'b'"):
        top.entries("b")
    with pytest.raises(ValueError, match="image_indices must be ints"):
        top.update("a", torch.zeros(2, 1, 2, 2), [0, 1.5])
    # NaN has no rank: refused, not ranked first or cutting real values off
    with_nan = torch.tensor([1.0, float("nan"), 3.0, 2.0, 0.5]).view(1, 1, 1, 5)
    with pytest.raises(ValueError, match="NaN"):
        TopKActivations(2).update("x", with_nan, torch.tensor([0]))


def test_scans_of_nothing_or_through_a_loader_are_refused():
    model, images = tiny_model(), tiny_images()
    with pytest.raises(ValueError, match="empty"):
        top_activations(model, [model[0]], images[:0])
    with pytest.raises(ValueError, match="layers"):
        top_activations(model, [], images)
    with pytest.raises(ValueError, match="layers"):
        top_activations(model, model[0], images)  # a layer, not a list
    with pytest.raises(TypeError, match="DataLoader"):
        top_activations(model, [model[0]], DataLoader(images, shuffle=True))
    # named as what the user passed ("inputs", before)
    with pytest.raises(TypeError, match="dataset's batches must be a floating-point"):
        top_activations(model, [model[0]], images.byte())

    # no item i: a NotImplementedError, before
    with pytest.raises(TypeError, match=r"not an IterableDataset \(Stream\)"):
        top_activations(model, [model[0]], Stream(images))


def test_top_activations_read_images_out_of_dataset_items_and_equal_the_naive_top():
    model, images = tiny_model(), tiny_images()
    items = [(image, 0, "box") for image in images]
    top = top_activations(model, [model[0]], items, k=3, batch_size=4)
    with torch.no_grad():
        conv = model[0](images)
    assert as_lists(top, "0") == naive_top([(conv, torch.arange(len(images)))], 3)


# distinct_images: each channel's top-k holds at most one activation per image


def naive_distinct_top(batches, k):
    """Each image's strongest activation per channel (of equal values the smallest
    row, then column; over every batch it appears in), sorted as naive_top."""
    channels = batches[0][0].shape[1]
    best = []
    for c in range(channels):
        strongest = {}
        for activations, indices in batches:
            for i, image in enumerate(indices.tolist()):
                fmap = activations[i, c]
                for row in range(fmap.shape[0]):
                    for col in range(fmap.shape[1]):
                        entry = (-float(fmap[row, col]), image, row, col)
                        strongest[image] = min(strongest.get(image, entry), entry)
        best.append(sorted(strongest.values())[:k])
    return best


def filled(top, name):
    """as_lists without the empty slots, which must all come last."""
    lists = as_lists(top, name)
    kept = [[e for e in channel if e[1] >= 0] for channel in lists]
    for channel, short in zip(lists, kept, strict=True):
        assert all(e == (torch.inf, -1, 0, 0) for e in channel[len(short) :])
    return kept


def distinct_state(batches, k, reverse=False):
    top = TopKActivations(k, distinct_images=True)
    for activations, indices in reversed(batches) if reverse else batches:
        top.update("layer", activations, indices)
    return top


@pytest.mark.parametrize("k", [1, 4, 30])  # 30: more slots than the 11 images
def test_distinct_images_equal_a_naive_per_image_max(k):
    batches = random_batches([3, 1, 5, 2])
    batches[1][0][0, 1] = -torch.inf  # a channel of one image all -inf
    batches[2][0][1, 0, 0, :2] = -torch.inf
    expected = naive_distinct_top(batches, k)
    if k > 1:
        assert expected != naive_top(batches, k)  # the data tell the forms apart
    for reverse in (False, True):
        assert filled(distinct_state(batches, k, reverse), "layer") == expected


@pytest.mark.parametrize("dtype", [torch.float16, torch.int64])
def test_distinct_images_shortlisted_in_blocks_of_rows(dtype, monkeypatch):
    monkeypatch.setattr("captum_deconvnet.topk.SHORTLIST_ELEMENTS", 7)  # 1 row
    batches = [(a.to(dtype), i) for a, i in random_batches([9, 7], seed=2)]
    assert filled(distinct_state(batches, 2), "layer") == naive_distinct_top(batches, 2)


def test_distinct_images_of_minus_infinity_fill_slots_before_empty_ones():
    activations = torch.full((3, 1, 2, 2), -torch.inf)
    activations[1, 0, 1, 0] = 2.0
    top = TopKActivations(5, distinct_images=True)
    top.update("layer", activations, torch.tensor([4, 0, 9]))
    values, images, rows, cols = top.entries("layer")
    assert images.tolist() == [[0, 4, 9, -1, -1]]
    assert rows.tolist() == [[1, 0, 0, 0, 0]] and cols.tolist() == [[0] * 5]
    assert values[0, 0] == 2.0 and torch.all(values[0, 1:] == -torch.inf)


def test_distinct_images_merged_in_any_order_equal_the_whole():
    batches = random_batches([2, 3, 4, 1, 3], seed=3)
    expected = naive_distinct_top(batches, 6)
    assert expected != naive_top(batches, 6)
    parts = [
        distinct_state(part, 6, reverse=True)
        for part in (batches[:2], batches[2:3], batches[3:])
    ]
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        merged = TopKActivations(6, distinct_images=True)
        for i in order:
            merged.merge(parts[i])
        assert filled(merged, "layer") == expected
    assert filled(merged.merge(parts[0]), "layer") == expected  # seen twice


def test_an_image_given_again_keeps_its_strongest_activation():
    """Indices are distinct within a batch; across updates an image's activations
    are all candidates: its strongest of all is kept, in either order."""
    batches = random_batches([4, 3], seed=4)
    images = batches[0][1]
    mirrored = (batches[0][0].flip(-1), images)  # equal maxima, other positions
    stronger = (batches[0][0].flip(-2) + 1, images)
    for seen in ([*batches, mirrored], [mirrored, *batches], [stronger, *batches]):
        top = distinct_state(seen, 3)
        assert filled(top, "layer") == naive_distinct_top(seen, 3)
        every = TopKActivations(3)
        for activations, indices in seen:
            every.update("layer", activations, indices)
        assert as_lists(every, "layer") == naive_top(seen, 3)


def test_a_repeated_activation_does_not_push_out_one_of_minus_infinity():
    top = TopKActivations(2)
    top.update("layer", torch.tensor([[5.0], [-torch.inf]]), torch.tensor([0, 1]))
    top.update("layer", torch.tensor([[3.0]]), torch.tensor([0]))
    assert top.entries("layer").images.tolist() == [[0, 1]]


def test_states_of_the_two_forms_do_not_merge():
    with pytest.raises(ValueError, match="distinct_images=False .* distinct_images"):
        TopKActivations(2, distinct_images=True).merge(TopKActivations(2))
    with pytest.raises(ValueError, match="distinct_images=True"):
        TopKActivations(2).merge(TopKActivations(2, distinct_images=True))
    with pytest.raises(TypeError, match="distinct_images must be a bool"):
        TopKActivations(2, distinct_images="yes")


def test_top_activations_of_distinct_images_equal_the_naive_top():
    model, images = tiny_model(), tiny_images()
    top = top_activations(model, [model[0]], images, k=4, distinct_images=True)
    with torch.no_grad():
        conv = model[0](images)
    expected = naive_distinct_top([(conv, torch.arange(len(images)))], 4)
    assert as_lists(top, "0") == expected
    images_per_channel = top.entries("0").images
    assert all(len(set(c)) == 4 for c in images_per_channel.tolist())


def test_integers_beyond_float64s_precision_are_refused():
    """2**53 and 2**53 + 1 are one float64: their order would be lost."""
    top = TopKActivations(k=1)
    top.update("l", torch.tensor([[2**53]]), torch.tensor([0]))  # still exact
    with pytest.raises(ValueError, match=r"beyond 2\*\*53"):
        top.update("l", torch.tensor([[2**53 + 1]]), torch.tensor([1]))


def test_activations_that_are_not_a_tensor_are_named():
    with pytest.raises(TypeError, match="activations must be a tensor.*got list"):
        TopKActivations(2).update("a", torch.zeros(2, 1, 2, 2).tolist(), [0, 1])


def test_k_may_be_a_numpy_int_but_not_a_bool():
    batches = random_batches([3, 2])
    top = TopKActivations(np.int64(4))
    for activations, indices in batches:
        top.update("layer", activations, indices)
    assert type(top.k) is int
    assert as_lists(top, "layer") == naive_top(batches, 4)
    model = tiny_model()
    scanned = top_activations(model, [model[0]], tiny_images(), np.int32(2))
    assert scanned.k == 2
    with pytest.raises(ValueError, match="k must be a positive int, got True"):
        TopKActivations(True)
