"""The HTML report of the demo run: its tables and pictures are built by the workflow, `snakemake --report`
collects them, and a headless Chromium (Debian's package) opens the page and shows the metrics table."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
from conftest import REPO, load, required, run_snakemake

DEMO = "Task900_SegflowDemo"
PNG = b"\x89PNG\r\n\x1a\n"


def table_cells(path: Path) -> list[list[str]]:
    """The rows of one of the report's HTML tables, header first."""
    text = path.read_text()
    return [re.findall(r"<t[hd]>(.*?)</t[hd]>", row) for row in re.findall(r"<tr>(.*?)</tr>", text)]


def test_report_tables_and_overlays_agree_with_the_run(demo_run):
    out = demo_run / "results" / DEMO
    report = out / "report"
    crossval = table_cells(report / "crossval.html")
    assert crossval[0][:6] == ["candidate", "label", "Dice", "IoU", "HD95", "NSD"]
    selection = load(out / "selection.json")
    foreground = {row[0]: float(row[2]) for row in crossval[1:] if row[1] == "foreground"}
    assert foreground.keys() == selection["scores"].keys()
    for candidate, score in selection["scores"].items():
        assert foreground[candidate] == round(score, 4)
    assert {row[1] for row in crossval[1:]} == {"organ 1", "lesion 2", "foreground"}
    plans = load(out / "plans.json")
    plan_table = table_cells(report / "plans.html")
    assert plan_table[0][:5] == ["plans", "configuration", "network", "spacing", "median shape"]
    plan_rows = {row[1]: row for row in plan_table[1:]}
    assert plan_rows.keys() == plans["configurations"].keys()
    assert {row[0] for row in plan_table[1:]} == {"nnUNetPlans"}
    assert plan_rows["3d_fullres"][2] == "PlainConvUNet"
    assert plan_rows["3d_fullres"][5] == str(plans["configurations"]["3d_fullres"]["patch_size"])
    dataset = dict(table_cells(report / "dataset.html")[1:])
    assert dataset["training cases"] == "10" and dataset["labels"] == "background: 0, organ: 1, lesion: 2"
    chosen = dict(table_cells(report / "selection.html")[1:])
    assert chosen["selected"] == selection["best"]
    if selection["postprocessing"]:
        assert chosen["postprocessing"].startswith("keep the largest component of labels")
    else:
        assert chosen["postprocessing"] == "none accepted"
    estimated = {c["name"]: c["epoch_s"] for c in load(out / "budget.json")["candidates"]}
    budget_table = table_cells(report / "budget.html")
    assert budget_table[0][3:] == ["s per epoch, estimated", "s per epoch, measured", "measured / estimated"]
    for name, _, _, estimate, measured, ratio in budget_table[1:]:
        logs = [out / "train" / name / f"fold_{f}" / "training_log.jsonl" for f in (0, 1)]
        epochs = sorted(json.loads(line)["epoch_seconds"] for log in logs for line in log.read_text().splitlines())
        assert float(estimate) == round(estimated[name], 1)
        assert float(measured) == round((epochs[2] + epochs[3]) / 2, 1)  # the median of 6 epochs
        assert float(ratio) == round(float(np.median(epochs)) / estimated[name], 2)
    assert [row[0] for row in budget_table[1:]] == sorted(estimated)
    pictures = sorted(p.name for p in (report / "overlays").iterdir())
    assert pictures == [f"test_demo_50{i}.png" for i in range(3)] + ["validation_fold_0.png", "validation_fold_1.png"]
    assert all((report / "overlays" / p).read_bytes()[:8] == PNG for p in pictures)


def test_report_builds_and_chromium_shows_the_metrics_table(demo_run, tmp_path):
    html = demo_run / "report.html"
    run_snakemake(demo_run, "--report", str(html))
    text = html.read_text()
    for category in ("1. Dataset", "2. Plans", "3. Training", "4. Cross-validation", "5. Selection", "6. Overlays"):
        assert f'"{category}"' in text
    progress = re.findall(rf"results/{DEMO}/train/(\w+)/fold_(\d)/progress.png", text)
    assert set(progress) == {(c, f) for c in ("2d", "3d_fullres") for f in "01"}

    chromium = shutil.which("chromium")
    if chromium is None:
        required("Debian's chromium is not installed (apt-get install chromium)")
    shown = tmp_path / "report_metrics.html"
    shown.write_text(with_script(text, SHOW_CROSSVAL))
    screenshot = tmp_path / "report_metrics.png"
    browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    shot = subprocess.run(
        [
            *browser,
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,900",
            f"--screenshot={screenshot}",
            shown.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    console = [line for line in shot.stderr.splitlines() if ":CONSOLE" in line]
    assert not [line for line in console if "Uncaught" in line or "Error" in line], console
    assert screenshot.read_bytes()[:8] == PNG
    dom = subprocess.run([*browser, "--dump-dom", shown.as_uri()], capture_output=True, text=True, timeout=120).stdout
    frame = re.search(r'<iframe src="data:text/html;charset=utf8;filename=crossval.html;base64,([^"]+)"', dom)
    assert frame, "the report did not show the cross-validation table"
    table = base64.b64decode(frame.group(1)).decode()
    assert "Cross-validation metrics" in table and "ensemble__2d__3d_fullres" in table


# Opens the cross-validation table the way a click in the report's menu does.
SHOW_CROSSVAL = """
window.addEventListener("load", () => setTimeout(() => {
  const path = Object.keys(results).find((p) => p.endsWith("/report/crossval.html"));
  app.showCategory("4. Cross-validation");
  app.setView({ content: "html", contentPath: results[path].data_uri, resultPath: path });
}, 300));
"""


def with_script(page: str, script: str) -> str:
    end = page.rfind("</body>")
    return f"{page[:end]}<script>{script}</script>{page[end:]}"


def test_report_builds_in_an_environment_of_a_plain_install(demo_run, plain_python, tmp_path):
    """`snakemake --report` with only what `pip install .` brings (no test extras): CI makes such an environment
    and names its Python in SEGFLOW_PLAIN_PYTHON."""
    html = tmp_path / "report.html"
    command = [plain_python, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(demo_run)]
    result = subprocess.run([*command, "--report", str(html)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"4. Cross-validation"' in html.read_text()
