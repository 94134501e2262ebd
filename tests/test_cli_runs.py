"""The ``zfnet`` command as users run it: resume, evaluation folders, predictions,
stray files, exit codes and option spelling, on tiny data."""

import csv
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from pytorch_lightning.callbacks import LearningRateMonitor
from torchvision.datasets import FashionMNIST

from lightning_zfnet import ZFNetModule
from lightning_zfnet.cli import main, run_cli
from lightning_zfnet.data import ClutteredFashionMNISTDataModule
from tests.helpers import tiny_training_args

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "cluttered_fashion_mnist.yaml"
# As many threads as this process: sums then run in the same order in both.
THREADS = str(torch.get_num_threads())
ENV = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": THREADS}


def _fit_args(data_dir, out, *extra):
    return [
        "fit",
        "--config",
        str(CONFIG),
        f"--trainer.logger.init_args.save_dir={out}",
        *tiny_training_args(data_dir),
        *extra,
    ]


def _zfnet(args, **kwargs):
    """The command in a process of its own, as a shell or a scheduler starts it:
    with Ctrl-C's default action, whatever this process left it at (Lightning's
    DDP teardown ignores SIGINT for a while, and a child inherits an ignored signal,
    so that a Ctrl-C would not reach it)."""
    command = [sys.executable, "-m", "lightning_zfnet.cli", *map(str, args)]
    return subprocess.run(
        command,
        cwd=kwargs.pop("cwd", ROOT),
        env=ENV,
        timeout=300,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kwargs,
    )


def _rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_fit_stopped_by_ctrl_c_and_resumed_equals_an_uninterrupted_fit(
    fake_data_dir, tmp_path
):
    # Three epochs of 4 steps with two loader workers, flips and shifts, dropout,
    # every step logged and feature pictures after each epoch; Ctrl-C in epoch 2.
    extra = [
        "--trainer.max_epochs=3",
        "--trainer.limit_train_batches=4",
        "--trainer.limit_val_batches=2",
        "--trainer.log_every_n_steps=1",
        "--data.init_args.batch_size=16",
        "--data.init_args.num_workers=2",
        "--model.dropout=0.5",
        "--trainer.callbacks.init_args.epochs=[1, 2, 3]",  # FeatureEvolution's
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    main(_fit_args(fake_data_dir, straight, *extra))
    interrupt = [
        "--trainer.callbacks+=tests.helpers.SignalAt",
        "--trainer.callbacks.step=6",
    ]
    killed = _zfnet(_fit_args(fake_data_dir, resumed, *extra, *interrupt))
    assert killed.returncode == 1  # Lightning's exit after Ctrl-C
    assert torch.load(resumed / "checkpoints" / "last.ckpt")["global_step"] == 4
    main([*_fit_args(fake_data_dir, resumed, *extra), "--ckpt_path=last"])

    runs = (straight, resumed)
    ends = [torch.load(run / "checkpoints" / "last.ckpt") for run in runs]
    assert ends[0]["global_step"] == ends[1]["global_step"] == 12
    for name, value in ends[0]["state_dict"].items():
        assert torch.equal(value, ends[1]["state_dict"][name]), name
    # every logged number, the first epoch's included
    rows = _rows(resumed / "metrics.csv")
    assert rows == _rows(straight / "metrics.csv")
    assert [r["step"] for r in rows if r["train/loss"]] == [str(s) for s in range(12)]
    # the evolution picture has a column for each of the three epochs
    picture = "model.features.13_evolution.png"
    pictures = [Image.open(run / "feature_evolution" / picture) for run in runs]
    assert pictures[0].tobytes() == pictures[1].tobytes()
    shown = ends[1]["callbacks"]["FeatureEvolution"]["history"]["model.features.13"]
    assert [epoch for epoch, _ in shown] == [1, 2, 3]


@pytest.fixture(scope="module")
def trained(fake_data_dir, tmp_path_factory):
    """A one-epoch fit of the default config: its folder and a copy of its files."""
    out = tmp_path_factory.mktemp("trained")
    main(_fit_args(fake_data_dir, out))
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    return out, files


def test_evaluations_log_apart_and_predict_writes_top_k(fake_data_dir, trained):
    out, files = trained
    checkpoint = out / "checkpoints" / "last.ckpt"
    for subcommand in ("validate", "test", "predict"):
        # float32, as the reference below computes (the config's bf16 autocast can
        # reorder near-tied classes)
        args = _fit_args(fake_data_dir, out, "--trainer.precision=32-true")
        args[0] = subcommand
        main([*args, f"--ckpt_path={checkpoint}"])
        assert (out / subcommand / "version_0" / "config.yaml").is_file()
    # "last" is the training's last checkpoint, also when the test logs apart
    args[0] = "test"
    main([*args, "--ckpt_path=last"])
    saved = (out / "test" / "version_1" / "config.yaml").read_text()
    assert f"ckpt_path: {checkpoint}" in saved
    # the training's files are all there, unchanged
    assert {p: p.read_bytes() for p in files} == files
    assert _rows(out / "test" / "version_0" / "metrics.csv")[0]["test/top1"]

    rows = _rows(out / "predict" / "version_0" / "predictions.csv")
    columns = {key: [float(r[key]) for r in rows] for key in rows[0]}
    _assert_top5_of_test_images(columns, checkpoint)


def _assert_top5_of_test_images(columns, checkpoint):
    """``columns`` (index, label, class_j, probability_j) are those of the model in
    ``checkpoint`` on every test image, in order, computed here in one batch."""
    module = ZFNetModule.load_from_checkpoint(checkpoint, weights_only=True).eval()
    data = ClutteredFashionMNISTDataModule.from_checkpoint(checkpoint)
    data.setup("test")
    items = [data.test_set[i] for i in range(len(data.test_set))]
    images, labels, _ = zip(*items, strict=True)
    with torch.no_grad():
        probabilities = module(torch.stack(images)).softmax(1)
    top, classes = probabilities.topk(5, dim=1)
    assert columns["index"] == list(range(len(data.test_set)))
    assert columns["label"] == [int(y) for y in labels]
    for j in range(5):
        assert columns[f"class_{j + 1}"] == classes[:, j].tolist()
        written = torch.tensor(columns[f"probability_{j + 1}"])
        torch.testing.assert_close(written, top[:, j])


@pytest.mark.slow
def test_predict_under_ddp_writes_one_file_of_all_images(
    fake_data_dir, trained, tmp_path
):
    checkpoint = trained[0] / "checkpoints" / "last.ckpt"
    args = _fit_args(fake_data_dir, tmp_path, "--trainer.precision=32-true")
    args[0] = "predict"
    ddp = [
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--data.init_args.batch_size=24",  # 64 images: uneven batches per process
        "--trainer.callbacks+=lightning_zfnet.PredictionWriter",
        "--trainer.callbacks.output=top5.pt",
        f"--ckpt_path={checkpoint}",
    ]
    _zfnet([*args, *ddp], check=True)
    folder = tmp_path / "predict" / "version_0"
    tensors = torch.load(folder / "top5.pt")
    columns = {"index": tensors["index"].tolist(), "label": tensors["label"].tolist()}
    for j in range(5):
        columns[f"class_{j + 1}"] = tensors["classes"][:, j].tolist()
        columns[f"probability_{j + 1}"] = tensors["probabilities"][:, j].tolist()
    _assert_top5_of_test_images(columns, checkpoint)
    assert len(_rows(folder / "predictions.csv")) == 64  # the config's writer


@pytest.mark.parametrize("subcommand", ["fit", "predict"])
def test_fast_dev_run_writes_nothing_anywhere(
    subcommand, fake_data_dir, tmp_path, monkeypatch
):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    args = _fit_args(fake_data_dir, tmp_path / "run", "--trainer.fast_dev_run=true")
    main([subcommand, *args[1:]])  # predict: the config's PredictionWriter too
    assert list(tmp_path.rglob("*")) == [cwd]


@pytest.mark.slow
def test_sigterm_ends_a_fit_with_exit_code_143(fake_data_dir, tmp_path):
    sigterm = ["--trainer.callbacks+=tests.helpers.SignalAt"]
    sigterm += ["--trainer.callbacks.step=1", "--trainer.callbacks.signal=SIGTERM"]
    killed = _zfnet([*_fit_args(fake_data_dir, tmp_path), *sigterm])
    assert killed.returncode == 143  # step 1 of 2: the fit did not finish


def _refused(args, capsys):
    """The last line that ``zfnet args`` writes to stderr, after checking that it
    exits with 2 (a bad command line), as jsonargparse exits for a misspelt
    option."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


def test_resuming_last_without_a_checkpoint_is_an_error(
    fake_data_dir, tmp_path, capsys
):
    refusal = _refused(
        [*_fit_args(fake_data_dir, tmp_path), "--ckpt_path=last"], capsys
    )
    assert refusal.startswith(
        f"error: --ckpt_path last: no last checkpoint under {tmp_path}"
    )
    assert refusal.endswith(
        "so there is nothing to resume. Leave out --ckpt_path "
        "to start a new fit, or give the checkpoint's path."
    )
    assert not (tmp_path / "checkpoints").exists()


def test_a_misspelt_option_is_an_error(capsys):
    for option in ("--trainer.max_epoch", "--trainer.max_epochs"):
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", str(CONFIG), option, "2", "--print_config"])
        expected = 2 if option.endswith("epoch") else 0
        assert exit_info.value.code == expected, option
    assert "unrecognized arguments: --trainer.max_epoch 2" in capsys.readouterr().err


def test_extending_a_finished_one_cycle_is_refused(
    fake_data_dir, trained, tmp_path, capsys
):
    shutil.copytree(trained[0], tmp_path, dirs_exist_ok=True)
    config = (tmp_path / "config.yaml").read_text()
    longer = _fit_args(fake_data_dir, tmp_path, "--trainer.max_epochs=2")
    refusal = _refused([*longer, "--ckpt_path=last"], capsys)
    assert refusal.startswith(
        "error: the checkpoint's 'onecycle' schedule spans 2 steps, this fit 4: "
        "the schedule is fitted to the whole run and cannot be extended."
    )
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 2
    # the run's config is left as it was, so that it can be resumed from it
    assert (tmp_path / "config.yaml").read_text() == config


def test_a_new_fit_into_the_folder_of_an_earlier_fit_is_refused(
    fake_data_dir, trained, tmp_path, capsys
):
    """It replaced the earlier fit's config.yaml and metrics.csv and saved its own
    checkpoints beside, as last-v1.ckpt, while an evaluation's --ckpt_path last
    took the earlier fit's last.ckpt."""
    shutil.copytree(trained[0], tmp_path, dirs_exist_ok=True)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    again = _fit_args(fake_data_dir, tmp_path, "--model.lr=0.01")
    refusal = _refused(again, capsys)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert refusal.startswith(f"error: {last}: an earlier fit's last checkpoint")
    assert refusal.endswith(
        "(--trainer.logger.init_args.save_dir, or --trainer.default_root_dir "
        "without a logger)"
    )
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def test_an_unbounded_one_cycle_fit_is_refused(fake_data_dir, tmp_path, capsys):
    unbounded = _fit_args(fake_data_dir, tmp_path, "--trainer.max_epochs=-1")
    refusal = _refused(unbounded, capsys)
    assert refusal.startswith(
        "error: the 'onecycle' schedule is fitted to the whole run, which here has "
        "inf optimiser steps: bound the run"
    )
    assert not tmp_path.joinpath("checkpoints").exists()


def test_resume_from_a_missing_checkpoint_or_last_under_fast_dev_run_is_named(
    fake_data_dir, tmp_path, capsys
):
    missing = tmp_path / "nope.ckpt"
    args = [*_fit_args(fake_data_dir, tmp_path), f"--ckpt_path={missing}"]
    assert _refused(args, capsys) == (
        f"error: --ckpt_path {missing}: no such file; give an existing checkpoint, "
        "or --ckpt_path last for the training's last one"
    )
    assert list(tmp_path.iterdir()) == []  # named before the logger's folder
    quick = _fit_args(fake_data_dir, tmp_path, "--trainer.fast_dev_run=true")
    refusal = _refused([*quick, "--ckpt_path=last"], capsys)
    assert refusal.startswith("error: --ckpt_path last: fast_dev_run runs without")


@pytest.mark.parametrize(
    "subcommand, checkpoint",
    [("test", "checkpoints/last.ckpt"), ("test", "last"),
     ("fit", "checkpoints/last.ckpt")],
)  # fmt: skip
def test_settings_that_a_checkpoint_replaces_are_named(
    subcommand, checkpoint, fake_data_dir, trained, tmp_path
):
    """LightningCLI builds the model from the checkpoint's hyperparameters, in place
    of those given, and said nothing; "last" now builds it as its path does."""
    shutil.copytree(trained[0], tmp_path, dirs_exist_ok=True)
    path = tmp_path / "checkpoints" / "last.ckpt"
    saved = torch.load(path, weights_only=True)["hyper_parameters"]
    args = _fit_args(fake_data_dir, tmp_path, "--trainer.limit_test_batches=1")
    checkpoint = checkpoint if checkpoint == "last" else tmp_path / checkpoint
    args = [subcommand, *args[1:], f"--ckpt_path={checkpoint}"]
    given = {"lr": saved["lr"] * 2, "dropout": saved["dropout"]}  # dropout: equal
    options = [f"--model.{name}={value}" for name, value in given.items()]
    with pytest.warns(UserWarning, match="replace these settings") as warned:
        cli = run_cli([*args, *options])
    named = [str(w.message) for w in warned if "replace these" in str(w.message)]
    assert named == [
        f"--ckpt_path {path}: the model is built with the checkpoint's "
        "hyperparameters (LightningCLI's rule), which replace these settings: "
        f"--model.lr {given['lr']} ({saved['lr']} in the checkpoint)"
    ]
    assert cli.model.hparams.lr == saved["lr"]
    with warnings.catch_warnings():  # the checkpoint's own values: nothing to say
        warnings.filterwarnings("error", message=".*replace these settings")
        run_cli([*args, f"--model.lr={saved['lr']}"])


def test_resuming_last_with_other_model_settings_is_refused(
    fake_data_dir, trained, tmp_path, capsys
):
    """The model is built before "last" is found, from the command line: its
    settings would be used (dropout) or contradict the optimiser's restored state
    (lr) and the checkpoint's, and hparams.yaml would record them."""
    shutil.copytree(trained[0], tmp_path, dirs_exist_ok=True)
    files = _contents(tmp_path)
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    dropout = saved["hyper_parameters"]["dropout"]
    other = _fit_args(fake_data_dir, tmp_path, f"--model.dropout={dropout / 2}")
    with pytest.raises(SystemExit) as exit_info:
        main([*other, "--ckpt_path=last"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: --ckpt_path last resumes {tmp_path / 'checkpoints' / 'last.ckpt'}, "
        "whose model settings differ from this command line's: --model.dropout "
        f"{dropout / 2} ({dropout} in the checkpoint). A resumed fit goes on with "
        "the checkpoint's settings: give them, or give the checkpoint's path, whose "
        "settings then replace these"
    )
    assert _contents(tmp_path) == files  # no folder, no file, none changed


def _contents(folder):
    return {p: p.is_file() and p.read_bytes() for p in folder.rglob("*")}


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluating_a_missing_checkpoint_is_named_before_anything_is_written(
    subcommand, fake_data_dir, tmp_path, capsys
):
    args = _fit_args(fake_data_dir, tmp_path)[1:]
    named = {
        tmp_path / "nope.ckpt": f"{tmp_path / 'nope.ckpt'}: no such file; give",
        "last": f"last: no {tmp_path / 'checkpoints' / 'last.ckpt'}; give",
        # Lightning's words for a fit in the same process (tracebacks, exit code 1)
        "best": "best: no such file; give",
        "": ": no such file; give",
    }
    for path, words in named.items():
        refusal = _refused([subcommand, *args, f"--ckpt_path={path}"], capsys)
        assert refusal.startswith(f"error: --ckpt_path {words}")
    assert list(tmp_path.iterdir()) == []


def test_resuming_a_fit_bounded_by_max_steps_warns_that_it_is_not_exact(
    fake_data_dir, tmp_path
):
    bounded = ["--trainer.max_epochs=-1", "--trainer.max_steps=3"]
    bounded.append("--model.scheduler=none")
    main([*_fit_args(fake_data_dir, tmp_path), *bounded])
    longer = [*bounded[:1], "--trainer.max_steps=4", *bounded[2:]]
    with pytest.warns(UserWarning, match="max_steps: Lightning restarts it"):
        main([*_fit_args(fake_data_dir, tmp_path), *longer, "--ckpt_path=last"])


def test_evaluating_without_a_checkpoint_warns(fake_data_dir, tmp_path):
    args = _fit_args(fake_data_dir, tmp_path, "--trainer.limit_test_batches=1")
    with pytest.warns(UserWarning, match="initial .random. weights"):
        main(["test", *args[1:]])


def test_evaluating_last_finds_a_checkpoint_folder_given_in_the_config(
    fake_data_dir, tmp_path
):
    overlay = tmp_path / "checkpoints.yaml"
    folder = tmp_path / "elsewhere"
    overlay.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: pytorch_lightning.callbacks.ModelCheckpoint\n"
        f"      init_args: {{dirpath: {folder}, save_last: true}}\n"
    )
    args = _fit_args(fake_data_dir, tmp_path / "run", "--config", str(overlay))
    main(args)
    assert (folder / "last.ckpt").is_file()
    main(["test", *args[1:], "--ckpt_path=last", "--trainer.limit_test_batches=1"])
    assert len(list((tmp_path / "run").rglob("test/version_0/metrics.csv"))) == 1


def test_a_whole_number_of_batches_is_a_count_and_a_float_a_share(
    fake_data_dir, tmp_path
):
    """The Trainer types its limits float | int, so "1" was read as 1.0: the
    whole epoch instead of one batch."""
    main([*_fit_args(fake_data_dir, tmp_path), "--trainer.limit_train_batches=1"])
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 1
    main(
        [*_fit_args(fake_data_dir, tmp_path / "b"), "--trainer.limit_train_batches=1.0"]
    )
    steps = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt")["global_step"]
    assert steps > 1  # all of the fake epoch's batches


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_an_evaluation_limited_to_no_batch_is_refused(
    subcommand, fake_data_dir, tmp_path, capsys
):
    """Lightning runs no batch, writes no metric or prediction and says nothing."""
    stage = "val" if subcommand == "validate" else subcommand
    args = _fit_args(fake_data_dir, tmp_path, f"--trainer.limit_{stage}_batches=0")
    with pytest.raises(SystemExit) as exit_info:
        main([subcommand, *args[1:]])
    assert exit_info.value.code == 2
    refusal = f"error: --trainer.limit_{stage}_batches 0: {subcommand} would run no"
    assert capsys.readouterr().err.splitlines()[-1].startswith(refusal)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_a_checkpoint_for_other_data_is_a_bad_command_line(
    subcommand, fake_data_dir, trained, tmp_path, capsys
):
    """Its weights do not fit the network built for the data: that was
    load_state_dict's traceback of size mismatches, after the logger's folder."""
    path = trained[0] / "checkpoints" / "last.ckpt"
    args = _fit_args(fake_data_dir, tmp_path / "run", "--data.image_size=96")[1:]
    refusal = _refused([subcommand, *args, f"--ckpt_path={path}"], capsys)
    assert refusal == (
        f"error: --ckpt_path {path} holds a network for other data than --data "
        "gives: image_size 96 (64 in the checkpoint); give the data it was fit on"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_an_evaluation_that_fails_before_running_leaves_no_folder(
    subcommand, fake_data_dir, trained, tmp_path
):
    saved = torch.load(trained[0] / "checkpoints" / "last.ckpt", weights_only=True)
    saved["state_dict"]["model.classifier.6.bias"] = torch.zeros(3)  # not 10 classes
    torch.save(saved, tmp_path / "other.ckpt")
    args = _fit_args(fake_data_dir, tmp_path / "run")[1:]
    with pytest.raises(RuntimeError, match="size mismatch for model.classifier.6"):
        main([subcommand, *args, f"--ckpt_path={tmp_path / 'other.ckpt'}"])
    assert list((tmp_path / "run").rglob("*.*")) == []  # no config.yaml, no folder
    assert list((tmp_path / "run").rglob("version_*")) == []


def test_an_evaluation_whose_loader_fails_leaves_no_folder(
    fake_data_dir, trained, tmp_path, monkeypatch
):
    """The loader is asked for after the logger wrote hparams.yaml."""

    def no_loader(self):
        raise OSError("no test images")

    monkeypatch.setattr(ClutteredFashionMNISTDataModule, "test_dataloader", no_loader)
    args = _fit_args(fake_data_dir, tmp_path / "run")[1:]
    with pytest.raises(OSError, match="no test images"):
        main(["test", *args, f"--ckpt_path={trained[0] / 'checkpoints/last.ckpt'}"])
    assert list((tmp_path / "run" / "test").iterdir()) == []


@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_a_validation_split_as_large_as_the_data_is_a_bad_command_line(
    subcommand, fake_data_dir, tmp_path, capsys
):
    """Checked against the data before the run starts: exit code 2, one line, no
    folder (it was a traceback from the data module's setup, exit code 1)."""
    size = len(FashionMNIST(str(fake_data_dir), train=True))
    args = _fit_args(fake_data_dir, tmp_path / "run", f"--data.val_size={size}")
    with pytest.raises(SystemExit) as exit_info:
        main([subcommand, *args[1:]])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: --data (ClutteredFashionMNISTDataModule): val_size "
        f"{size} leaves no image to train on: the training set in {fake_data_dir} "
        f"has {size} images; give a val_size from 1 to {size - 1}"
    )
    assert not (tmp_path / "run").exists()


def test_a_fit_that_fails_before_training_leaves_no_folder(
    fake_data_dir, tmp_path, monkeypatch
):
    """The data module's setup refuses (check_data, which would refuse first, is
    skipped: as for data that prepare_data has yet to download)."""
    no_check = lambda self: None  # noqa: E731
    monkeypatch.setattr(ClutteredFashionMNISTDataModule, "check_data", no_check)
    args = _fit_args(fake_data_dir, tmp_path / "run", "--data.val_size=100000")
    with pytest.raises(ValueError, match="val_size 100000 leaves no image"):
        main(args)
    assert not (tmp_path / "run").exists()  # the logger had made it


def test_a_fit_without_a_logger_leaves_out_the_learning_rate_monitor(
    fake_data_dir, tmp_path
):
    """Lightning refuses a LearningRateMonitor without a logger when the fit starts
    (a traceback, exit code 1); the shipped configs have one."""
    args = _fit_args(fake_data_dir, tmp_path, "--trainer.fast_dev_run=true")
    args[2] = str(ROOT / "configs" / "fashion_mnist.yaml")  # the cheaper data
    with pytest.warns(UserWarning, match="LearningRateMonitor callback is left out"):
        alone = run_cli([*args, "--trainer.logger=false"])
    assert not any(isinstance(c, LearningRateMonitor) for c in alone.trainer.callbacks)
    logged = run_cli(args)  # the config's logger: the monitor stays
    assert any(isinstance(c, LearningRateMonitor) for c in logged.trainer.callbacks)


def test_without_a_logger_the_config_goes_to_default_root_dir_not_the_cwd(
    fake_data_dir, trained, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    args = _fit_args(fake_data_dir, tmp_path, "--trainer.logger=false")[1:]
    args += [f"--ckpt_path={trained[0] / 'checkpoints' / 'last.ckpt'}"]
    args += ["--trainer.limit_test_batches=1"]
    with pytest.warns(UserWarning, match="config.yaml is not written"):
        main(["test", *args])
    assert list(tmp_path.iterdir()) == []
    main(["test", *args, f"--trainer.default_root_dir={tmp_path / 'root'}"])
    assert [p.name for p in tmp_path.rglob("*")] == ["root", "config.yaml"]
