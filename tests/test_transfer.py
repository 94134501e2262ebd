"""TransferModule: a source checkpoint's backbone, frozen as told, under a new head."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_zfnet import FilterRenorm, TransferModule, ZFNetModule
from lightning_zfnet.model import LAYERS

ARCH = dict(in_channels=1, input_size=64, width=0.1, dropout=0.5)


def _trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _loader(n: int = 12, classes: int = 3, channels: int = 1) -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, channels, 64, 64, generator=generator)
    y = torch.arange(n) % classes
    return DataLoader(TensorDataset(x, y), batch_size=6, shuffle=True)


def _source(path: Path, **variant) -> Path:
    """A ZFNetModule checkpoint after one step (``variant`` overrides ``ARCH``)."""
    module = ZFNetModule(num_classes=4, scheduler="none", **{**ARCH, **variant})
    trainer = _trainer(max_steps=1)
    trainer.fit(module, _loader(classes=4, channels=module.hparams.in_channels))
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return _source(tmp_path_factory.mktemp("source") / "source.ckpt")


def _transfer(source: Path, **kwargs) -> TransferModule:
    options = dict(num_classes=3, in_channels=1, input_size=64, scheduler="none")
    return TransferModule(str(source), **{**options, **kwargs})


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class _ModesSeen(pl.Callback):
    def __init__(self) -> None:
        self.modes: list[tuple[bool, bool]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        dropout6, head = module.model.classifier[2], module.model.classifier[6]
        self.modes.append((dropout6.training, head.training))


def _train(module: TransferModule, callbacks=()) -> None:
    _trainer(max_steps=4, callbacks=list(callbacks)).fit(module, _loader())


def test_frozen_features_keep_the_source_weights_and_only_the_head_learns(source):
    module = _transfer(source, freeze="all")
    loaded = _weights(module.model)
    saved = torch.load(source, weights_only=True)["state_dict"]
    for key, value in loaded.items():
        if not key.startswith("classifier.6"):
            torch.testing.assert_close(value, saved[f"model.{key}"])
    optimizer = module.configure_optimizers()
    head = set(module.model.classifier[6].parameters())
    assert {p for group in optimizer.param_groups for p in group["params"]} == head
    modes = _ModesSeen()
    _train(module, [modes])
    after = _weights(module.model)
    for key, value in after.items():
        if key.startswith("classifier.6.1"):  # the new linear classifier
            assert not torch.equal(value, loaded[key])
        elif not key.startswith("classifier.6"):
            assert torch.equal(value, loaded[key]), key
    # frozen fc6 keeps dropout off while the head trains, whatever sets the mode
    assert modes.modes and all(m == (False, True) for m in modes.modes)
    module.eval().train()
    assert (
        not module.model.classifier[5].training and module.model.classifier[6].training
    )


def test_freeze_names_the_highest_frozen_layer(source):
    module = _transfer(source, freeze="conv5")
    before = _weights(module.model)
    _train(module)
    after = _weights(module.model)
    assert all(
        torch.equal(after[k], before[k]) for k in after if k.startswith("features")
    )
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert "classifier.0.weight" in changed and "classifier.3.weight" in changed


def test_fine_tuning_and_scratch_train_everything(source):
    tuned = _transfer(source, freeze="none")
    scratch = _transfer(source, freeze="none", pretrained=False)
    saved = torch.load(source, weights_only=True)["state_dict"]
    assert torch.equal(tuned.model.features[0].weight, saved["model.features.0.weight"])
    assert not torch.equal(
        scratch.model.features[0].weight, saved["model.features.0.weight"]
    )
    before = _weights(tuned.model)
    _train(tuned)
    assert not torch.equal(tuned.model.features[0].weight, before["features.0.weight"])


@pytest.mark.parametrize("layer", list(LAYERS))
def test_the_probe_reads_the_layer_it_names(source, layer):
    module = _transfer(source, layer=layer, standardize=False).eval()
    reference = ZFNetModule.load_from_checkpoint(source, map_location="cpu").model
    reference.eval()
    named = reference.get_submodule(LAYERS[layer])
    x = torch.randn(2, 1, 64, 64)
    seen = {}
    named.register_forward_hook(lambda m, a, out: seen.setdefault("out", out.clone()))
    head = module.model.classifier[6]
    head.register_forward_pre_hook(lambda m, a: seen.setdefault("in", a[0].clone()))
    with torch.no_grad():
        reference(x)
        module(x)
    torch.testing.assert_close(seen["in"], seen["out"].flatten(1))
    assert head[1].in_features == seen["out"][0].numel()


def test_bad_choices_name_what_is_wrong(source, tmp_path):
    with pytest.raises(ValueError, match="layer must be one of"):
        _transfer(source, layer="conv6")
    with pytest.raises(ValueError, match="lies above"):
        _transfer(source, layer="conv3", freeze="fc6")
    with pytest.raises(ValueError, match="channels"):
        _transfer(source, in_channels=3)
    with pytest.raises(ValueError, match="input_size"):
        _transfer(source, input_size=96)
    _transfer(source, input_size=96, layer="conv5")  # conv features fit any size
    shallow = _source(tmp_path / "shallow.ckpt", removed_layers=[6, 7])
    with pytest.raises(ValueError, match="removed"):
        _transfer(shallow, layer="fc6")
    _transfer(shallow, layer="conv5")


def test_files_that_are_not_a_zfnet_source_are_named(source, tmp_path):
    text, empty = tmp_path / "notes.txt", tmp_path / "empty.ckpt"
    text.write_text("not a checkpoint")
    empty.write_bytes(b"")
    for path in (text, empty):
        with pytest.raises(ValueError, match="not a checkpoint"):
            _transfer(path)
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        _transfer(tmp_path / "missing.ckpt")
    transfer = _transfer(source)  # a transfer's checkpoint is not a source
    trainer = _trainer(max_steps=1)
    trainer.fit(transfer, _loader())
    trainer.save_checkpoint(tmp_path / "transfer.ckpt")
    with pytest.raises(ValueError, match="TransferModule checkpoint.*source.ckpt"):
        _transfer(tmp_path / "transfer.ckpt", pretrained=False, freeze="none")


def test_filter_renorm_leaves_frozen_filters_alone(source):
    module = _transfer(source, freeze="conv3")
    before = _weights(module.model)
    _train(module, [FilterRenorm(radius=1e-3)])  # small: every filter would shrink
    after = _weights(module.model)
    for index in (0, 4, 8):  # conv1-conv3, frozen
        assert torch.equal(
            after[f"features.{index}.weight"], before[f"features.{index}.weight"]
        )
    for index in (10, 12):  # conv4, conv5: trained and renormalised
        rms = after[f"features.{index}.weight"].flatten(1).pow(2).mean(1).sqrt()
        assert rms.max() <= 1e-3 * (1 + 1e-5)


def test_a_batch_of_one_image_is_skipped_not_standardised(source):
    module = _transfer(source)
    x, y = torch.randn(1, 1, 64, 64), torch.tensor([0])
    assert module.training_step((x, y), 0) is None
    loss = module.training_step((torch.randn(2, 1, 64, 64), torch.tensor([0, 1])), 0)
    assert loss.ndim == 0
    # a draw of 13 images in batches of 6 ends with a batch of one: training runs
    data = DataLoader(
        TensorDataset(torch.randn(13, 1, 64, 64), torch.arange(13) % 3), 6
    )
    _trainer(max_epochs=1).fit(module, data)
