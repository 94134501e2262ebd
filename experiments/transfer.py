"""Sec. 5.2 and 5.3, Tables 4-7: a Fashion-MNIST ZFNet's features on two targets
with a few labels per class: the Fashion-MNIST classes it never saw (its own
domain, as Caltech-101 is ImageNet's) and handwritten digits (another domain).

Every run is ``zfnet fit --config configs/transfer/<target>.yaml`` with the budget,
the draw and the mode as options, then a test on images not drawn: the Lightning
code a user runs, without its logs and checkpoints.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from lightning_zfnet.cli import run_cli
from lightning_zfnet.model import LAYERS

ROOT = Path(__file__).resolve().parents[1]
# The targets: their configs and names.
TARGETS = {
    "fashion_mnist_5_9": "Fashion-MNIST classes 5-9 (the source's domain)",
    "digits": "handwritten digits (another domain)",
}


def config(target: str) -> Path:
    """The config of a target of :data:`TARGETS`."""
    return ROOT / "configs" / "transfer" / f"{target}.yaml"


# The three ways of Tables 4 and 5 (and fine-tuning, which the paper did not run),
# as options of the config.
MODES = {
    "frozen": ("layers 1-7 fixed, new softmax", ()),
    "finetune": ("every layer fine-tuned", ("--model.freeze=none",)),
    "scratch": (
        "same network from scratch",
        ("--model.freeze=none", "--model.pretrained=false"),
    ),
}


@dataclass(frozen=True)
class Plan:
    """What to run: labels per class, draws (seeds), the probe's budget and layers,
    and extra options for every run (a shorter schedule in tests)."""

    budgets: Sequence[int] = (1, 5, 15, 30)
    seeds: Sequence[int] = (0, 1, 2, 3, 4)
    probe_budget: int = 30
    probe_layers: Sequence[str] = tuple(LAYERS)
    extra: Sequence[str] = ()


PLAN = Plan()


def run(source: str, target: str, out: Path, plan: Plan = PLAN) -> dict:
    """Every transfer run of ``plan`` from the ``source`` checkpoint to ``target``.

    Returns ``{"modes": {mode: {budget: [accuracy per seed]}}, "probe": {layer:
    [accuracy per seed]}, ...}``, accuracies the test's mean per-class top-1 in %.
    """
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    runs = {}
    start = time.perf_counter()
    for mode, (_, options) in MODES.items():
        for budget in plan.budgets:
            runs[mode, budget] = [
                _accuracy(source, target, out, budget, seed, (*options, *plan.extra))
                for seed in plan.seeds
            ]
    modes_s = time.perf_counter() - start
    probe = {}
    for layer in plan.probe_layers:
        if layer == "fc7" and ("frozen", plan.probe_budget) in runs:
            probe[layer] = runs["frozen", plan.probe_budget]  # the same runs
            continue
        options = (f"--model.layer={layer}", *plan.extra)
        probe[layer] = [
            _accuracy(source, target, out, plan.probe_budget, seed, options)
            for seed in plan.seeds
        ]
    return {
        "modes": {m: {b: runs[m, b] for b in plan.budgets} for m in MODES},
        "probe": probe,
        "probe_budget": plan.probe_budget,
        "seeds": list(plan.seeds),
        "modes_s": modes_s,
        "probe_s": time.perf_counter() - start - modes_s,
    }


def _accuracy(
    source: str,
    target: str,
    out: Path,
    budget: int,
    seed: int,
    options: Sequence[str],
) -> float:
    cli = run_cli(
        [
            "fit",
            "--config",
            str(config(target)),
            f"--model.checkpoint={source}",
            f"--data.per_class={budget}",
            f"--data.seed={seed}",
            f"--seed_everything={seed}",
            "--trainer.logger=false",
            "--trainer.callbacks=[]",
            "--trainer.enable_checkpointing=false",
            f"--trainer.default_root_dir={out}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            *options,
        ]
    )
    (metrics,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    return 100 * metrics["test/mean_class_top1"]


def summary(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), spread


def figure(results: dict[str, dict], path: Path) -> None:
    """Per target, accuracy by labels per class for each network; last, the linear
    classifier on each layer's features, for every target."""
    canvas = Figure(figsize=(5 * (len(results) + 1), 4.2))
    *panels, layers = canvas.subplots(1, len(results) + 1)
    for panel, (target, result) in zip(panels, results.items(), strict=True):
        for mode, by_budget in result["modes"].items():
            xs = [int(b) for b in by_budget]
            means, spreads = zip(*map(summary, by_budget.values()), strict=True)
            panel.errorbar(
                xs, means, yerr=spreads, marker="o", capsize=3, label=MODES[mode][0]
            )
        panel.set(
            xscale="log",
            xlabel="labelled images per class",
            ylabel="test accuracy (%)",
            title=TARGETS[target],
            ylim=(0, 100),
        )
        panel.set_xticks(xs, [str(x) for x in xs])
        panel.legend(fontsize=8)
        names = list(result["probe"])
        means, spreads = zip(*map(summary, result["probe"].values()), strict=True)
        layers.errorbar(
            range(len(names)),
            means,
            yerr=spreads,
            marker="o",
            capsize=3,
            label=TARGETS[target],
        )
        layers.set_xticks(range(len(names)), names)
    budget = next(iter(results.values()))["probe_budget"]
    layers.set(
        ylabel="test accuracy (%)",
        ylim=(0, 100),
        title=f"a linear classifier per layer, {budget} per class",
    )
    layers.legend(fontsize=8)
    canvas.tight_layout()
    canvas.savefig(path, dpi=110)
