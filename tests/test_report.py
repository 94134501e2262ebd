import re
import shutil

import pytest
import torch
from PIL import Image

from captum_deconvnet import project_top_activations
from lightning_zfnet import zfnet
from reports import attribution, demo, features
from reports.context import ReportContext, load_context
from reports.features import atlas_section, evolution_section
from reports.report import SECTIONS, write_report

METRICS = {"test/top1": 0.4321, "test/top5": 0.8765, "test/loss": 1.5}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # The batches here are tiny: a second thread gains little, and when the other
    # core is busy every operation waits for it (ten times slower and more).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def report(tiny_demo):
    out, result = tiny_demo
    timings = {"train_s": 12.5, "test_s": 3.25}
    with pytest.MonkeyPatch.context() as patch:
        # the benchmark on 4 images, not the demo's 16: the same section, a quarter
        # of the suite's longest setup (tests/test_compare.py checks the benchmark)
        patch.setattr(attribution, "BENCHMARK_IMAGES", (4, 2))
        path = write_report(
            result["checkpoint"], out, result["data_dir"], timings, METRICS
        )
    return path, path.read_text()


def test_every_linked_figure_is_a_png_in_the_report_folder(report):
    path, text = report
    assert path == path.parent / "report.md"
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    # filters, 5 atlases, evolution, invariance, table 1, 3 occlusions, 2 benchmark
    assert len(links) >= 14
    for link in links:
        assert re.match(r"(figures|benchmark)/.+\.png$", link)
        with Image.open(path.parent / link) as image:
            image.verify()
    assert len(set(links)) == len(links)


def test_the_report_states_the_metrics_and_times_it_was_given(report):
    _, text = report
    assert "top-1 **43.21 %**" in text
    assert "top-5 **87.65 %**" in text
    assert "| training | 12.5 |" in text and "| testing | 3.2 |" in text
    for title, _ in SECTIONS:
        assert f"## {title}\n" in text
        assert re.search(rf"\| {re.escape(title)} \| \d+\.\d \|", text)


def test_the_figures_of_training_and_the_table_are_in_the_report(report):
    _, text = report
    # The default config records feature evolution; the report shows its layers
    # in the network's order.
    places = [text.index(f"(figures/evolution_{n}.png)") for n in ("conv1", "conv2")]
    assert places[0] < places[1] < text.index("(figures/evolution_conv5.png)")
    rows = re.findall(r"^\| (.+?) \| (\d\.\d{3}) \| (\d\.\d{3}) \|$", text, re.M)
    assert [row[0] for row in rows] == [
        "top third",
        "middle third",
        "bottom third",
        "random place on the item",
    ]


def test_the_occlusion_figures_and_the_benchmark_table_are_in_the_report(report):
    path, text = report
    assert "![occlusion of image 2](figures/occlusion_2.png)" in text
    for method in ("DeconvNet", "OcclusionSensitivity", "LayerGradCam", "random"):
        assert f"\n| {method} | " in text
    assert (path.parent / "benchmark" / "results.json").exists()


def test_the_demo_writes_the_report_and_says_where(tiny_demo, monkeypatch, capsys):
    out, result = tiny_demo
    calls = []

    def record(*args):
        calls.append(args)
        return out / "report.md"

    monkeypatch.setattr(demo, "train_default", lambda out: result)
    monkeypatch.setattr(demo, "write_report", record)
    monkeypatch.setattr(demo, "explore", lambda result, out: None)  # test_explorer
    demo.main(["--out", str(out)])
    assert calls == [
        (
            result["checkpoint"],
            out,
            result["data_dir"],
            result["timings"],
            result["metrics"],
        )
    ]
    assert f"report:     {out / 'report.md'}" in capsys.readouterr().out


def test_a_checkpoint_trained_without_evolution_says_so(tiny_demo, tmp_path):
    _, result = tiny_demo
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir()
    shutil.copyfile(result["checkpoint"], checkpoint)
    context = load_context(checkpoint, tmp_path, result["data_dir"])
    assert evolution_section(context).startswith("No pictures")


def test_the_atlas_shows_each_channels_activations_from_different_images(
    tmp_path, monkeypatch
):
    """The paper's Fig. 2: a channel's 9 activations come from 9 images."""
    torch.manual_seed(0)
    model = zfnet(num_classes=3, in_channels=1, input_size=64, width=0.25).eval()
    images = torch.randn(12, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    context = ReportContext(
        model, images, torch.zeros(12), torch.zeros(12, 4), 0.0, ["a", "b", "c"], {},
        12, tmp_path / "last.ckpt", tmp_path,
    )  # fmt: skip
    shown = []

    def recording(model, top, *args, **kwargs):
        shown.append((top, kwargs["channels"]))
        return project_top_activations(model, top, *args, **kwargs)

    monkeypatch.setattr(features, "project_top_activations", recording)
    text = atlas_section(context)
    ((top, channels),) = shown
    assert len(channels) == 5 and "### conv5" in text
    for name, chosen in channels.items():
        for found in top.entries(name).images[chosen].tolist():
            assert len(set(found)) == 9 and min(found) >= 0, (name, found)
