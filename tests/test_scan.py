"""The top-k scan in Lightning's predict loop: one process and two (DDP) equal the
naive top and the plain loop of ``captum_deconvnet.top_activations``."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from captum_deconvnet import top_activations
from lightning_zfnet import scan_top_activations

from .scan_ddp import scan, tiny_images, tiny_model
from .test_deconvnet_contract import snapshot
from .test_topk import as_lists, naive_top

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


def test_scan_reads_images_out_of_tuples_and_restores_the_mode():
    model, images = tiny_model().train(), tiny_images()
    items = [(image, 0, "box") for image in images]
    top = scan_top_activations(model, [model[0]], items, k=2, batch_size=8)
    assert model.training and top.layers == ["0"]
    with pytest.raises(ValueError, match="not a submodule"):
        scan_top_activations(model, [nn.ReLU()], items)


@pytest.mark.slow
def test_ddp_scan_on_two_processes_equals_one_process(tmp_path):
    command = [sys.executable, "-m", "tests.scan_ddp", str(tmp_path), "2"]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=300)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    single, _ = scan(devices=1)
    for rank in ranks:
        assert rank["state"].keys() == {"0", "4"}
        for name, entries in rank["state"].items():
            for field, value in single.entries(name)._asdict().items():
                assert torch.equal(entries[field], value), (name, field)
