"""`run_evaluation`: generate on a split, score, compare with baselines, write the files.

Outputs in `EvaluateConfig.out`: `metrics.json` (model metrics over the whole split and over
parsed rows only, per category, baselines, blank-image ablation, optionally the base model),
`predictions.parquet` (and `predictions_blank_image.parquet` / `predictions_base_model.parquet`
for the ablation / base model), `report.html`, `evaluate.yaml`
(the resolved config, so `vistune evaluate --config EVAL_DIR/evaluate.yaml` repeats it) and
a W&B run under `EVAL_DIR/wandb/` (offline unless logged in).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field

from vistune.answer import DEFAULT_QUESTION, DEFAULT_TEMPLATE, template_spec
from vistune.config import VistuneConfig, read_yaml
from vistune.device import Device, Precision, model_load_args
from vistune.errors import ConfigError, DataError
from vistune.outputs import atomic_output_dir, check_output_dir

#: Generation length when neither the run's config nor the user gives one.
DEFAULT_MAX_NEW_TOKENS = 64
#: Files that mark a folder as an evaluation's output (which a new evaluation may replace).
EVALUATION_MARKERS = ("metrics.json", "evaluate.yaml")


class EvaluateConfig(VistuneConfig):
    """Everything `vistune evaluate` needs. None means "the run's value, else the default"."""

    model: str = Field(
        description="Run dir, exported/model folder, adapter folder, hub id or 'tiny'."
    )
    data: Path | None = Field(None, description="Prepared dataset dir; default: the run's data.")
    split: str = "test"
    out: Path
    limit: int | None = Field(None, ge=1, description="Evaluate a seeded random subset of N rows.")
    batch_size: int = Field(8, ge=1)
    ablation: bool = Field(True, description="Also run the blank-image ablation.")
    compare_base: bool = Field(
        False, description="Also score the model the training run started from (run dirs only)."
    )
    question: str | None = None
    answer_template: str | None = None
    max_new_tokens: int | None = Field(None, ge=1)
    num_crops: int | None = Field(None, ge=1)
    precision: Precision = Field("auto", description="auto: bf16/fp16 on a CUDA GPU, fp32 on CPU.")
    device: Device = Field("auto", description="auto: the CUDA GPU when there is one.")
    seed: int = 0
    report_examples: int = Field(
        12, ge=0, description="Worst and best products shown in the report."
    )
    wandb: bool = Field(True, description="Log metrics and a predictions table to W&B.")
    wandb_project: str = "vistune"
    wandb_name: str | None = None
    wandb_table_rows: int = Field(100, ge=0)


@dataclass
class EvalResult:
    """What an evaluation produced (also written to `out_dir/metrics.json`)."""

    out_dir: Path
    metrics: dict[str, Any]
    metrics_parsed_only: dict[str, Any]
    per_category: dict[str, dict[str, Any]]
    baselines: dict[str, dict[str, Any]]
    ablation: dict[str, Any] | None
    groups: dict[str, Any]
    base_model: dict[str, Any] | None
    metrics_path: Path
    predictions_path: Path
    report_path: Path
    config_path: Path


def find_run_config(model: str) -> Path | None:
    """`config.yaml` of the training run `model` points at (the run dir or a folder in it).

    A run dir is a folder with `config.yaml` and `final/` or a `checkpoint-N/`, so an
    unrelated `config.yaml` next to an exported model is not mistaken for a run's.
    """
    path = Path(model)
    for candidate in (path, path.parent):
        config = candidate / "config.yaml"
        if config.is_file() and (
            (candidate / "final").is_dir() or any(candidate.glob("checkpoint-*/"))
        ):
            return config
    return None


def base_model_source(model: str) -> str:
    """What the training run behind `model` started from: the tiny model it built
    (`RUN_DIR/base_model`) or its `model` (folder or hub id)."""
    run_config = find_run_config(model)
    if run_config is None:
        raise ConfigError(
            f"compare_base: {model!r} is not a training run dir (no config.yaml), so there is no "
            "base model to compare with; evaluate the base model separately"
        )
    built = run_config.parent / "base_model"
    if (built / "config.json").is_file():
        return str(built)
    base = read_yaml(run_config).get("model")
    if not isinstance(base, str) or base == "tiny":
        raise ConfigError(f"{run_config}: no base model recorded (model: {base!r})")
    return base


def resolve_prompt_settings(
    model: str,
    *,
    question: str | None = None,
    answer_template: str | None = None,
    max_new_tokens: int | None = None,
    num_crops: int | None = None,
) -> dict[str, Any]:
    """Question, answer format, generation length and crops to use with `model`.

    When `model` is a training run dir (or its `final/`/`checkpoint-N/`), its `config.yaml`
    says how the model was prompted; evaluating with another question would measure the
    wrong thing. Values given explicitly win; otherwise vistune's defaults. The template is
    checked here, so an unparseable one fails before a model is loaded.
    """
    run: dict[str, Any] = {}
    run_config = find_run_config(model)
    if run_config is not None:
        run = read_yaml(run_config)
    settings = {
        "question": question or run.get("question") or DEFAULT_QUESTION,
        "answer_template": answer_template or run.get("answer_template") or DEFAULT_TEMPLATE,
        "max_new_tokens": max_new_tokens or run.get("max_answer_tokens") or DEFAULT_MAX_NEW_TOKENS,
        "num_crops": num_crops or run.get("num_crops"),
        "run_data": run.get("data"),
    }
    template_spec(settings["answer_template"])
    return settings


def prompt_settings_of(config: Any) -> dict[str, Any]:
    """`resolve_prompt_settings` for a command config (evaluate, predict, serve) that carries
    `model`, `question`, `answer_template`, `max_new_tokens` and `num_crops`."""
    return resolve_prompt_settings(
        config.model,
        question=config.question,
        answer_template=config.answer_template,
        max_new_tokens=config.max_new_tokens,
        num_crops=config.num_crops,
    )


def resolve_config(config: EvaluateConfig) -> EvaluateConfig:
    """`config` with the run's prompt settings and dataset filled in."""
    settings = prompt_settings_of(config)
    data = config.data or (Path(settings["run_data"]) if settings["run_data"] else None)
    if data is None:
        raise ConfigError(
            f"no dataset to evaluate {config.model!r} on: pass --data DIR (a prepared dataset dir)"
        )
    settings.pop("run_data")
    return config.model_copy(update={**settings, "data": data})


def run_evaluation(config: EvaluateConfig, *, show_progress: bool = True) -> EvalResult:
    """Evaluate a model on one split of a prepared dataset and write every output file."""
    import torch

    from vistune.data.dataset import load_split, open_image
    from vistune.evaluation.baselines import baseline_metrics
    from vistune.evaluation.generation import generate_predictions
    from vistune.evaluation.groups import grouped_metrics
    from vistune.evaluation.metrics import compute_metrics, per_category_metrics
    from vistune.evaluation.report import write_report
    from vistune.models.families import load_vlm

    config = resolve_config(config)
    base_source = base_model_source(config.model) if config.compare_base else None
    data = Path(config.data)
    frame = load_split(data, config.split)
    if frame.empty:
        raise DataError(f"{data}: split {config.split!r} has no rows to evaluate")
    train = load_split(data, "train")
    out = Path(config.out)
    check_output_dir(out, EVALUATION_MARKERS, "evaluation")  # before the long part
    if config.limit is not None and config.limit < len(frame):
        frame = frame.sample(n=config.limit, random_state=config.seed).sort_index()
    torch.manual_seed(config.seed)
    console = _console()
    _print_knobs(console, config, len(frame))

    started = time.perf_counter()
    load_args = {"num_crops": config.num_crops, **model_load_args(config.device, config.precision)}
    vlm = load_vlm(config.model, **load_args)
    vlm.model.eval()
    gen_args = {
        "question": config.question,
        "template": config.answer_template,
        "batch_size": config.batch_size,
        "max_new_tokens": config.max_new_tokens,
        "show_progress": show_progress,
    }
    predictions = generate_predictions(vlm, frame, data, **gen_args)
    ablation_predictions = (
        generate_predictions(vlm, frame, data, blank_image=True, **gen_args)
        if config.ablation
        else None
    )
    base_predictions = None
    if base_source is not None:
        del vlm  # one model in memory at a time
        base = load_vlm(base_source, **load_args)
        base.model.eval()
        base_predictions = generate_predictions(base, frame, data, **gen_args)
    seconds = time.perf_counter() - started

    metrics = compute_metrics(predictions)
    summary: dict[str, Any] = {
        "run": {
            "model": config.model,
            "data": str(data),
            "split": config.split,
            "question": config.question,
            "answer_template": config.answer_template,
            "max_new_tokens": config.max_new_tokens,
            "limit": config.limit,
            "seconds": round(seconds, 3),
        },
        "metrics": metrics,
        "metrics_parsed_only": compute_metrics(predictions, parsed_only=True),
        "per_category": per_category_metrics(predictions),
        "baselines": baseline_metrics(train, frame),
        "ablation": compute_metrics(ablation_predictions)
        if ablation_predictions is not None
        else None,
        "groups": grouped_metrics(train, frame, predictions, ablation_predictions),
        "base_model": (
            {"source": base_source, **compute_metrics(base_predictions)}
            if base_predictions is not None
            else None
        ),
        "definitions": _definitions(),
    }
    with atomic_output_dir(out, EVALUATION_MARKERS, "evaluation") as work:
        config.save(work / "evaluate.yaml")
        (work / "metrics.json").write_text(
            json.dumps(summary, indent=2, default=_json_default) + "\n"
        )
        predictions.to_parquet(work / "predictions.parquet", index=False)
        if ablation_predictions is not None:
            ablation_predictions.to_parquet(work / "predictions_blank_image.parquet", index=False)
        if base_predictions is not None:
            base_predictions.to_parquet(work / "predictions_base_model.parquet", index=False)
        write_report(
            work / "report.html",
            summary=summary,
            predictions=predictions,
            ablation=ablation_predictions,
            load_image=lambda rel: open_image(data, rel),
            n_examples=config.report_examples,
        )
        if config.wandb:
            log_to_wandb(config, summary, predictions, data, out_dir=work)
    config_path = out / "evaluate.yaml"
    metrics_path = out / "metrics.json"
    predictions_path = out / "predictions.parquet"
    report_path = out / "report.html"
    print_summary(console, summary)
    console.print(f"wrote {metrics_path}, {predictions_path}, {report_path}")
    return EvalResult(
        out_dir=out,
        metrics=metrics,
        metrics_parsed_only=summary["metrics_parsed_only"],
        per_category=summary["per_category"],
        baselines=summary["baselines"],
        ablation=summary["ablation"],
        groups=summary["groups"],
        base_model=summary["base_model"],
        metrics_path=metrics_path,
        predictions_path=predictions_path,
        report_path=report_path,
        config_path=config_path,
    )


def flat_summary(summary: dict[str, Any]) -> dict[str, float | int]:
    """`metrics.json` as flat W&B summary keys (numbers only).

    Keys: `eval/...`, `eval_parsed/...`, `ablation/...`, `baseline/<name>/...`,
    `category/<name>/...`, `<breakdown>_<group>/<predictor>/...` (e.g.
    `title_unseen/model/price_smape`, `combination_seen/baseline/category_median_price/...`).
    """
    flat: dict[str, float | int] = {}

    def put(prefix: str, values: dict[str, Any] | None) -> None:
        for key, value in (values or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"{prefix}/{key}"] = value

    put("eval", summary["metrics"])
    put("eval_parsed", summary["metrics_parsed_only"])
    put("ablation", summary.get("ablation"))
    put("base_model", summary.get("base_model"))
    for name, values in summary["baselines"].items():
        put(f"baseline/{name}", values)
    for name, values in summary["per_category"].items():
        put(f"category/{name}", values)
    for breakdown, entry in summary.get("groups", {}).items():
        for group, values in entry["groups"].items():
            prefix = f"{breakdown}_{group}"
            put(prefix, {"n": values["n"]})
            put(f"{prefix}/model", values.get("model"))
            put(f"{prefix}/ablation", values.get("ablation"))
            for name, baseline in (values.get("baselines") or {}).items():
                put(f"{prefix}/baseline/{name}", baseline)
    return flat


def log_to_wandb(
    config: EvaluateConfig,
    summary: dict[str, Any],
    predictions: pd.DataFrame,
    data_dir: Path,
    *,
    out_dir: Path | None = None,
) -> None:
    """Summary values and a predictions Table (with images) in a W&B run under `out/wandb/`
    (`out_dir`: the folder being written, when it is not `config.out` yet)."""
    from vistune.evaluation.tables import wandb_table
    from vistune.tracking import init_wandb

    run = init_wandb(
        out_dir or config.out,
        project=config.wandb_project,
        name=config.wandb_name or f"eval-{Path(config.model).name}-{config.split}",
        config=config.model_dump(mode="json"),
        job_type="eval",
    )
    try:
        run.summary.update(flat_summary(summary))
        if config.wandb_table_rows:
            table = wandb_table(predictions, data_dir, limit=config.wandb_table_rows)
            run.log({f"{config.split}_predictions": table})
    finally:
        run.finish()


def print_summary(console: Any, summary: dict[str, Any]) -> None:
    """A short table: the model vs the blank-image ablation vs the baselines."""
    from rich.table import Table

    from vistune.evaluation.report import HEADLINE_ROWS, headline_columns

    short = {
        "blank image (ablation)": "blank img",
        "before fine-tuning": "base",
        "global median price": "median $",
        "category median price": "cat. median $",
        "most frequent category": "top cat.",
    }
    columns = [
        (short.get(t, t), m) for t, m in headline_columns(summary) if "parsed rows only" not in t
    ]
    title = f"{summary['run']['split']} split, {summary['metrics']['n']} products"
    table = Table(title=title, caption="baselines fitted on train; see report.html")
    table.add_column("metric")
    for title, _ in columns:
        table.add_column(title, justify="right")
    for key, label, kind, _ in HEADLINE_ROWS:
        cells = []
        for _, metrics in columns:
            value = metrics.get(key)
            if value is None:
                cells.append("—")
            elif kind == "pct":
                cells.append(f"{100 * value:.1f}%")
            elif kind == "num":
                cells.append(f"{value:.3f}")
            else:
                cells.append(f"{value:,.2f}")
        table.add_row(label, *cells)
    console.print(table)
    if summary.get("groups"):
        console.print(seen_unseen_table(summary["groups"]))


#: (header, metric key) of the seen/unseen table (percentages; ↓ = lower is better). RMSLE,
#: median APE and the title metrics per group are in metrics.json and report.html.
GROUP_COLUMNS = (
    ("MAPE↓", "price_mape"),
    ("SMAPE↓", "price_smape"),
    ("≤10%", "price_within_10pct"),
    ("cat.acc", "category_accuracy"),
)
SHORT_PREDICTORS = {"category median price": "cat. median $", "global median price": "median $"}
SHORT_BREAKDOWNS = {"attribute combination": "combo"}


def seen_unseen_table(groups: dict[str, Any]) -> Any:
    """Test rows whose title (or attribute combination) the train split has, and the rest:
    the model, its blank-image ablation and the price baselines; unseen first. Fits 80
    columns."""
    from rich.table import Table

    from vistune.evaluation.groups import group_rows

    table = Table(
        title="seen vs unseen in training (the unseen rows show what generalises)",
        title_justify="left",
        caption="baselines fitted on train, scored on each group; more in report.html",
        caption_justify="left",
    )
    table.add_column("group", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("predictor", no_wrap=True)
    for header, _ in GROUP_COLUMNS:
        table.add_column(header, justify="right", no_wrap=True)
    previous = None
    for breakdown, group, n, predictor, values in group_rows(groups):
        first = (breakdown, group) != previous
        if first and previous is not None:
            table.add_section()
        previous = (breakdown, group)
        cells = [
            "–" if values.get(key) is None else f"{100 * values[key]:.1f}%"
            for _, key in GROUP_COLUMNS
        ]
        name = f"{group} {SHORT_BREAKDOWNS.get(breakdown, breakdown)}"
        table.add_row(
            name if first else "",
            str(n) if first else "",
            SHORT_PREDICTORS.get(predictor, predictor),
            *cells,
        )
    return table


def _print_knobs(console: Any, config: EvaluateConfig, rows: int) -> None:
    """What decides the numbers, printed before any work (paths and prompts as plain text)."""
    from rich.markup import escape

    console.print(
        f"evaluating [bold]{escape(config.model)}[/] on {escape(str(config.data))}"
        f" split={escape(config.split)} rows={rows} batch={config.batch_size}"
        f" max_new_tokens={config.max_new_tokens} num_crops={config.num_crops or 'model default'}"
        f" ablation={config.ablation} base_model={config.compare_base}"
    )
    console.print(
        escape(f"question: {config.question!r}  answer format: {config.answer_template!r}")
    )


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _definitions() -> dict[str, str]:
    from vistune.evaluation import baselines, groups, metrics

    return {
        "metrics": metrics.__doc__ or "",
        "baselines": baselines.__doc__ or "",
        "groups": groups.__doc__ or "",
    }


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
