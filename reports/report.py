"""The demo's report: what the trained ZFNet learned, shown with the paper's figures.

``write_report`` writes ``report.md`` and its PNG figures into ``figures/``. Each
section is a function ``(ReportContext) -> markdown`` that writes its own figures;
``SECTIONS`` lists them in order, so a new section is one function and one line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from .attribution import benchmark_section, correspondence_section, occlusion_section
from .context import SEED, ReportContext, load_context
from .features import (
    atlas_section,
    evolution_section,
    filters_section,
    invariance_section,
)

__all__ = ["SECTIONS", "Section", "write_report"]


Section = Callable[[ReportContext], str]

# The report's sections in order: (title, function). A new section, for example
# occlusion sensitivity (Fig. 7) or an attribution benchmark table, is one function
# (ReportContext) -> markdown and one line here; its time is measured and listed.
SECTIONS: tuple[tuple[str, Section], ...] = (
    ("First-layer filters (Fig. 6)", filters_section),
    ("Feature atlas (Fig. 2)", atlas_section),
    ("Feature evolution during training (Fig. 4)", evolution_section),
    ("Invariance (Fig. 5)", invariance_section),
    ("Correspondence of object parts (Table 1)", correspondence_section),
    ("Occlusion sensitivity (Fig. 7)", occlusion_section),
    ("Attribution methods side by side", benchmark_section),
)


def write_report(
    checkpoint: str | Path,
    out: str | Path,
    data_dir: str | Path,
    timings: Mapping[str, float],
    metrics: Mapping[str, float],
) -> Path:
    """Write ``out/report.md`` and its figures in ``out/figures`` for the model in
    ``checkpoint``; returns the report's path.

    Args:
        checkpoint: a :class:`~lightning_zfnet.ZFNetModule` checkpoint trained on
            Cluttered Fashion-MNIST.
        out: the report's folder.
        data_dir: where the data module finds Fashion-MNIST.
        timings: seconds each earlier step took (``train_s``, ``test_s``).
        metrics: the test metrics (``test/top1``, ``test/top5``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = {_STEPS.get(key, key): seconds for key, seconds in timings.items()}
    start = time.perf_counter()
    ctx = load_context(checkpoint, out, data_dir)
    steps[f"loading the model and {len(ctx.images)} test images"] = (
        time.perf_counter() - start
    )
    sections = []
    for title, section in SECTIONS:
        start = time.perf_counter()
        sections.append(f"## {title}\n\n{section(ctx)}\n")
        steps[title] = time.perf_counter() - start
    path = out / "report.md"
    path.write_text("\n".join([_header(ctx, metrics, steps), *sections]))
    return path


_STEPS = {"train_s": "training", "test_s": "testing"}


def _header(
    ctx: ReportContext, metrics: Mapping[str, float], steps: Mapping[str, float]
) -> str:
    hp = ctx.hparams
    side = hp["input_size"]
    accuracy = ", ".join(
        f"{name} **{100 * metrics[key]:.2f} %**"
        for name, key in (("top-1", "test/top1"), ("top-5", "test/top5"))
        if key in metrics
    )
    rows = [f"| {step} | {seconds:.1f} |" for step, seconds in steps.items()]
    if "training" not in steps:
        rows.insert(0, "| training | not run: the checkpoint was reused |")
    return f"""# What the demo's ZFNet learned

A ZFNet (Zeiler & Fergus 2014, Fig. 3) at width {hp["width"]}, its first layer at
stride {hp.get("conv1_stride", 2)}, was trained to
classify {side}×{side} Cluttered Fashion-MNIST images: a Fashion-MNIST item at a random
place among fragments of other items, one of {hp["num_classes"]} classes. Each
section below reproduces one of the paper's figures on this network and says how to
read it. The figures are computed from {len(ctx.images)} test images drawn at random
(seed {SEED}).

- checkpoint: `{ctx.checkpoint}`
- test accuracy on the {ctx.test_size} test images: {accuracy or "not measured"}
  (chance: {100 / hp["num_classes"]:.0f} %)

| step | seconds |
|---|---:|
{chr(10).join(rows)}
"""
