"""The experiments' report and, end to end on tiny data, ``python -m experiments``."""

import json

import pytest

from experiments import report, transfer
from experiments.__main__ import main, run
from experiments.sources import NETWORKS
from tests.helpers import tiny_training_args


def _results() -> dict:
    """Hand-made results in the shape ``experiments.run`` returns."""
    networks = {
        n.key: {
            "label": n.label,
            "test_top1": 0.90 - 0.01 * i,
            "train_top1": 0.95,
            "parameters": 1000 + i,
        }
        for i, n in enumerate(NETWORKS)
    }
    measures = {
        "filters": 24,
        "stride": 4,
        "dead_filters": [3, 7],
        "high_frequency": 0.25,
        "above_own_nyquist": 0.5,
        "shift_variation": 0.125,
        "layer2_jump": 8,
    }
    result = {
        "modes": {m: {1: [50.0, 60.0], 30: [80.0, 80.0]} for m in transfer.MODES},
        "probe": {"conv1": [40.0, 44.0], "fc6": [70.0, 70.0], "fc7": [80.0, 80.0]},
        "probe_budget": 30,
        "seeds": [0, 1],
        "modes_s": 5,
        "probe_s": 5,
    }
    environment = {"date": "today", "machine": "x", "threads": 2, "torch": "2"}
    return {
        "environment": {**environment, "load_average": 3.0},
        "seconds": {"total": 90, "networks": 60, "diagnosis": 10, "transfer": 20},
        "networks": networks,
        "diagnosis": {
            "krizhevsky_layer1": measures,
            "zfnet": {**measures, "stride": 2, "dead_filters": []},
        },
        "diagnosis_images": 100,
        "shift_images": 50,
        "transfer": {target: result for target in transfer.TARGETS},
    }


def test_tables_put_the_runs_numbers_beside_the_papers_labelled_rows():
    results = _results()
    ablations = report.ablation_table(results).splitlines()
    row = next(line for line in ablations if line.startswith("| Removed layers 3,4 |"))
    # ours: index 4 of NETWORKS, error 100 - 86 = 14.0, +4.0 against ZFNet's 10.0
    assert "| 14.0 | +4.0 |" in row
    assert "45.4 (+4.9 on Krizhevsky's network)" in row  # the paper's, 45.4 - 40.5
    assert "paper" in ablations[0]
    diagnosis = report.diagnosis_table(results)
    assert "| dead layer-1 filters | 2 of 24 | 0 of 24 |" in diagnosis
    assert "| 12.5 |" not in diagnosis and "| 0.125 | 0.125 |" in diagnosis
    modes = report.transfer_table(results)
    assert "| 55.0 ± 7.1 | 80.0 ± 0.0 |" in modes  # mean and sample std of 50, 60
    probe = report.probe_table(results).splitlines()
    assert probe[4] == "| conv1 | 42.0 ± 2.8 | 42.0 ± 2.8 | 44.8 ± 0.7 |  |"
    assert probe[5] == "| fc6 | 70.0 ± 0.0 | 70.0 ± 0.0 |  |  |"  # no fc6 in the paper


def test_the_report_is_written_from_the_results(tmp_path):
    path = report.write(_results(), tmp_path)
    text = path.read_text()
    assert "It took 1 min 30 s" in " ".join(text.split())
    assert "(paper +4.9)" in text  # Table 3's 45.4 - 40.5
    assert "from 42.0 % on conv1" in text
    assert "load average was 3.0" in " ".join(text.split())


@pytest.mark.slow
def test_make_experiments_runs_end_to_end_on_tiny_data(fake_data_dir, tmp_path):
    pytest.importorskip("sklearn")
    extra = tuple(a for a in tiny_training_args(fake_data_dir) if "data_dir" not in a)
    plan = transfer.Plan(
        budgets=(2,),
        seeds=(0,),
        probe_budget=2,
        probe_layers=("conv1", "fc7"),
        extra=("--trainer.max_steps=2", "--data.test_per_class=2"),
    )
    results = run(
        tmp_path / "out",
        tmp_path / "runs",
        str(fake_data_dir),
        plan=plan,
        extra=(*extra, "--trainer.limit_test_batches=2"),
    )
    assert set(results["networks"]) == {n.key for n in NETWORKS}
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    for target in transfer.TARGETS:
        assert saved["transfer"][target]["probe"].keys() == {"conv1", "fc7"}
    for figure in ("fig6.png", "diagnosis.png", "transfer.png"):
        assert (tmp_path / "out" / "figures" / figure).stat().st_size > 0
    report_md = tmp_path / "out" / "report.md"
    written = report_md.read_text()
    assert "## 3. Transfer" in written
    report_md.unlink()
    main(["--out", str(tmp_path / "out"), "--report-only"])
    assert report_md.read_text() == written
