"""`vistune demo`: the whole pipeline on a laptop CPU in minutes, with nothing to download.

    synthetic catalog -> prepare -> train the tiny Phi-3-vision -> evaluate on held-out
    products (baselines, blank-image ablation, report.html, W&B offline run) -> summary
    -> the same numbers on test products whose title / attribute combination training
       never saw (the realistic catalog's titles are mostly unique, so most are unseen)

Every stage is the real one (`generate_catalog`, `prepare_dataset`, `run_training` with the
shipped `configs/tiny-demo.yaml`, `run_evaluation`); the demo only chooses small sizes and
puts the outputs side by side under one folder:

    OUT/catalog/   the synthetic catalog (catalog.parquet + images/)
    OUT/data/      the prepared dataset dir (train/validation/test.parquet, manifest.json)
    OUT/run/       the training run (config.yaml, final/, wandb/)
    OUT/eval/      the evaluation (metrics.json, predictions.parquet, report.html, wandb/)
    OUT/demo.json  the headline numbers and how long each stage took
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field
from rich.console import Console
from rich.table import Table

from vistune.config import VistuneConfig
from vistune.errors import ConfigError

#: The shipped recipe the demo trains with (configs/tiny-demo.yaml in the source tree).
DEMO_RECIPE = "tiny-demo.yaml"
#: Written first into OUT; a folder holding it may be cleared by the next demo run.
MARKER = "demo.yaml"
STAGE_DIRS = ("catalog", "data", "run", "eval")

T = TypeVar("T")


class DemoConfig(VistuneConfig):
    """Options of `vistune demo`; saved as `OUT/demo.yaml`."""

    out: Path = Path("vistune-demo")
    rows: int = Field(3040, ge=100, description="Products in the synthetic catalog.")
    preset: Literal["realistic", "simple"] = Field(
        "simple",
        description="Which synthetic catalog (see `vistune sample --preset`); the tiny model "
        "does not learn the realistic one within the demo's budget.",
    )
    holdout_combinations: int = Field(
        8,
        ge=0,
        description="Attribute combinations held out of training into test, so the test "
        "split has products the model never saw (see `vistune prepare`).",
    )
    steps: int | None = Field(None, ge=1, description="Training steps (default: the recipe's).")
    seed: int = 0
    image_size: int = Field(128, ge=32, description="Pixels of the rendered product photos.")
    recipe: str = Field(DEMO_RECIPE, description="A shipped config name or a YAML path.")
    train_overrides: list[str] = Field(default_factory=list)
    eval_batch_size: int = Field(64, ge=1)
    threads: int | None = Field(
        None, ge=1, description="Torch CPU threads (default: all cores but one, at least 1)."
    )


@dataclass
class DemoResult:
    """Where everything went and the numbers the summary table shows."""

    out: Path
    data_dir: Path
    run_dir: Path
    eval_dir: Path
    report_path: Path
    metrics: dict[str, Any]
    baselines: dict[str, dict[str, Any]]
    ablation: dict[str, Any] | None
    wandb_runs: list[Path]
    groups: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def default_threads() -> int:
    """All available cores but one (at least 1), never more than torch would use.

    The tiny model's operations are small, and a thread that has to wait for a busy core
    stalls every one of them. Measured on this project's 2-core machine, one training step
    (batch 32): idle, 0.26 s with 2 threads and 0.47 s with 1; with other processes running,
    9.4 s with 2 threads and 0.49 s with 1. So the default gives up a core to stay fast when
    the machine is shared; `--threads` overrides it.
    """
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(torch.get_num_threads(), (cores or 1) - 1))


def shipped_config(name: str) -> Any:
    """A recipe from the package's `configs/` (the same files as the repository's `configs/`)."""
    resource = files("vistune") / "configs" / name
    if not resource.is_file():
        available = sorted(p.name for p in (files("vistune") / "configs").iterdir())
        raise ConfigError(f"no shipped config {name!r}; available: {', '.join(available)}")
    return resource


def load_train_config(config: DemoConfig, data_dir: Path, run_dir: Path) -> Any:
    """The training config: the demo recipe with the demo's data, output, steps and seed."""
    from vistune.training.config import TrainConfig

    explicit = {"data": data_dir, "output": run_dir, "max_steps": config.steps, "seed": config.seed}
    recipe = Path(config.recipe)
    if recipe.suffix in (".yaml", ".yml") and recipe.is_file():
        return TrainConfig.load(recipe, config.train_overrides, **explicit)
    with as_file(shipped_config(config.recipe)) as path:
        return TrainConfig.load(path, config.train_overrides, **explicit)


def clear_previous_demo(out: Path) -> None:
    """Make `out` ready: new, empty, or a previous demo's folder (whose outputs are removed).

    Any other non-empty folder is refused, so the demo never deletes files it did not write.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    if not any(out.iterdir()):
        return
    if not (out / MARKER).is_file():
        raise ConfigError(
            f"--out {out}: folder is not empty and holds no {MARKER} from an earlier demo; "
            "choose another --out (the demo only replaces its own outputs)"
        )
    for name in STAGE_DIRS:
        shutil.rmtree(out / name, ignore_errors=True)
    (out / "demo.json").unlink(missing_ok=True)


def run_demo(config: DemoConfig, console: Console | None = None) -> DemoResult:
    """Run every stage; return where the outputs are and the headline numbers."""
    import torch

    console = console or Console(stderr=True)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads or default_threads())
    try:
        return _run_stages(config, console)
    finally:
        torch.set_num_threads(previous_threads)


def _run_stages(config: DemoConfig, console: Console) -> DemoResult:
    import torch

    from vistune.data.prepare import PrepareConfig, prepare_dataset
    from vistune.data.sample import generate_catalog
    from vistune.evaluation.runner import EvaluateConfig, run_evaluation
    from vistune.training.run import run_training

    out = Path(config.out)
    catalog_dir, data_dir, run_dir, eval_dir = (out / name for name in STAGE_DIRS)
    clear_previous_demo(out)
    config.save(out / MARKER)
    train_config = load_train_config(config, data_dir, run_dir)  # fail on a bad recipe first
    seconds: dict[str, float] = {}

    def stage(name: str, title: str, work: Callable[[], T]) -> T:
        console.rule(f"[bold]{title}")
        started = time.perf_counter()
        value = work()
        seconds[name] = round(time.perf_counter() - started, 1)
        console.print(f"[dim]{name}: {seconds[name]:.1f} s[/]")
        return value

    stage(
        "sample",
        f"1/4 synthetic catalog ({config.preset} preset): {config.rows:,} products",
        lambda: generate_catalog(
            catalog_dir,
            rows=config.rows,
            seed=config.seed,
            image_size=config.image_size,
            preset=config.preset,
        ),
    )
    held = config.holdout_combinations
    stage(
        "prepare",
        "2/4 prepare: validate, deduplicate, split by product"
        + (f", {held} attribute combinations only in test" if held else ""),
        lambda: prepare_dataset(
            PrepareConfig(
                source=str(catalog_dir),
                out=data_dir,
                seed=config.seed,
                holdout_combinations=held,
            ),
            show_progress=True,
        ),
    )
    stage(
        "train",
        f"3/4 train the tiny Phi-3-vision from scratch: {train_config.max_steps} steps, "
        f"{torch.get_num_threads()} CPU thread(s)",
        lambda: run_training(train_config),
    )
    evaluation = stage(
        "evaluate",
        "4/4 evaluate on held-out products, with baselines and a blank-image ablation",
        lambda: run_evaluation(
            EvaluateConfig(
                model=str(run_dir),
                data=data_dir,
                split="test",
                out=eval_dir,
                batch_size=config.eval_batch_size,
                seed=config.seed,
                wandb_project=train_config.wandb.project,
                wandb_name=f"{run_dir.name}-eval",
            )
        ),
    )
    result = DemoResult(
        out=out,
        data_dir=data_dir,
        run_dir=run_dir,
        eval_dir=eval_dir,
        report_path=evaluation.report_path,
        metrics=evaluation.metrics,
        baselines=evaluation.baselines,
        ablation=evaluation.ablation,
        groups=evaluation.groups,
        wandb_runs=find_wandb_runs(out),
        seconds=seconds,
    )
    write_summary(result)
    return result


def find_wandb_runs(out: Path) -> list[Path]:
    """Local W&B run folders the demo wrote (offline runs, or online runs' local copies)."""
    return sorted(p for p in out.glob("*/wandb/*run-*") if p.is_dir())


def write_summary(result: DemoResult) -> Path:
    path = result.out / "demo.json"
    summary = {
        "metrics": result.metrics,
        "baselines": result.baselines,
        "ablation": result.ablation,
        "groups": result.groups,
        "seconds": result.seconds,
        "report": str(result.report_path),
        "wandb_runs": [str(p) for p in result.wandb_runs],
    }
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return path


#: (row label, metric key) in the order the summary shows them; ↓ = lower is better.
METRIC_ROWS = (
    ("parse rate", "parse_rate"),
    ("price MAPE ↓", "price_mape"),
    ("price SMAPE ↓", "price_smape"),
    ("within 10 %", "price_within_10pct"),
    ("category acc.", "category_accuracy"),
    ("title exact", "title_exact"),
)
#: (column header, where its numbers are): the model, its ablation, then the baselines.
PREDICTORS = (
    ("model", "model"),
    ("blank image", "ablation"),
    ("cat. median $", "category_median_price"),
    ("median $", "global_median_price"),
    ("top cat.", "most_frequent_category"),
)


def summary_table(result: DemoResult) -> Table:
    """Model vs blank-image ablation vs baselines on the held-out products (narrow enough
    for an 80-column terminal; the full breakdown is in report.html)."""
    sources: dict[str, dict[str, Any] | None] = {
        "model": result.metrics,
        "ablation": result.ablation,
        **result.baselines,
    }
    columns = [(header, sources[key]) for header, key in PREDICTORS if sources.get(key)]
    table = Table(
        title=f"held-out test products (n={result.metrics.get('n')})",
        title_justify="left",
        caption="baselines fitted on the train split; details in report.html",
        caption_justify="left",
    )
    table.add_column("metric", no_wrap=True)
    for header, _ in columns:
        table.add_column(header, justify="right", no_wrap=True)
    for label, key in METRIC_ROWS:
        cells = []
        for _, values in columns:
            value = values.get(key) if values else None
            cells.append("–" if value is None else f"{value:.3f}")
        table.add_row(label, *cells)
    return table


def verdict(result: DemoResult) -> list[str]:
    """Two sentences a newcomer can check against the table."""
    lines = []
    parsed = result.metrics.get("parse_rate")
    if parsed is not None and parsed < 0.5:
        lines.append(
            f"only {parsed:.0%} of the model's answers parsed (the rest count as misses): the "
            "tiny model learns the answer format from scratch and needs more training steps "
            "(--steps; the default 500 parses all of them)"
        )
    model_mape = result.metrics.get("price_mape")
    baseline = result.baselines.get("category_median_price", {}).get("price_mape")
    if model_mape is not None and baseline:
        ratio = baseline / model_mape if model_mape else float("inf")
        better = "lower" if model_mape < baseline else "NOT lower"
        lines.append(
            f"price: MAPE {model_mape:.3f}, {better} than the median price of the product's "
            f"category ({baseline:.3f}, {ratio:.1f}x)"
        )
    if result.ablation is not None:
        lines.append(
            "a blank image instead of the photo: category accuracy "
            f"{result.metrics.get('category_accuracy', 0):.3f} -> "
            f"{result.ablation.get('category_accuracy', 0):.3f}, price MAPE "
            f"{model_mape or 0:.3f} -> {result.ablation.get('price_mape', 0):.3f}"
        )
    return lines


def unseen_verdict(result: DemoResult) -> list[str]:
    """Per breakdown: the model on the products it never saw vs the category median."""
    lines = []
    for breakdown, entry in result.groups.items():
        unseen = entry["groups"].get("unseen", {})
        if not unseen.get("n"):
            lines.append(f"unseen {breakdown}s: none in the test split")
            continue
        model = unseen["model"]
        baseline = unseen["baselines"]["category_median_price"]
        parts = []
        for label, key in (("MAPE", "price_mape"), ("SMAPE", "price_smape")):
            mine, theirs = model.get(key), baseline.get(key)
            if mine is None or theirs is None:
                continue
            better = "beats" if mine < theirs else "does NOT beat"
            parts.append(f"{label} {mine:.3f} {better} the category median's {theirs:.3f}")
        lines.append(f"unseen {breakdown}s (n={unseen['n']}): " + "; ".join(parts))
    return lines


def print_summary(result: DemoResult, console: Console) -> None:
    from vistune.evaluation.runner import seen_unseen_table

    console.print()
    console.print(summary_table(result))
    for line in verdict(result):
        console.print(line)
    total = sum(result.seconds.values())
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    console.print(f"[dim]took {total:.0f} s ({stages})[/]")
    console.print()
    console.print(f"report      {result.report_path}")
    console.print(f"model       {result.run_dir / 'final'}")
    console.print(f"predictions {result.eval_dir / 'predictions.parquet'}")
    offline = [p for p in result.wandb_runs if p.name.startswith("offline-run-")]
    for run in result.wandb_runs:
        console.print(f"W&B run     {run}")
    if offline:
        console.print("upload the offline W&B runs to wandb.ai (after `wandb login`):")
        console.print(f"  wandb sync {result.out}/*/wandb/offline-run-*", soft_wrap=True)
    console.print(f"serve it    vistune serve {result.run_dir}")
    if result.groups:
        console.print()
        console.print(seen_unseen_table(result.groups))
        for line in unseen_verdict(result):
            console.print(line)
