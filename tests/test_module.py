import math

import pytest
import pytorch_lightning as pl
import torch

from lightning_zfnet import ClutteredFashionMNISTDataModule, ZFNetModule


def _module(**kwargs):
    return ZFNetModule(
        num_classes=10, in_channels=1, input_size=64, width=0.25, **kwargs
    )


def test_ten_crop_averages_probabilities():
    module = _module().eval()
    crops = torch.randn(3, 10, 1, 64, 64)
    with torch.no_grad():
        per_crop = [module(crops[:, i]).softmax(1) for i in range(10)]
        expected = torch.stack(per_crop).mean(0)
        torch.testing.assert_close(module.log_probs(crops).exp(), expected)
        torch.testing.assert_close(module.predict_step((crops, None), 0), expected)


def test_training_step_ignores_extra_batch_items():
    module = _module()
    batch = (torch.randn(4, 1, 64, 64), torch.tensor([0, 1, 2, 3]), torch.zeros(4, 4))
    loss = module.training_step(batch, 0)
    assert loss.ndim == 0 and math.isfinite(loss.item())


@pytest.mark.parametrize("scheduler", ["plateau", "step", "cosine", "none"])
def test_optimizer_is_the_papers_sgd(scheduler):
    module = _module(scheduler=scheduler)
    module.trainer = pl.Trainer(max_epochs=3, logger=False)
    config = module.configure_optimizers()
    optimizer = config if scheduler == "none" else config["optimizer"]
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (1e-2, 0.9, 0.0)


def test_unknown_scheduler_is_named():
    with pytest.raises(ValueError, match="warmup"):
        _module(scheduler="warmup")


@pytest.mark.parametrize(
    "name, value, allowed",
    [
        ("lr", -0.1, "positive"),
        ("lr", 0.0, "positive"),
        ("momentum", 1.0, "in [0, 1)"),
        ("weight_decay", -1e-4, ">= 0"),
        ("lr_factor", 1.0, "in (0, 1)"),
        ("patience", -1, ">= 0"),
        ("step_size", 0, "positive"),
        ("warmup", 1.5, "in [0, 1]"),
    ],
)
def test_a_recipe_setting_out_of_range_is_named_before_the_fit(name, value, allowed):
    """torch's SGD and schedulers refuse some of these only when the fit starts
    (a negative lr), others never (momentum 1 never forgets a gradient)."""
    with pytest.raises(ValueError) as refused:
        _module(**{name: value})
    assert str(refused.value) == f"{name} must be {allowed}, got {value!r}"


def _fit(data_dir, out, max_epochs, ckpt_path=None, **module_kwargs):
    pl.seed_everything(0)
    dm = ClutteredFashionMNISTDataModule(str(data_dir), batch_size=16, val_size=56)
    # dropout makes the result depend on the generator
    module = _module(dropout=0.5, **module_kwargs)
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        limit_train_batches=3,
        limit_val_batches=1,
        default_root_dir=out,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, dm, ckpt_path=ckpt_path, weights_only=True)
    return module, trainer


def test_resume_from_checkpoint_is_exact(fake_data_dir, tmp_path):
    straight, _ = _fit(fake_data_dir, tmp_path / "a", max_epochs=2)
    _, first = _fit(fake_data_dir, tmp_path / "b", max_epochs=1)
    checkpoint = first.checkpoint_callback.best_model_path
    torch.manual_seed(1234)  # whatever the caller's generator holds is overridden
    resumed, trainer = _fit(
        fake_data_dir, tmp_path / "c", max_epochs=2, ckpt_path=checkpoint
    )
    assert trainer.global_step == 6
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_checkpoint_loads_with_weights_only(fake_data_dir, tmp_path):
    module, trainer = _fit(fake_data_dir, tmp_path, max_epochs=1)
    path = trainer.checkpoint_callback.best_model_path
    loaded = ZFNetModule.load_from_checkpoint(path, weights_only=True)
    assert loaded.hparams.width == 0.25
    for name, value in module.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name])


def test_conv1_stride_reaches_the_network():
    module = _module(conv1_stride=1)
    assert module.model.features[0].stride == (1, 1)
    assert module(torch.randn(2, 1, 64, 64)).shape == (2, 10)


def test_channels_last_trains_to_the_same_weights(fake_data_dir, tmp_path):
    default, _ = _fit(fake_data_dir, tmp_path / "a", max_epochs=1, conv1_stride=1)
    fast, trainer = _fit(
        fake_data_dir, tmp_path / "b", max_epochs=1, conv1_stride=1, channels_last=True
    )
    conv = fast.model.features[4].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert not conv.is_contiguous()
    for name, value in default.state_dict().items():
        torch.testing.assert_close(fast.state_dict()[name], value, atol=1e-5, rtol=1e-4)
    path = trainer.checkpoint_callback.best_model_path
    loaded = ZFNetModule.load_from_checkpoint(path, weights_only=True)
    for name, value in fast.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


class _LearningRates(pl.Callback):
    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_batch_start(self, trainer, *args) -> None:
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])


def _steps_fit(data_dir, out, scheduler, **trainer_kwargs):
    dm = ClutteredFashionMNISTDataModule(str(data_dir), batch_size=16, val_size=56)
    rates = _LearningRates()
    trainer = pl.Trainer(
        default_root_dir=out,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[rates],
        **trainer_kwargs,
    )
    trainer.fit(_module(scheduler=scheduler), dm)
    return rates.rates


def test_cosine_without_an_epoch_bound_anneals_over_the_steps(fake_data_dir, tmp_path):
    """max_epochs=-1 with max_steps (the transfer configs' form): one decay over
    the steps, not a restart every epoch."""
    rates = _steps_fit(
        fake_data_dir, tmp_path, "cosine", max_epochs=-1, max_steps=6,
        limit_train_batches=2,
    )  # fmt: skip
    expected = [0.5 * 1e-2 * (1 + math.cos(math.pi * k / 6)) for k in range(6)]
    assert rates == pytest.approx(expected)


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_a_schedule_fitted_to_an_unbounded_run_is_refused(
    scheduler, fake_data_dir, tmp_path
):
    with pytest.raises(ValueError, match="bound the run"):  # max_time is no bound
        _steps_fit(
            fake_data_dir, tmp_path, scheduler, max_epochs=-1, max_time={"seconds": 20}
        )


def test_one_cycle_over_no_training_batch_is_refused(fake_data_dir, tmp_path):
    with pytest.raises(ValueError, match="bound the run"):
        _steps_fit(
            fake_data_dir, tmp_path, "onecycle", max_epochs=2, limit_train_batches=0
        )


def test_probabilities_are_float32_under_bf16_autocast():
    module = _module().eval()
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert module.log_probs(x).dtype == torch.float32
        assert module.log_probs(x[:, None].expand(3, 2, 1, 64, 64)).dtype == (
            torch.float32
        )
