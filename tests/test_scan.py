"""The top-k scan in Lightning's predict loop: one process and two (DDP) equal the
naive top and the plain loop of ``captum_deconvnet.top_activations``."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from captum_deconvnet import top_activations
from lightning_zfnet import TopKWriter, scan_top_activations
from lightning_zfnet.scan import top_k_compute

from .helpers import Stream
from .scan_ddp import scan, tiny_images, tiny_model
from .test_deconvnet_contract import snapshot
from .test_topk import as_lists, naive_distinct_top, naive_top

ROOT = Path(__file__).resolve().parents[1]


def test_scan_with_a_trainer_equals_the_naive_top():
    model, images = tiny_model(), tiny_images()
    before = snapshot(model)
    top, _ = scan(devices=1)
    assert snapshot(model) == before  # also: no hook left behind
    with torch.no_grad():
        conv = model[0](images)  # before the in-place ReLU
        last = model(images)
    indices = torch.arange(len(images))
    assert top.layers == ["0", "4"]
    assert as_lists(top, "0") == naive_top([(conv, indices)], 5)
    assert as_lists(top, "4") == naive_top([(last, indices)], 5)


def test_top_activations_without_a_trainer_equal_the_scan():
    model = tiny_model()
    without = top_activations(model, [model[0], model[4]], tiny_images(), 5, 8)
    top, _ = scan(devices=1)
    for name in ("0", "4"):
        assert as_lists(without, name) == as_lists(top, name)


@pytest.mark.parametrize("wrap", [torch.compile, nn.DataParallel])
def test_a_wrapped_model_is_scanned_as_the_module_it_holds(wrap):
    """Layers are named inside the wrapper, as top_activations names them."""
    model, images = tiny_model(), tiny_images()
    plain = top_activations(model, [model[0]], images, 3)
    top = scan_top_activations(wrap(model), [model[0]], images, k=3, batch_size=8)
    assert top.layers == plain.layers == ["0"]
    assert as_lists(top, "0") == as_lists(plain, "0")


def test_scan_reads_images_out_of_tuples_and_restores_the_mode():
    model, images = tiny_model().train(), tiny_images()
    items = [(image, 0, "box") for image in images]
    top = scan_top_activations(model, [model[0]], items, k=2, batch_size=8)
    assert model.training and top.layers == ["0"]
    with pytest.raises(ValueError, match="not a submodule"):
        scan_top_activations(model, [nn.ReLU()], items)
    with pytest.raises(TypeError, match="dataset's batches must be a tensor.*list"):
        scan_top_activations(model, [model[0]], images[:4].tolist())
    # refused before the trainer starts (a TypeError on subscripting a loader,
    # a NotImplementedError from inside the predict loop for an iterable)
    with pytest.raises(TypeError, match="not a DataLoader"):
        scan_top_activations(model, [model[0]], DataLoader(images, batch_size=8))

    with pytest.raises(TypeError, match=r"not an IterableDataset \(Stream\)"):
        scan_top_activations(model, [model[0]], Stream(images))


def test_scan_of_distinct_images_equals_the_naive_per_image_max():
    model, images = tiny_model(), tiny_images()
    top, _ = scan(devices=1, distinct_images=True)
    with torch.no_grad():
        conv = model[0](images)
        last = model(images)
    indices = torch.arange(len(images))
    for name, maps in (("0", conv), ("4", last)):
        assert as_lists(top, name) == naive_distinct_top([(maps, indices)], 5)
    # conv's top 5 of (image, position) pairs repeat images
    assert as_lists(top, "0") != naive_top([(conv, indices)], 5)


@pytest.mark.parametrize("distinct_images", [False, True])
def test_rank_zero_merges_the_batches_in_any_order(distinct_images):
    """As under DDP: rank 0's writer gets the batches' states in the order the
    processes' steps gather them."""
    model, images = tiny_model(), tiny_images()
    compute = top_k_compute(["0"], 3, distinct_images=distinct_images)
    batches = torch.arange(len(images)).split(4)
    results = [compute(model, i, images[i]) for i in batches]
    with torch.no_grad():
        conv = model[0](images)
    naive = naive_distinct_top if distinct_images else naive_top
    expected = naive([(conv, torch.arange(len(images)))], 3)
    for seed in range(3):
        writer = TopKWriter(3, len(images), distinct_images=distinct_images)
        for number in torch.randperm(
            len(batches), generator=torch.Generator().manual_seed(seed)
        ):
            writer.write(int(number), results[number])
        assert as_lists(writer.close().top, "0") == expected
    other = TopKWriter(3, len(images), distinct_images=not distinct_images)
    with pytest.raises(ValueError, match="distinct_images"):
        other.write(0, results[0])


def saved_scan(path, distinct_images):
    """A scan file holding the first batch of 4 images."""
    model, images = tiny_model(), tiny_images()
    compute = top_k_compute(["0"], 3, distinct_images=distinct_images)
    writer = TopKWriter(3, len(images), path, distinct_images=distinct_images)
    writer.write(0, compute(model, torch.arange(4), images[:4]))
    writer.close()
    return len(images)


def test_a_saved_scan_of_the_other_form_is_not_resumed(tmp_path):
    size = saved_scan(tmp_path / "scan.pt", distinct_images=True)
    resumed = TopKWriter(3, size, tmp_path / "scan.pt", distinct_images=True)
    assert resumed.written() == {0} and resumed.result.top.distinct_images
    with pytest.raises(ValueError, match="distinct_images=True, not .*=False"):
        TopKWriter(3, size, tmp_path / "scan.pt")
    # A file saved before the option existed holds a scan of every position.
    saved_scan(tmp_path / "older.pt", distinct_images=False)
    saved = torch.load(tmp_path / "older.pt", weights_only=False)
    del saved["distinct_images"], saved["result"].top.__dict__["distinct_images"]
    torch.save(saved, tmp_path / "older.pt")
    older = TopKWriter(3, size, tmp_path / "older.pt")
    assert older.written() == {0} and not older.result.top.distinct_images
    with pytest.raises(ValueError, match="distinct_images=False, not .*=True"):
        TopKWriter(3, size, tmp_path / "older.pt", distinct_images=True)


@pytest.mark.slow
def test_ddp_scan_on_two_processes_equals_one_process(tmp_path):
    command = [sys.executable, "-m", "tests.scan_ddp", str(tmp_path), "2"]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=300)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    for form, distinct_images in (("state", False), ("distinct", True)):
        single, _ = scan(devices=1, distinct_images=distinct_images)
        for rank in ranks:
            assert rank[form].keys() == {"0", "4"}
            for name, entries in rank[form].items():
                for field, value in single.entries(name)._asdict().items():
                    assert torch.equal(entries[field], value), (form, name, field)
