"""Build the explorer's static site.

    python -m explorer build --ckpt runs/demo/train/checkpoints/last.ckpt --out DIR
    python -m explorer build --source explorer.photos:efficientnet_lite1 --out DIR
    python -m explorer build --source mypackage.mymodule:my_source --out DIR \\
        --trainer.accelerator gpu --trainer.devices 8 --trainer.strategy ddp \\
        --trainer.num_nodes 2

``--source`` names a function that returns an ``explorer.Source`` (any CNN, dataset and
layers). Every ``--trainer.*`` option of Lightning's ``Trainer`` is accepted; under
DDP each process scans its share and global rank 0 writes the site. Open
``DIR/index.html`` in a browser, or serve ``DIR`` with ``python -m http.server``.
"""

from __future__ import annotations

import torch
from jsonargparse import ArgumentParser, Namespace
from pytorch_lightning import Trainer

from .build import build_site
from .source import from_checkpoint, load_source


def _build_parser() -> ArgumentParser:
    parser = ArgumentParser(description="Build the explorer's site.")
    parser.add_argument("--out", type=str, required=True, help="the site's folder")
    parser.add_argument("--ckpt", type=str | None, help="a ZFNetModule checkpoint")
    parser.add_argument(
        "--data_dir", type=str | None, help="its data (default: the checkpoint's)"
    )
    parser.add_argument(
        "--images", type=int | None, help="only the first N images of its test split"
    )
    parser.add_argument(
        "--source", type=str | None, help="package.module:function returning a Source"
    )
    parser.add_argument("--k", type=int, default=9, help="activations per channel")
    parser.add_argument(
        "--distinct_images",
        type=bool,
        default=True,
        help="each channel's k activations from k different images (Fig. 2)",
    )
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument(
        "--maps", type=int | None, help="images with occlusion and attribution maps"
    )
    parser.add_argument(
        "--channels", type=int | None, help="the first N channels of each layer"
    )
    parser.add_argument(
        "--methods", type=list[str] | None, help="names in benchmarks.methods.METHODS"
    )
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_class_arguments(Trainer, "trainer", instantiate=True)
    parser.set_defaults(
        {
            "trainer.logger": False,
            "trainer.enable_checkpointing": False,
            "trainer.enable_model_summary": False,
        }
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m explorer", description=__doc__)
    commands = parser.add_subcommands()
    commands.add_subcommand("build", _build_parser())
    config = parser.parse_args(argv)
    args: Namespace = parser.instantiate(config).build
    if (args.ckpt is None) == (args.source is None):
        parser.error("give either --ckpt or --source")
    if args.source is not None and (args.images, args.data_dir) != (None, None):
        parser.error(
            "--images and --data_dir go with --ckpt; a --source function chooses "
            "its own images"
        )
    if args.ckpt is not None:
        source = from_checkpoint(args.ckpt, args.data_dir, args.images)
    else:
        source = load_source(args.source)
    index = build_site(
        source,
        args.out,
        trainer=args.trainer,
        k=args.k,
        batch_size=args.batch_size,
        maps=args.maps,
        channels=args.channels,
        methods=args.methods,
        num_workers=args.num_workers,
        distinct_images=args.distinct_images,
    )
    if args.trainer.is_global_zero:
        print(f"explorer: {index.resolve()}")
    # Lightning leaves a DDP process group up; gloo's threads can then abort the
    # interpreter's exit.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
