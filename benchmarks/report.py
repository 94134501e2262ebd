"""The benchmark's results as markdown: every sentence from the run's own settings."""

from __future__ import annotations

from .stats import CONFIDENCE, RESAMPLES

__all__ = ["COLUMNS", "DEFINITIONS", "PUBLISHED", "headline_table", "markdown"]

# Per-image metrics: key, header. Cost columns come first (see _cost_cells).
COLUMNS = [
    ("deletion_auc", "deletion AUC ↓"),
    ("insertion_auc", "insertion AUC ↑"),
    ("pointing_game", "pointing game ↑"),
    ("relevance_mass", "relevance mass ↑"),
    ("sensitivity_max", "max-sensitivity ↓"),
    ("infidelity", "infidelity ↓"),
    ("sanity_final", "rank corr., all random ↓"),
]
COST_HEADERS = ["s / image", "x forward", "fwd / image", "bwd / image"]

DEFINITIONS = {
    "interval": f"{CONFIDENCE:.0%} percentile bootstrap over images ({RESAMPLES} "
    "resamples, seeded); for the rank correlation, each image's value is the mean "
    "over the random re-initialisations",
    "paired_test": "permutation test on per-image differences (signs flipped at "
    f"random, {RESAMPLES} resamples or all flips), two-sided; p adjusted by "
    "Benjamini-Hochberg over a track's comparisons; significant below 0.05",
    "cost": "median seconds per image over the repeats (range in brackets), and that "
    "time divided by one inference forward pass of the same network on the same "
    "images in the same run; passes counted at the output layer",
    "deletion_auc": "RISE (Petsiuk et al. 2018): area under the target probability "
    "as the most attributed pixels are replaced, 32 steps; each curve computed once",
    "insertion_auc": "RISE: area under the target probability as the most attributed "
    "pixels are restored, from a blurred copy",
    "pointing_game": "TorchRay's protocol (Zhang et al. 2016; Fong et al. 2019): a "
    "hit when the map's first maximum (raster order) lies on the object or closer "
    "than 15 px at 224 px, scaled to the image size; pointing_game_strict in "
    "results.json: no tolerance",
    "relevance_mass": "share of the positive attribution on the object (Arras et al. "
    "2022): sum(max(a,0) on object) / sum(max(a,0)); Quantus divides signed sums",
    "sensitivity_max": "Captum's sensitivity_max, radius 0.05",
    "infidelity": "Captum's infidelity, Gaussian noise of std 0.1, normalize=True",
    "sanity_final": "cascading randomisation (Adebayo et al. 2018): Spearman rank "
    "correlation of |map| with the trained network's after every conv and linear "
    "layer is re-initialised (reset_parameters, from the top); near 1: the map "
    "ignores what the network learned",
    "LayerGradCam": "Grad-CAM as published (Selvaraju et al. 2017): the ReLU of the "
    "weighted sum (relu_attributions=True), upsampled bilinearly",
}

PUBLISHED = """\
### Published figures, on other data (context only, not comparable cell by cell)

- Pointing game, PASCAL VOC07 test, VGG16 (TorchRay, Fong et al. 2019): deconvnet
  67.5 %, *below* the centre baseline's 69.6 %; Grad-CAM 86.6 %; guided backprop 75.9 %.
- Deletion / insertion AUC, ImageNet, ResNet-50 (RISE, Petsiuk et al. 2018): Grad-CAM
  0.123 / 0.677; sliding-window occlusion 0.142 / 0.662.
- Cascading randomisation (Adebayo et al. 2018): guided backprop (and deconvnet-like
  methods) barely change as layers are randomised; gradients and Grad-CAM do.
"""


def _num(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _ci(metric: dict) -> str:
    return f"{_num(metric['value'])} [{_num(metric['low'])}, {_num(metric['high'])}]"


def _cost_cells(cost: dict) -> list[str]:
    low, high = cost["seconds_range"]
    return [
        f"{_num(cost['seconds_per_image'])} [{_num(low)}, {_num(high)}]",
        _num(cost["forward_equivalents"]),
        _num(cost["forward_passes_per_image"]),
        _num(cost["backward_passes_per_image"]),
    ]


def headline_table(results: dict, track: str) -> str:
    """The track's table: methods x (cost, metrics), each metric with its interval."""
    rows = results["tracks"][track]["methods"]
    scored = [r for r in rows.values() if "metrics" in r]
    columns = [(k, h) for k, h in COLUMNS if any(k in r["metrics"] for r in scored)]
    lines = [
        "| method | kind | "
        + " | ".join(COST_HEADERS + [h for _, h in columns])
        + " |",
        "|---|---|" + "---|" * (len(COST_HEADERS) + len(columns)),
    ]
    for name, row in rows.items():
        if "metrics" in row:
            cells = [_ci(row["metrics"][k]) for k, _ in columns]
        else:
            cells = [f"= {row['same_maps_as']}"] * len(columns)
        cells = _cost_cells(row["cost"]) + cells
        lines.append(f"| {name} | {row['kind']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _track_intro(track: dict) -> str:
    c = track["config"]
    forward = track["forward_seconds_per_image"]
    return (
        f"Model: {c['model']}. Images: {c['images']} of {c['data']}, "
        f"{c['size'][0]}x{c['size'][1]}, {c['dtype']}; target: {c['target']}. "
        f"Cost, robustness and sanity on the first {c['subset']} images; cost is the "
        f"median of {c['repeats']} timed call(s), relative to one forward pass "
        f"({forward * 1e3:.3g} ms per image in this run). Deletion replaces pixels "
        f"with {c['deletion_to']}; insertion starts from {c['insertion_from']}. "
        f"Grad-CAM on `{c['gradcam_layer']}`; occluder {c['occluder']['window']} px "
        f"in steps of {c['occluder']['stride']}; integrated gradients with "
        f"{c['ig_steps']} steps; max-sensitivity and infidelity with "
        f"{c['perturbation_samples']} perturbations; cascading randomisation with "
        f"{len(c['reinit_seeds'])} random re-initialisation(s) in "
        f"{len(track['cascade']['steps'])} steps."
    )


def _notes(track: dict) -> list[str]:
    notes = []
    for name, row in track["methods"].items():
        notes += [f"- **{name}** warned: {w}" for w in row["warnings"]]
        if "same_maps_as" in row:
            notes.append(
                f"- **{name}** gives the same maps as {row['same_maps_as']} (largest "
                f"difference {row['max_relative_difference']:.1g} of the largest "
                "value): timed, scored once."
            )
    notes += [
        f"- {a} and {b} gave identical maps here." for a, b in track["identical_maps"]
    ]
    return notes


def comparisons_table(track: dict) -> str:
    """Methods x metrics: the best method, whether each differs from it
    significantly, and how many controls each beats significantly."""
    tests = track["comparisons"]
    metrics = [(k, h) for k, h in COLUMNS if any(t["metric"] == k for t in tests)]
    methods = list(dict.fromkeys(t["method"] for t in tests))
    lines = [
        "| method | " + " | ".join(h for _, h in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for method in methods:
        cells = [_comparison_cell(tests, method, key) for key, _ in metrics]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _comparison_cell(tests: list[dict], method: str, metric: str) -> str:
    mine = [t for t in tests if t["metric"] == metric and t["method"] == method]
    against_best = [t for t in mine if t["role"] == "best"]
    controls = [t for t in mine if t["role"] == "control"]
    if not mine:
        return "best" if _is_best(tests, method, metric) else ""
    if not against_best:
        head = "**best**"
    else:
        t = against_best[0]
        head = f"{'worse' if t['significant'] else '≈ best'} (p {t['p_adjusted']:.2g})"
    beaten = sum(t["significant"] and t["better"] for t in controls)
    return f"{head}; beats {beaten}/{len(controls)} controls"


def _is_best(tests, method, metric) -> bool:
    return any(t["metric"] == metric and t["against"] == method for t in tests)


def _centred_section(centred: dict | None) -> list[str]:
    if centred is None:
        return []
    lines = ["## Pointing game on centred items", ""]
    if "skipped" in centred:
        return lines + [f"Not measured: {centred['skipped']}.", ""]
    lines += [
        f"ZFNet from {centred['checkpoint']} on {centred['images']} images of the "
        f"{centred['data']} (accuracy on them {centred['accuracy_on_images']:.1%}); "
        f"object: {centred['object']}. TorchRay's protocol uses a tolerance of "
        f"{centred['tolerance_pixels']:.3g} px here; the strict one none.",
        "",
        "| method | kind | pointing game (TorchRay) | pointing game (strict) |",
        "|---|---|---|---|",
    ]
    for name, row in centred["methods"].items():
        m = row["metrics"]
        lines.append(
            f"| {name} | {row['kind']} | {_ci(m['pointing_game'])} | "
            f"{_ci(m['pointing_game_strict'])} |"
        )
    return lines + [""]


def _findings_section(findings: list[dict]) -> list[str]:
    lines = [
        "## Published findings, checked here",
        "",
        "| claim | source | track | verdict | evidence |",
        "|---|---|---|---|---|",
    ]
    for f in findings:
        evidence = "; ".join(_evidence(t) for t in f.get("tests", [])) or f["why"]
        lines.append(
            f"| {f['claim']} | {f['source']} | {f['track']} | **{f['verdict']}** | "
            f"{evidence} |"
        )
    return lines + [""]


def _evidence(test: dict) -> str:
    d = test["difference"]
    return (
        f"{test['method']} {_num(test['mean'])} vs {test['against']} "
        f"{_num(test['mean_against'])}: {d['value']:+.3g} [{d['low']:+.3g}, "
        f"{d['high']:+.3g}], p {test['p_adjusted']:.2g} (expected {test['expect']})"
    )


def _track_section(name: str, track: dict) -> list[str]:
    lines = [f"## Track: {name}", ""]
    if "skipped" in track:
        return lines + [f"Skipped: {track['skipped']}", ""]
    prefix = "" if name == "zfnet" else f"{name}_"
    lines += [_track_intro(track), ""]
    for p in track["config"].get("predictions", []):
        lines.append(f"- {p['photo']}: {p['class']} ({p['probability']:.0%})")
    lines += ["", headline_table({"tracks": {name: track}}, name), ""]
    notes = _notes(track)
    if notes:
        lines += notes + [""]
    lines += [
        "Paired tests (each method against the best one, and against the controls):",
        "",
        comparisons_table(track),
        "",
        f"![metrics]({prefix}metrics.png)",
        "",
        f"![cascading randomisation]({prefix}randomisation.png)",
        "",
        f"![attributions]({prefix}attributions.png)",
        "",
    ]
    return lines


def markdown(results: dict) -> str:
    """The whole report: settings, definitions, each track, the centred pointing
    game, the findings and the published anchors."""
    env = results["environment"]
    lines = [
        "# Attribution methods side by side",
        "",
        f"Device: {env['device']} ({env['threads']} threads), torch {env['torch']}, "
        f"captum {env['captum']}; seed {results['settings']['seed']}; the run took "
        f"{results['wall_seconds']:.0f} s. Every value is a mean over images with its "
        f"{CONFIDENCE:.0%} interval in brackets; results.json keeps every per-image "
        "value.",
        "",
        "Definitions:",
        "",
    ]
    lines += [f"- {key}: {text}." for key, text in results["definitions"].items()]
    lines.append("")
    for name, track in results["tracks"].items():
        lines += _track_section(name, track)
    lines += _centred_section(results["centred"])
    lines += _findings_section(results["findings"])
    lines.append(PUBLISHED)
    return "\n".join(lines)
