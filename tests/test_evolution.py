from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.logger import Logger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_zfnet import FeatureEvolution


class Classifier(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(1, 3, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Dropout(),
            nn.Linear(4 * 3 * 3, 2),
        )

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class ImageLogger(Logger):
    """Records what add_image receives, as TensorBoard's experiment would."""

    def __init__(self):
        super().__init__()
        self.images = []

    @property
    def experiment(self):
        return self

    def add_image(self, tag, image, global_step):
        self.images.append((tag, tuple(image.shape), global_step))

    name, version = "images", 0

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def fit(callback, logger=False, epochs=3, module=None, validation_batches=1, **trainer):
    """A short fit; with ``validation_batches=0``, through a data module (whose
    validation loader Lightning then never loads)."""
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(16, 1, 8, 8), torch.randint(0, 2, (16,)))
    module = module or Classifier()
    trainer = pl.Trainer(
        max_epochs=epochs,
        limit_train_batches=2,
        limit_val_batches=validation_batches,
        callbacks=[callback],
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer,
    )
    if validation_batches == 0:
        trainer.fit(module, pl.LightningDataModule.from_datasets(data, data, 4))
    else:
        loader = DataLoader(data, batch_size=4)
        trainer.fit(module, loader, DataLoader(data, batch_size=4))
    return module, data


def test_projections_are_written_and_logged_at_the_chosen_epochs_only(tmp_path):
    logger = ImageLogger()
    callback = FeatureEvolution(
        ["model.0", "model.4"], epochs=[1, 3], directory=tmp_path, num_images=6
    )
    module, data = fit(callback, logger)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "model.0_epoch001.png",
        "model.0_epoch003.png",
        "model.0_evolution.png",
        "model.4_epoch001.png",
        "model.4_epoch003.png",
        "model.4_evolution.png",
    ]
    tags = [(tag, step) for tag, _, step in logger.images]
    assert tags == [
        ("feature_evolution/model.0", 1),
        ("feature_evolution/model.4", 1),
        ("feature_evolution/model.0", 3),
        ("feature_evolution/model.4", 3),
    ]
    # The last projections are of the final weights' strongest activations over
    # the first 6 validation images.
    assert module.training
    epoch, atlas = callback.history["model.4"][-1]
    module.eval()
    with torch.no_grad():
        activations = module.model[:5](data.tensors[0][:6])
    strongest = activations.transpose(0, 1).flatten(1).amax(dim=1)
    assert epoch == 3
    torch.testing.assert_close(atlas.values[:, 0].float(), strongest)
    assert atlas.projections.shape == (4, 1, 1, 8, 8)  # field 8 of an 8x8 image


def test_given_images_and_modules_are_used(tmp_path):
    module, images = Classifier(), torch.randn(3, 1, 8, 8)
    callback = FeatureEvolution(
        [module.model[0]], epochs=[2], directory=tmp_path, images=images
    )
    fit(callback, epochs=2, module=module)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["model.0_epoch002.png", "model.0_evolution.png"]
    assert callback.history["model.0"][0][1].images.max() < 3


def test_a_float64_fit_projects_in_float64(tmp_path):
    """Under 64-true the model is float64: the callback's images are converted as
    the loop converts its batches (float32 images stopped the fit)."""
    callback = FeatureEvolution(["model.4"], epochs=[1], directory=tmp_path)
    module, data = fit(callback, epochs=1, precision="64-true")
    _, atlas = callback.history["model.4"][0]
    module.eval()
    with torch.no_grad():
        activations = module.model[:5](data.tensors[0][:16].double())
    strongest = activations.transpose(0, 1).flatten(1).amax(dim=1)
    torch.testing.assert_close(atlas.values[:, 0], strongest)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="epochs"):
        FeatureEvolution(["model.0"], epochs=[0])
    with pytest.raises(ValueError, match="layers"):
        FeatureEvolution([], epochs=[1])
    # refused at once, not after the first epoch of the fit
    with pytest.raises(
        TypeError, match="images must be a floating-point tensor, got torch.uint8"
    ):
        FeatureEvolution(["model.0"], [1], images=torch.zeros(2, 1, 8, 8).byte())
    with pytest.raises(ValueError, match=r"images must be images \(N, C, H, W\)"):
        FeatureEvolution(["model.0"], [1], images=torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="num_images must be a positive int, got 0"):
        FeatureEvolution(["model.0"], [1], num_images=0)
    callback = FeatureEvolution(["model.9"], epochs=[1], directory=tmp_path)
    module = Classifier()
    steps = []
    module.on_train_batch_start = lambda batch, index: steps.append(index)
    with pytest.raises(ValueError, match="model.9"):
        fit(callback, epochs=1, module=module)
    assert steps == []  # refused before the first epoch trained, not after it
    callback = FeatureEvolution([nn.ReLU()], epochs=[1], directory=tmp_path)
    with pytest.raises(ValueError, match="not a submodule"):
        fit(callback, epochs=1)


def test_pictures_go_to_the_log_directory_by_default(tmp_path):
    callback = FeatureEvolution(["model.0"], epochs=[1], num_images=4)
    fit(callback, logger=CSVLogger(tmp_path, name="", version=""), epochs=1)
    written = sorted(p.name for p in (tmp_path / "feature_evolution").iterdir())
    assert written == ["model.0_epoch001.png", "model.0_evolution.png"]


def test_a_data_modules_validation_images_serve_before_any_validation(tmp_path):
    """limit_val_batches=0 (or a validation every few epochs) loads no validation
    loader; the data module still has one."""
    callback = FeatureEvolution(
        ["model.0"], epochs=[1], directory=tmp_path, num_images=6
    )
    _, data = fit(callback, epochs=1, validation_batches=0)
    assert torch.equal(callback.images, data.tensors[0][:6])
    assert (tmp_path / "model.0_epoch001.png").is_file()


def test_images_come_from_the_data_module_not_the_trainers_sharded_loader():
    """Under DDP the trainer's validation loader holds this process's share of the
    images; the pictures must show the same images on one device or many."""
    data = TensorDataset(torch.randn(16, 1, 8, 8), torch.randint(0, 2, (16,)))
    every_other = torch.utils.data.Subset(data, range(0, 16, 2))  # rank 0 of 2
    trainer = SimpleNamespace(
        datamodule=pl.LightningDataModule.from_datasets(data, data, batch_size=4),
        val_dataloaders=DataLoader(every_other, batch_size=4),
    )
    callback = FeatureEvolution(["model.0"], epochs=[1], num_images=6)
    assert torch.equal(callback._fixed_images(trainer), data.tensors[0][:6])


def test_validation_batches_of_dicts_are_named_with_what_to_pass():
    """Batches of dicts stopped the fit at torch.cat with a message about lists."""
    data = [{"image": image, "label": 0} for image in torch.randn(8, 1, 8, 8)]
    trainer = SimpleNamespace(
        datamodule=None, val_dataloaders=DataLoader(data, batch_size=4)
    )
    callback = FeatureEvolution(["model.0"], epochs=[1], num_images=6)
    with pytest.raises(TypeError, match=r"a batch is a dict: pass .* images="):
        callback._fixed_images(trainer)


class BuiltLate(Classifier):
    """Builds its network in configure_model, after the callbacks' setup."""

    def __init__(self):
        super().__init__()
        self.built = self.model
        self.model = None

    def configure_model(self):
        self.model = self.built


def test_layers_built_in_configure_model_are_found(tmp_path):
    callback = FeatureEvolution(["model.0"], epochs=[1], directory=tmp_path)
    fit(callback, epochs=1, module=BuiltLate())
    assert [epoch for epoch, _ in callback.history["model.0"]] == [1]
