"""The ``zfnet`` command, e.g. ``zfnet fit --config configs/fashion_mnist.yaml``."""

from __future__ import annotations

import torch
from pytorch_lightning.cli import LightningCLI

from .data import SplitDataModule
from .module import ZFNetModule


class ZFNetCLI(LightningCLI):
    """LightningCLI whose model takes its input shape and class count from the data.

    The model is :class:`ZFNetModule` or a subclass named by ``class_path`` (such as
    :class:`~lightning_zfnet.transfer.TransferModule`)."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 (jsonargparse type)
        for source, target in (
            ("num_classes", "num_classes"),
            ("in_channels", "in_channels"),
            ("image_size", "input_size"),
        ):
            parser.link_arguments(
                f"data.{source}", f"model.init_args.{target}", apply_on="instantiate"
            )


def run_cli(args: list[str] | None = None) -> ZFNetCLI:
    """Run the command line and return it (its ``trainer`` and ``model`` are set);
    ``args`` replaces ``sys.argv[1:]`` when given."""
    return ZFNetCLI(
        ZFNetModule,
        SplitDataModule,
        subclass_mode_data=True,
        subclass_mode_model=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``zfnet`` console script."""
    run_cli(args)
    # Lightning leaves a DDP process group up; gloo's threads can then abort the
    # interpreter's exit, so close it here.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
