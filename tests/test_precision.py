"""bf16 on a CPU without oneDNN's bf16 kernels, where it is 5x slower than
float32: the ``zfnet`` command warns, and the embedded default trains in float32."""

import platform
import re
import types
import warnings
from pathlib import Path

import pytest
import torch

import lightning_zfnet.cli as cli
import lightning_zfnet.default as default
import lightning_zfnet.precision as precision
from lightning_zfnet import DEFAULT_CONFIG, train_default
from tests.helpers import tiny_training_args

ROOT = Path(__file__).resolve().parents[1]
CPUINFO = Path("/proc/cpuinfo")


@pytest.mark.skipif(
    platform.machine() != "x86_64" or not CPUINFO.exists(),
    reason="reads the x86 flags in /proc/cpuinfo",
)
def test_bf16_kernels_are_those_of_avx512_cpus():
    flags = set(re.search(r"^flags\s*:(.*)$", CPUINFO.read_text(), re.M)[1].split())
    avx512 = {"avx512bw", "avx512vl", "avx512dq"} <= flags
    assert precision.cpu_has_native_bf16() == avx512


def _fast_fit(data_dir, save_dir, precision: str) -> list[str]:
    """A ``zfnet fit`` of one tiny batch at ``precision``."""
    return [
        "fit",
        "--config",
        str(ROOT / "configs" / "fashion_mnist.yaml"),
        f"--trainer.logger.init_args.save_dir={save_dir}",
        *tiny_training_args(data_dir),
        "--trainer.fast_dev_run=true",
        f"--trainer.precision={precision}",
    ]


@pytest.mark.parametrize("native", [False, True])
def test_the_command_warns_of_bf16_on_a_cpu_without_its_kernels(
    fake_data_dir, tmp_path, monkeypatch, native
):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    args = _fast_fit(fake_data_dir, tmp_path, "bf16-mixed")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli.run_cli(args)
    warned = [w for w in caught if "bf16 goes through float32" in str(w.message)]
    assert len(warned) == (0 if native else 1)
    if not native:
        assert "pass --trainer.precision 32-true" in str(warned[0].message)


@pytest.mark.parametrize("precision", ["16-true", "bf16-true"])
def test_half_precision_without_a_cpu_kernel_is_a_bad_command_line(
    precision, fake_data_dir, tmp_path, capsys
):
    """It was PyTorch's NotImplementedError from the contrast normalisation's
    avg_pool3d at the first batch; where PyTorch has the kernel, the fit runs."""
    dtype = {"16-true": torch.float16, "bf16-true": torch.bfloat16}[precision]
    try:
        torch.nn.functional.local_response_norm(torch.ones(1, 1, 1, 1, dtype=dtype), 5)
        kernel = True
    except NotImplementedError:
        kernel = False
    args = _fast_fit(fake_data_dir, tmp_path, precision)
    if kernel:
        cli.run_cli(args)
        return
    with pytest.raises(SystemExit) as exit_info:
        cli.run_cli(args)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: --trainer.precision {precision}: PyTorch has no {dtype} kernel on "
        "the CPU for ZFNet's contrast normalisation (LocalResponseNorm); give "
        "--trainer.precision 32-true, or bf16-mixed"
    )


class _Stop(Exception):
    pass


def _first_command(
    monkeypatch, tmp_path, native: bool, config=DEFAULT_CONFIG, extra=()
) -> list[str]:
    """The arguments of the first command ``train_default`` runs, on a CPU (with
    or without bf16 kernels) without a GPU."""
    monkeypatch.setattr(default, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    given = []

    def fake_run_cli(args):
        given.append(args)
        raise _Stop

    monkeypatch.setattr(cli, "run_cli", fake_run_cli)
    with pytest.raises(_Stop):
        train_default(tmp_path, config, extra)
    return given[0]


def _fit_arguments(
    monkeypatch, tmp_path, native: bool, config=DEFAULT_CONFIG, extra=()
) -> list[str]:
    """The arguments ``train_default`` gives its fit."""
    args = _first_command(monkeypatch, tmp_path, native, config, extra)
    assert args[0] == "fit"
    return args


def _precisions(args: list[str]) -> list[str]:
    """The precision options among ``args`` (not paths that hold the word, such
    as a checkout's folder)."""
    return [a for a in args if a.startswith("--trainer.precision")]


def test_the_default_trains_in_float32_on_a_cpu_without_bf16_kernels(
    monkeypatch, tmp_path, capsys
):
    assert "precision: bf16-mixed" in DEFAULT_CONFIG.read_text()
    args = _fit_arguments(monkeypatch, tmp_path, native=False)
    assert "--trainer.precision=32-true" in args
    assert "training in float32" in capsys.readouterr().out
    assert "--trainer.precision=32-true" not in _fit_arguments(
        monkeypatch, tmp_path, native=True
    )


def test_the_default_keeps_a_precision_given_or_a_config_in_float32(
    monkeypatch, tmp_path
):
    given = ["--trainer.precision=bf16-mixed"]
    args = _fit_arguments(monkeypatch, tmp_path, native=False, extra=given)
    assert _precisions(args) == given
    float32 = tmp_path / "float32.yaml"
    float32.write_text("trainer:\n  precision: 32-true\n")
    args = _fit_arguments(monkeypatch, tmp_path, native=False, config=float32)
    assert not _precisions(args)


def test_bf16_kernels_are_absent_from_a_pytorch_without_onednn(monkeypatch):
    # a build without oneDNN registers none of its ops, the query included
    monkeypatch.setattr(torch.ops, "mkldnn", types.SimpleNamespace())
    assert precision.cpu_has_native_bf16() is False
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert precision.cpu_has_native_bf16() is False


@pytest.mark.parametrize("form", ["--config", "--config=", "-c", "-c=", "--trainer"])
def test_the_default_leaves_the_precision_to_a_config_among_extra(
    monkeypatch, tmp_path, form
):
    config = tmp_path / "given.yaml"
    settings = "precision: 64-true\n"
    config.write_text(settings if form == "--trainer" else f"trainer:\n  {settings}")
    extra = [f"{form}{config}"] if form.endswith("=") else [form, str(config)]
    args = _fit_arguments(monkeypatch, tmp_path, native=False, extra=extra)
    assert "--trainer.precision=32-true" not in args
    as_text = ["--config", '{"trainer": {"precision": "bf16-mixed"}}']
    args = _fit_arguments(monkeypatch, tmp_path, native=False, extra=as_text)
    assert "--trainer.precision=32-true" not in args
    # other trainer options leave the config's bf16 to the switch
    extra = ["--trainer.max_epochs=1", "--trainer.accelerator", "cpu"]
    args = _fit_arguments(monkeypatch, tmp_path, native=False, extra=extra)
    assert "--trainer.precision=32-true" in args


@pytest.mark.parametrize(
    "text", ["trainer: trainer.yaml\n", "# nothing\n", "", "- a list\n"]
)
def test_a_config_without_a_trainer_mapping_is_left_to_the_command(
    monkeypatch, tmp_path, text
):
    config = tmp_path / "config.yaml"
    config.write_text(text)  # the command line reads or refuses it, not this check
    args = _fit_arguments(monkeypatch, tmp_path, native=False, config=config)
    assert "--trainer.precision=32-true" not in args


def test_the_default_says_it_tests_in_float32_when_it_reuses_a_checkpoint(
    monkeypatch, tmp_path, capsys
):
    checkpoint = tmp_path / "train" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.touch()  # a second `make demo` only tests
    args = _first_command(monkeypatch, tmp_path, native=False)
    assert args[0] == "test" and "--trainer.precision=32-true" in args
    printed = capsys.readouterr().out
    assert "testing in float32" in printed and "training" not in printed
