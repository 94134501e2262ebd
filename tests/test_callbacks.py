import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_zfnet import FilterRenorm, renormalize_filters


def test_renormalize_filters_matches_hand_computation():
    conv = nn.Conv2d(1, 3, kernel_size=2)
    with torch.no_grad():
        conv.weight[0] = 0.2  # RMS 0.2 > 0.1: every weight becomes 0.1
        conv.weight[1] = torch.tensor([[0.05, -0.05], [0.05, -0.05]])  # RMS 0.05: kept
        conv.weight[2] = torch.tensor([[0.3, 0.0], [0.0, 0.0]])  # RMS 0.15: x 2/3
        conv.bias.fill_(5.0)
    renormalize_filters(nn.Sequential(conv), radius=0.1)
    torch.testing.assert_close(conv.weight[0], torch.full((1, 2, 2), 0.1))
    torch.testing.assert_close(
        conv.weight[1], torch.tensor([[[0.05, -0.05], [0.05, -0.05]]])
    )
    torch.testing.assert_close(conv.weight[2], torch.tensor([[[0.2, 0.0], [0.0, 0.0]]]))
    assert torch.all(conv.bias == 5.0)


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 2))
        self.rms_after_step = []

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def on_train_batch_end(self, *args):
        w = self.net[0].weight
        self.rms_after_step.append(w.flatten(1).pow(2).mean(1).sqrt().max().item())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=10.0)  # pushes filters far out


def test_filter_renorm_binds_after_every_step_and_removes_its_hooks():
    data = TensorDataset(torch.randn(32, 1, 8, 8) * 10, torch.randint(0, 2, (32,)))
    module = _Tiny()
    trainer = pl.Trainer(
        max_epochs=1,
        callbacks=[FilterRenorm(radius=0.05)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(data, batch_size=4))
    assert len(module.rms_after_step) == 8
    assert max(module.rms_after_step) <= 0.05 + 1e-6
    assert not trainer.optimizers[0]._optimizer_step_post_hooks
