import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from lightning_zfnet import ZFNetModule
from lightning_zfnet.cli import main
from lightning_zfnet.data import ClutteredFashionMNISTDataModule
from tests.helpers import tiny_training_args

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_configs_parse(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["momentum"] == 0.9


@pytest.mark.parametrize(
    "option, refusal",
    [
        ("--data.batch_size=0", "--data (ClutteredFashionMNISTDataModule): "
         "batch_size must be positive, got 0"),
        ("--model.dropout=1.5", "--model (ZFNetModule): "
         "dropout must be in [0, 1), got 1.5"),
        ("--model.lr=-0.1", "--model (ZFNetModule): lr must be positive, got -0.1"),
        ("--data.image_size=28", "--model (ZFNetModule): input_size 28 is too "
         "small for this network: its smallest input is 29x29 pixels (the model's "
         "input_size is --data.image_size)"),
        ("--trainer.callbacks+=lightning_zfnet.PredictionWriter "
         "--trainer.callbacks.top_k=0", "--trainer.callbacks (PredictionWriter): "
         "top_k must be a positive int, got 0"),
        ("--data.val_size=0", "--data (ClutteredFashionMNISTDataModule): "
         "val_size must be positive, got 0"),
        ("--data.fragment_size=29", "--data (ClutteredFashionMNISTDataModule): "
         "fragment_size must be in (0, 28], got 29"),
        ("--trainer.max_epochs=-5", "--trainer (Trainer): `max_epochs` must be a "
         "non-negative integer or -1. You passed in -5."),
    ],
    ids=["batch_size", "dropout", "lr", "image_size", "callback", "val_size",
         "fragment_size", "max_epochs"],
)  # fmt: skip
def test_a_value_out_of_range_is_a_bad_command_line(option, refusal, tmp_path, capsys):
    """As jsonargparse reports a value of the wrong type: exit code 2 and one line
    naming the option, the value and what it may be (the constructor's words)."""
    args = ["fit", "--config", str(ROOT / "configs" / "cluttered_fashion_mnist.yaml")]
    args.append(f"--trainer.logger.init_args.save_dir={tmp_path / 'run'}")
    with pytest.raises(SystemExit) as exit_info:
        main([*args, *option.split()])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {refusal}"
    assert not (tmp_path / "run").exists()


def test_a_missing_folder_or_checkpoint_is_a_bad_command_line(tmp_path, capsys):
    """A data folder, a class folder without images or a transfer source that is
    not there: exit code 2 and one line (they were tracebacks, or jsonargparse's
    dump of the model's arguments)."""
    (tmp_path / "pool" / "cat").mkdir(parents=True)
    Image.new("RGB", (9, 7)).save(tmp_path / "pool" / "cat" / "0.png")
    (tmp_path / "pool" / "dog").mkdir()  # no image
    imagenet = [str(ROOT / "configs" / "imagenet.yaml"), "--trainer.devices=1"]
    imagenet += ["--trainer.accelerator=cpu", "--trainer.strategy=auto"]
    source = ZFNetModule(in_channels=3, input_size=64, width=0.05)
    saved = {"hyper_parameters": dict(source.hparams)}
    torch.save({**saved, "state_dict": source.state_dict()}, tmp_path / "source.ckpt")
    caltech = [str(ROOT / "configs" / "transfer" / "caltech101.yaml")]
    caltech += [
        "--trainer.accelerator=cpu",
        f"--model.checkpoint={tmp_path}/source.ckpt",
    ]
    caltech += ["--data.image_size=64", "--data.resize=64"]
    cases = [
        ([*imagenet, f"--data.data_dir={tmp_path}/no"],
         f"--data (ImageNetDataModule): no 'train' folder in '{tmp_path}/no'"),
        ([*caltech, f"--data.data_dir={tmp_path}/no"],
         f"--data (FewShotImageFolderDataModule): no folder '{tmp_path}/no'"),
        ([*caltech, f"--data.data_dir={tmp_path}/pool"],
         "--data (FewShotImageFolderDataModule): Found no valid file for the "
         "classes dog."),
        ([str(ROOT / "configs" / "transfer" / "digits.yaml"),
          f"--model.checkpoint={tmp_path}/no.ckpt"],
         f"--model (TransferModule): no checkpoint file '{tmp_path}/no.ckpt'"),
    ]  # fmt: skip
    for args, refusal in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", *args])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1].startswith(f"error: {refusal}")


@pytest.mark.parametrize("subcommand", ["fit", "predict"])
def test_a_command_line_without_a_config_points_to_the_configs(subcommand, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([subcommand])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("error: the following arguments are required: ")
    example = "configs/cluttered_fashion_mnist.yaml"
    assert error.endswith(
        f"; a config from the project's configs/ folder ({ROOT / 'configs'}) gives "
        f"the model and data, e.g. --config {example}"
    )
    assert (ROOT / example).is_file()


def test_imagenet_config_is_for_8_gpus_with_ddp_and_bf16():
    config = yaml.safe_load((ROOT / "configs" / "imagenet.yaml").read_text())
    trainer = config["trainer"]
    assert (trainer["devices"], trainer["strategy"], trainer["precision"]) == (
        8,
        "ddp",
        "bf16-mixed",
    )


def _args(data_dir, out):
    return [
        "--config",
        str(ROOT / "configs" / "cluttered_fashion_mnist.yaml"),
        f"--data.init_args.data_dir={data_dir}",
        "--data.init_args.batch_size=16",
        "--data.init_args.val_size=64",
        "--data.init_args.num_workers=0",
        "--model.width=0.25",
        f"--trainer.logger.init_args.save_dir={out}",
        "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
    ]


def test_fit_links_data_shape_into_the_model(fake_data_dir, tmp_path):
    main(
        [
            "fit",
            *_args(fake_data_dir, tmp_path),
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
        ]
    )
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    module = ZFNetModule.load_from_checkpoint(ckpt, weights_only=True)
    assert module.hparams.num_classes == 10
    assert module.hparams.in_channels == 1
    assert module.hparams.input_size == 64
    main(["test", *_args(fake_data_dir, tmp_path), f"--ckpt_path={ckpt}"])


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_keeps_ranks_identical(fake_data_dir, tmp_path):
    dump = tmp_path / "dump"
    command = [
        sys.executable,
        "-m",
        "lightning_zfnet.cli",
        "fit",
        *_args(fake_data_dir, tmp_path),
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        # float32, so that the reference below computes the very same logits
        "--trainer.precision=32-true",
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=3",
        "--trainer.callbacks+=tests.helpers.DumpRankState",
        f"--trainer.callbacks.directory={dump}",
    ]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=300)
    ranks = [torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name
    assert ranks[0]["metrics"] == ranks[1]["metrics"]

    # The synchronised validation accuracy is that of the final weights on the whole
    # validation split, evaluated here in one process.
    # The CLI adds private entries (its instantiator) to the saved hyperparameters.
    hparams = {k: v for k, v in ranks[0]["hparams"].items() if not k.startswith("_")}
    module = ZFNetModule(**hparams)
    module.load_state_dict(ranks[0]["state"])
    module.eval()
    dm = ClutteredFashionMNISTDataModule(str(fake_data_dir), val_size=64)
    dm.setup("fit")
    x, y, _ = next(iter(torch.utils.data.DataLoader(dm.val_set, batch_size=64)))
    with torch.no_grad():
        accuracy = (module(x).argmax(1) == y).float().mean().item()
    assert ranks[0]["metrics"]["val/top1"] == pytest.approx(accuracy, abs=1e-6)


def test_demo_trains_once_then_reuses_the_checkpoint(fake_data_dir, tmp_path):
    from lightning_zfnet import train_default

    extra = tiny_training_args(fake_data_dir)
    first = train_default(tmp_path, extra=extra)
    assert set(first["timings"]) == {"train_s", "test_s"}
    assert 0.0 <= first["metrics"]["test/top1"] <= 1.0
    assert (tmp_path / "train" / "metrics.csv").exists()
    second = train_default(tmp_path, extra=extra)
    assert set(second["timings"]) == {"test_s"}
    assert second["metrics"]["test/top1"] == first["metrics"]["test/top1"]
