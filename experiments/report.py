"""The experiments' report: ``report.md`` beside its figures, every number from the
run's results except the paper's, which are labelled as such."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from . import paper, transfer
from .sources import ABLATIONS, SCHEDULE, SOURCE
from .transfer import MODES, summary

PAPER = "arXiv 1311.2901v3"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; floats as they are given (format them first)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def _error(top1: float) -> str:
    return f"{100 * (1 - top1):.1f}"


def _spread(values: Sequence[float]) -> str:
    mean, spread = summary(values)
    return f"{mean:.1f} ± {spread:.1f}"


def diagnosis_table(results: dict) -> str:
    """Fig. 6's measures for the two first layers, beside the paper's."""
    k, z = results["diagnosis"]["krizhevsky_layer1"], results["diagnosis"]["zfnet"]
    nets = results["networks"]
    rows = [
        (
            "test top-1 error (%)",
            _error(nets["krizhevsky_layer1"]["test_top1"]),
            _error(nets["zfnet"]["test_top1"]),
            f"{paper.TABLE2_VAL_TOP1['krizhevsky']} / {paper.TABLE2_VAL_TOP1['zfnet']}"
            " (ImageNet val, Table 2)",
        ),
        (
            "dead layer-1 filters",
            f"{len(k['dead_filters'])} of {k['filters']}",
            f"{len(z['dead_filters'])} of {z['filters']}",
            "some / fewer (Fig. 6 b, c)",
        ),
        (
            "filter energy at >= 0.25 cycles/pixel (%)",
            f"{100 * k['high_frequency']:.1f}",
            f"{100 * z['high_frequency']:.1f}",
            "a mix of extremely high and low frequencies / more mid (Sec. 4.1)",
        ),
        (
            "filter energy above the layer's Nyquist, 1/(2 stride) (%)",
            f"{100 * k['above_own_nyquist']:.1f}",
            f"{100 * z['above_own_nyquist']:.1f}",
            "",
        ),
        (
            "layer-2 shift variation (aliasing)",
            f"{k['shift_variation']:.3f}",
            f"{z['shift_variation']:.3f}",
            "aliasing artifacts / none (Fig. 6 d, e)",
        ),
    ]
    header = (
        "measure",
        "Krizhevsky's layer 1 (11x11, stride 4)",
        "ZFNet's layer 1 (7x7, stride 2)",
        f"paper, ImageNet ({PAPER})",
    )
    return table(header, rows)


def ablation_table(results: dict) -> str:
    """Table 3: test error and parameters per network, beside the paper's rows."""
    nets = results["networks"]
    base = 1 - nets["zfnet"]["test_top1"]
    rows = []
    for network in ABLATIONS:
        run = nets[network.key]
        ours = 1 - run["test_top1"]
        paper_row, paper_base = _paper_row(network.key)
        train = run["train_top1"]
        rows.append(
            (
                network.label,
                f"`{Path(network.overlay).stem}`" if network.overlay else "",
                f"{run['parameters']:,}",
                "" if train is None else _error(train),
                _error(run["test_top1"]),
                f"{100 * (ours - base):+.1f}",
                paper_row,
            )
        )
    header = (
        "network",
        "overlay",
        "parameters",
        "train error (%)",
        "test error (%)",
        "vs ZFNet",
        f"paper, ImageNet val top-1 ({PAPER})",
    )
    return table(header, rows)


def _paper_row(key: str) -> tuple[str, str]:
    """The paper's Table 3 row for one of our networks: ``"error (change)"``."""
    if key == "zfnet_seed1":
        return "", ""
    own = paper.TABLE3.get(key) or paper.TABLE3.get(f"k_{key}")
    base = "zfnet" if key in paper.TABLE3 else "krizhevsky"
    error, base_error = own["error"][1], paper.TABLE3[base]["error"][1]
    on = "ZFNet" if base == "zfnet" else "Krizhevsky's network"
    if key == "zfnet":
        return f"{error}", on
    return f"{error} ({error - base_error:+.1f} on {on})", on


def transfer_table(results: dict) -> str:
    """Tables 4 and 5: accuracy per target, mode and labels per class."""
    rows = []
    for target, result in results["transfer"].items():
        budgets = list(result["modes"]["frozen"])
        for mode, by_budget in result["modes"].items():
            cells = (_spread(by_budget[b]) for b in budgets)
            rows.append((transfer.TARGETS[target], MODES[mode][0], *cells))
    header = ("target", "network", *(f"{b} per class (%)" for b in budgets))
    return table(header, rows)


def paper_transfer_table() -> str:
    """The paper's Tables 4 and 5, for comparison."""
    rows = []
    for name, data in (
        ("Caltech-101", paper.CALTECH101),
        ("Caltech-256", paper.CALTECH256),
    ):
        for mode, label in (
            ("pretrained", "ImageNet features, new softmax"),
            ("scratch", "from scratch"),
        ):
            cells = ", ".join(f"{b}: {m} ± {s}" for b, (m, s) in data[mode].items())
            rows.append((f"{name}, {label}", cells))
    return table((f"paper ({PAPER}), accuracy (%) by images per class", ""), rows)


def probe_table(results: dict) -> str:
    """Table 7: a linear classifier on each layer's features, per target."""
    targets = results["transfer"]
    svm, softmax = paper.TABLE7_CALTECH101["SVM"], paper.TABLE7_CALTECH101["softmax"]
    layers = list(next(iter(targets.values()))["probe"])
    rows = [
        (
            layer,
            *(_spread(result["probe"][layer]) for result in targets.values()),
            "{} ± {}".format(*svm[layer]) if layer in svm else "",
            "{} ± {}".format(*softmax[layer]) if layer in softmax else "",
        )
        for layer in layers
    ]
    budgets = {result["probe_budget"] for result in targets.values()}
    header = (
        "layer",
        *(f"{transfer.TARGETS[t]} (%)" for t in targets),
        f"paper: SVM, Caltech-101 30/class ({PAPER})",
        "paper: softmax",
    )
    return f"{_count(budgets)} labelled images per class:\n\n" + table(header, rows)


def _count(budgets: set[int]) -> str:
    return " or ".join(str(b) for b in sorted(budgets))


def write(results: dict, out: Path) -> Path:
    """Write ``out/report.md`` (the figures are already in ``out/figures``)."""
    sections = [
        _introduction(results),
        "## 1. Architecture diagnosis (Sec. 4.1, Fig. 6)",
        diagnosis_table(results),
        _diagnosis_text(results),
        "![Fig. 6](figures/fig6.png)",
        "![layer-1 spectra and layer-2 activity under shifts](figures/diagnosis.png)",
        "## 2. Ablations (Table 3)",
        ablation_table(results),
        _ablation_text(results),
        "## 3. Transfer with few labels (Tables 4-7)",
        _transfer_intro(results),
        transfer_table(results),
        paper_transfer_table(),
        probe_table(results),
        _transfer_text(results),
        "![transfer](figures/transfer.png)",
    ]
    path = out / "report.md"
    path.write_text("\n\n".join(sections) + "\n")
    return path


def _introduction(results: dict) -> str:
    env, times = results["environment"], results["seconds"]
    transfer_times = "; ".join(
        f"{target}: {_minutes(r['modes_s'])} for the three networks, "
        f"{_minutes(r['probe_s'])} for the layers"
        for target, r in results["transfer"].items()
    )
    schedule = " ".join(
        s for s in SCHEDULE if "progress" not in s and "summary" not in s
    )
    return f"""# The paper's experiments beyond the pictures, on offline data

Written by `make experiments` (`python -m experiments`) on {env["date"]}:
{env["machine"]}, torch {env["torch"]} with {env["threads"]} threads; the
one-minute load average was {env["load_average"]:.1f} when it started. It took
{_minutes(times["total"])}: training the {len(results["networks"])} networks
{_minutes(times["networks"])}, the diagnosis {_minutes(times["diagnosis"])},
the transfer runs {_minutes(times["transfer"])} ({transfer_times}). Every number
comes from this run except those marked as the paper's: Zeiler & Fergus's ImageNet
and Caltech results ({PAPER}), other data at another scale, shown beside ours for
orientation only.

Every network is ZFNet at quarter width on 64x64 Fashion-MNIST
(`configs/fashion_mnist.yaml`) with an overlay from `configs/variants/` (the
transfer source: `configs/transfer/fashion_mnist_0_4.yaml`) and one shortened
schedule, about one pass over the 55,000 training images: `{schedule}`. Test error
is on the 10,000 test images; train error is the last epoch's, with dropout on."""


def _diagnosis_text(results: dict) -> str:
    k, z = results["diagnosis"]["krizhevsky_layer1"], results["diagnosis"]["zfnet"]
    nets = results["networks"]
    gap = 100 * (nets["zfnet"]["test_top1"] - nets["krizhevsky_layer1"]["test_top1"])
    seeds = 100 * abs(nets["zfnet"]["test_top1"] - nets["zfnet_seed1"]["test_top1"])
    paper_gap = paper.TABLE2_VAL_TOP1["krizhevsky"] - paper.TABLE2_VAL_TOP1["zfnet"]
    jump = k["layer2_jump"]
    return f"""How the measures are defined. A layer-1 filter is **dead** when its map
(after the ReLU) is zero at every position of all {results["diagnosis_images"]} test
images: nothing above ever sees it and no gradient reaches it. **Spectral energy**:
each filter's squared frequency response (zero-padded to 64x64, summed over input
channels) shared out by radial frequency, in cycles per input pixel; the table gives
the share at 0.25 and above (the Nyquist frequency of a stride-2 output), and above
the layer's own output Nyquist frequency: the energy that aliases when the output
is sampled at the layer's stride. **Shift variation** of layer 2:
{results["shift_images"]} test images, each moved 0-{jump - 1} pixels right and
0-{jump - 1} down on a background margin (layer 2 steps {jump} pixels in both
networks); per image and map the sum of layer 2's ReLU output is recorded per shift,
and the measure is the summed standard deviation over the shifts divided by the
summed mean. An alias-free map keeps its sum under shifts smaller than its step, so
0 means no aliasing.

What it shows here. Krizhevsky's layer 1 puts
{100 * k["above_own_nyquist"]:.0f} % of its filters' energy above its output's
Nyquist frequency ({1 / (2 * k["stride"]):.3f} cycles/pixel), ZFNet's
{100 * z["above_own_nyquist"]:.0f} % above its own ({1 / (2 * z["stride"]):.2f});
layer 2's total activity varies by {k["shift_variation"]:.3f} of its mean under
shifts smaller than its step, against {z["shift_variation"]:.3f}. Dead filters:
{len(k["dead_filters"])} against {len(z["dead_filters"])}. ZFNet's test error is
{abs(gap):.1f} points {"lower" if gap > 0 else "higher"} (two seeds of ZFNet differ
by {seeds:.1f} points); on ImageNet the paper's change of layers 1-2 gained
{paper_gap:.1f} points (Table 2). Below, Fig. 6 for these networks: layer-1 filters
(dead ones outlined in red) and the deconvnet projections of each network's 16
strongest layer-2 maps at their strongest test activation; then each ring's share of
the filters' energy against a flat spectrum's, and layer 2's activity per shift."""


def _paper_change(key: str) -> float:
    """The paper's change of val top-1 error for one of our networks."""
    own = paper.TABLE3.get(key) or paper.TABLE3[f"k_{key}"]
    base = paper.TABLE3["zfnet" if key in paper.TABLE3 else "krizhevsky"]
    return own["error"][1] - base["error"][1]


def _ablation_text(results: dict) -> str:
    nets = results["networks"]

    def change(key: str) -> str:
        ours = 100 * (nets["zfnet"]["test_top1"] - nets[key]["test_top1"])
        return f"{ours:+.1f} (paper {_paper_change(key):+.1f})"

    seeds = 100 * abs(nets["zfnet"]["test_top1"] - nets["zfnet_seed1"]["test_top1"])
    return f"""One recipe for every row; parameters are counted on the trained networks.
Two seeds of ZFNet differ by {seeds:.1f} points of test error: changes of that size
are noise. Test error changed by, in points (the paper's change of ImageNet val
top-1 error in brackets, on Krizhevsky's network for the removals): removing
conv3-conv4 {change("no_conv3_conv4")}, removing fc6-fc7 {change("no_fc6_fc7")},
removing both {change("no_conv3_conv4_fc6_fc7")}; wider conv3-conv5
{change("wide_conv3_conv5")}, wider fc6-fc7 {change("fc6_fc7_8192")}, both wider
{change("wide_conv3_conv5_fc6_fc7_8192")}. At 64 pixels conv3-conv5 see 3x3 maps
and pool5 a single position, so depth and width have less to work on than at 224
pixels on ImageNet."""


def _transfer_intro(results: dict) -> str:
    source = results["networks"][SOURCE.key]
    first = next(iter(results["transfer"].values()))
    seeds = first["seeds"]
    configs = {
        t: yaml.safe_load(transfer.config(t).read_text()) for t in transfer.TARGETS
    }
    steps = {c["trainer"]["max_steps"] for c in configs.values()}
    tests = {c["data"]["init_args"]["test_per_class"] for c in configs.values()}
    return f"""Source: ZFNet trained on Fashion-MNIST's classes 0-4 only (T-shirt/top,
trouser, pullover, dress, coat; `configs/transfer/fashion_mnist_0_4.yaml`, the same
recipe; test top-1 {100 * source["test_top1"]:.1f} % on those classes). Targets:
Fashion-MNIST's classes 5-9 (sandal, shirt, sneaker, bag, ankle boot: new categories
of the same domain, as Caltech-101's are for an ImageNet network), drawn from the
training images the source never saw; and scikit-learn's 8x8 handwritten digits
(1797 scans, another domain), upsampled to 64x64. Each cell: {len(seeds)} random
draws of the labelled images (seeds {seeds[0]}-{seeds[-1]}), up to {_count(tests)}
other images per class test; mean ± standard deviation over the draws of the mean
per-class accuracy, the paper's measure. Every run is
`zfnet fit --config configs/transfer/<target>.yaml` with `--data.per_class`,
`--data.seed` and the network (`--model.freeze none` fine-tunes every layer, adding
`--model.pretrained false` trains from scratch, `--model.layer convN` reads another
layer): {_count(steps)} SGD steps with a onecycle schedule; the features pass a batch
norm without learnt scale and shift (the training draw's statistics at test time)
before the new linear classifier."""


def _transfer_text(results: dict) -> str:
    svm = paper.TABLE7_CALTECH101["SVM"]
    caltech = {m: paper.CALTECH101[m][30][0] for m in ("pretrained", "scratch")}
    lines = []
    for target, result in results["transfer"].items():
        modes, probe = result["modes"], result["probe"]
        low, high = min(modes["frozen"]), max(modes["frozen"])
        mean = {m: {b: summary(v)[0] for b, v in by.items()} for m, by in modes.items()}
        layers = {layer: summary(values)[0] for layer, values in probe.items()}
        best = max(layers, key=layers.get)
        ranks = list(layers.values())
        rising = all(a <= b for a, b in zip(ranks, ranks[1:], strict=False))
        trend = "rises with every layer" if rising else "does not rise steadily"
        lines.append(
            f"- {transfer.TARGETS[target]}: with {low} and {high} labelled images per "
            f"class, fixed features + new softmax "
            f"{mean['frozen'][low]:.1f} and {mean['frozen'][high]:.1f} %, fine-tuned "
            f"{mean['finetune'][low]:.1f} and {mean['finetune'][high]:.1f} %, from "
            f"scratch {mean['scratch'][low]:.1f} and {mean['scratch'][high]:.1f} %. "
            f"One layer's features: best on {best} ({layers[best]:.1f} %); accuracy "
            f"{trend} with depth, from {ranks[0]:.1f} % on conv1."
        )
    return (
        "\n".join(lines)
        + f"\n\nThe paper, Caltech-101 at 30 per class: {caltech['pretrained']} % with "
        f"fixed ImageNet features against {caltech['scratch']} % from scratch; one "
        f"layer's features from {svm['conv1'][0]} % on layer 1 to "
        f"{max(v[0] for v in svm.values())} % at best."
    )
