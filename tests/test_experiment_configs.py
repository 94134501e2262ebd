"""The variant and transfer configs run through the ``zfnet`` command."""

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from torchvision.datasets import FashionMNIST

from lightning_zfnet import ZFNetModule
from lightning_zfnet.cli import main, run_cli

from .test_transfer import _source

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = sorted((ROOT / "configs" / "variants").glob("*.yaml"))
QUIET = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.accelerator=cpu",
]


@pytest.mark.parametrize(
    "base", ["fashion_mnist.yaml", "cluttered_fashion_mnist.yaml", "imagenet.yaml"]
)
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda p: p.stem)
def test_variants_overlay_any_base_config(base, variant, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                str(ROOT / "configs" / base),
                "--config",
                str(variant),
                "--print_config",
            ]
        )
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    overlay = yaml.safe_load(variant.read_text())["model"]
    assert {key: printed[key] for key in overlay} == overlay
    assert printed["momentum"] == 0.9  # the base config's settings stay
    if base != "imagenet.yaml":  # and the network builds (at the data's size)
        ZFNetModule(
            **{**printed, "num_classes": 10, "in_channels": 1, "input_size": 64}
        )


def test_digits_transfer_config_fits_and_tests(tmp_path, capsys):
    pytest.importorskip("sklearn")
    source = _source(tmp_path / "source.ckpt")
    args = [
        "--config",
        str(ROOT / "configs" / "transfer" / "digits.yaml"),
        f"--model.checkpoint={source}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.max_steps=3",
        "--data.per_class=2",
        "--data.test_per_class=3",
        *QUIET,
    ]
    cli = run_cli(["fit", *args])
    assert type(cli.model).__name__ == "TransferModule"
    assert cli.model.hparams.num_classes == 10 and cli.model.frozen
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    tested = run_cli(["test", *args, f"--ckpt_path={ckpt}"])
    metrics = tested.trainer.callback_metrics
    assert {"test/top1", "test/mean_class_top1"} <= set(metrics)
    # predict writes each test image's classes, as the test counted them
    run_cli(["predict", *args, f"--ckpt_path={ckpt}"])
    with open(tmp_path / "predict" / "version_0" / "predictions.csv") as file:
        rows = list(csv.DictReader(file))
    assert sorted(int(row["label"]) for row in rows) == sorted(list(range(10)) * 3)
    right = [row["class_1"] == row["label"] for row in rows]
    assert sum(right) / len(rows) == pytest.approx(float(metrics["test/top1"]))
    # another draw's test images would include this fit's training images: a bad
    # command line (exit code 2, one line)
    for option in ("--data.seed=1", "--data.per_class=3"):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(["test", *args, option, f"--ckpt_path={ckpt}"])
        assert exit_info.value.code == 2
        name = option.removeprefix("--data.").split("=")[0]
        fitted = {"seed": 0, "per_class": 2}[name]
        assert capsys.readouterr().err.splitlines()[-1] == (
            f"error: {ckpt} was fit on another draw of labelled images than this test "
            f"would use ({{'{name}': {fitted}}}), so its test images would include "
            f"training images: add --data.{name} {fitted}"
        )


def test_fashion_mnist_source_and_target_configs_run(fake_data_dir, tmp_path):
    source = run_cli(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "fashion_mnist.yaml"),
            "--config",
            str(ROOT / "configs" / "transfer" / "fashion_mnist_0_4.yaml"),
            f"--data.init_args.data_dir={fake_data_dir}",
            "--data.init_args.val_size=16",
            "--model.width=0.1",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'source'}",
            *QUIET,
        ]
    )
    assert source.model.hparams.num_classes == 5
    checkpoint = tmp_path / "source" / "checkpoints" / "last.ckpt"
    target = run_cli(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "transfer" / "fashion_mnist_5_9.yaml"),
            f"--model.checkpoint={checkpoint}",
            f"--data.data_dir={fake_data_dir}",
            "--data.per_class=2",
            "--data.test_per_class=2",
            "--trainer.max_steps=2",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'target'}",
            *QUIET,
        ]
    )
    assert target.model.hparams.num_classes == 5
    (metrics,) = target.trainer.test(target.model, datamodule=target.datamodule)
    assert 0.0 <= metrics["test/mean_class_top1"] <= 1.0


def test_a_budget_too_large_names_the_class_by_its_fashion_mnist_label(
    fake_data_dir, tmp_path, capsys
):
    """The 5-9 target labels Fashion-MNIST's classes 5-9 as 0-4; the refusal named
    the user's class 5 "class 0"."""
    labels = FashionMNIST(str(fake_data_dir), train=True).targets
    counts = {c: int((labels == c).sum()) for c in range(5, 10)}
    smallest = min(counts, key=counts.get)  # the first of the smallest classes
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                str(ROOT / "configs" / "transfer" / "fashion_mnist_5_9.yaml"),
                f"--model.checkpoint={_source(tmp_path / 'source.ckpt')}",
                f"--data.data_dir={fake_data_dir}",
                "--data.per_class=100",
                f"--trainer.logger.init_args.save_dir={tmp_path / 'run'}",
                *QUIET,
            ]
        )
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: --data (FewShotFashionMNISTDataModule): class "
        f"{smallest} (label {smallest - 5} here) has {counts[smallest]} examples: "
        f"too few for per_class=100 and a test example; give a per_class below "
        f"{counts[smallest]}"
    )
    assert not (tmp_path / "run").exists()


def test_caltech_config_runs_on_a_folder_of_classes(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("accordion", "airplanes", "anchor"):
        (tmp_path / "101" / name).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, (70, 80, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "101" / name / f"{i}.jpg")
    source = _source(tmp_path / "source.ckpt", in_channels=3)
    run_cli(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "transfer" / "caltech101.yaml"),
            f"--model.checkpoint={source}",
            f"--data.data_dir={tmp_path / '101'}",
            "--data.per_class=2",
            "--data.image_size=64",
            "--data.resize=72",
            "--data.num_workers=0",
            "--data.batch_size=4",
            "--trainer.precision=32",
            "--trainer.max_epochs=1",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            *QUIET,
        ]
    )
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
