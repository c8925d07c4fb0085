"""`report.html`: one self-contained page a person opens to judge a model.

Everything is inside the file (no CDN, no external URL): plots are PNGs drawn with
matplotlib's Agg backend and embedded as data URIs, product images are embedded as small
JPEG thumbnails. The page shows first the metrics on test products unseen in training (by
title and, on the synthetic catalog, by attribute combination) next to those seen, then the
headline metrics next to the baselines and the blank-image ablation, a true-vs-predicted
price scatter on log axes, a histogram of price errors, the per-category table, the parse
failures by reason, and a grid of the worst and best products with the expected and
generated answers.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

#: (key, label, format, higher_is_better) of the headline rows, in display order.
HEADLINE_ROWS: tuple[tuple[str, str, str, bool], ...] = (
    ("parse_rate", "Parse rate", "pct", True),
    ("price_mape", "Price MAPE ↓", "pct", False),
    ("price_smape", "Price SMAPE ↓", "pct", False),
    ("price_rmsle", "Price RMSLE ↓", "num", False),
    ("price_median_ape", "Price median APE ↓", "pct", False),
    ("price_within_10pct", "Price within 10 %", "pct", True),
    ("price_within_25pct", "Price within 25 %", "pct", True),
    ("price_mae", "Price MAE ↓", "money", False),
    ("title_exact", "Title exact match", "pct", True),
    ("title_similarity", "Title similarity", "pct", True),
    ("category_accuracy", "Category accuracy", "pct", True),
    ("category_macro_f1", "Category macro-F1", "pct", True),
)

UNPARSED_NOTE = (
    "Whole-split metrics count an answer that does not parse as a miss: its price error is "
    "the full true price (APE = 100 %), it is never within 10 %/25 %, and its title and "
    "category are wrong. A parsed price can be off by more than 100 %, so read these with the "
    "parse rate and the parsed-only column. Baselines are fitted on the train split: the "
    "global median price, the median price of the product's true category (it is given the "
    "category), and the most frequent category. The blank-image ablation asks the same model "
    'the same question with a uniform grey image of the same size; "before fine-tuning" (when '
    "asked for) is the model the training run started from, with the same prompts."
)

ImageLoader = Callable[[str], Image.Image]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;
max-width:1200px;color:#1d1d1f;padding:0 16px;line-height:1.4}
h1{font-size:1.6em;margin-bottom:4px}h2{margin-top:32px;border-bottom:1px solid #ddd;
padding-bottom:4px}.muted{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:8px 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f4f4f6}
td:not(:first-child){white-space:nowrap}
td.best{font-weight:bold;background:#e8f6ea}td.na{color:#aaa}
.plots{display:flex;flex-wrap:wrap;gap:16px}.plots img{max-width:100%;height:auto;
border:1px solid #eee}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px;font-size:.82em;
background:#fafafa;overflow-wrap:anywhere}
.card img{display:block;margin:0 auto 6px;width:160px;max-width:100%;height:auto}
.card .lbl{color:#666;font-size:.9em}.card .bad{color:#b00020}.card .ok{color:#1b7f3b}
code{background:#f4f4f6;padding:1px 4px;border-radius:3px}
"""


def write_report(
    path: str | Path,
    *,
    summary: Mapping[str, Any],
    predictions: pd.DataFrame,
    load_image: ImageLoader,
    ablation: pd.DataFrame | None = None,
    n_examples: int = 12,
    thumbnail_px: int = 192,
) -> Path:
    """Write the report for one evaluation; `summary` is the content of metrics.json."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        render_report(
            summary=summary,
            predictions=predictions,
            load_image=load_image,
            ablation=ablation,
            n_examples=n_examples,
            thumbnail_px=thumbnail_px,
        ),
        encoding="utf-8",
    )
    return path


def render_report(
    *,
    summary: Mapping[str, Any],
    predictions: pd.DataFrame,
    load_image: ImageLoader,
    ablation: pd.DataFrame | None = None,
    n_examples: int = 12,
    thumbnail_px: int = 192,
) -> str:
    """The report as one HTML string (see the module docstring)."""
    worst, best = worst_and_best(predictions, n_examples)
    esc = html.escape
    info = summary.get("run", {})
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>vistune evaluation: {esc(str(info.get('model', '')))}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>vistune evaluation</h1>",
        _run_line(info, summary),
        *_groups_section(summary.get("groups") or {}),
        "<h2>Headline metrics</h2>",
        _headline_table(summary),
        f"<p class='muted'>{esc(UNPARSED_NOTE)}</p>",
        "<h2>Prices</h2><div class='plots'>",
        _img_tag(price_scatter_png(predictions, ablation), "true vs predicted price"),
        _img_tag(error_histogram_png(predictions, ablation), "price error histogram"),
        "</div>",
        "<h2>Per category</h2>",
        _category_table(summary.get("per_category", {})),
        "<h2>Parse failures</h2>",
        _failure_table(predictions),
        f"<h2>Worst {len(worst)} products</h2>",
        "<p class='muted'>Unparsed answers first, then by price error (APE).</p>",
        _card_grid(worst, load_image, thumbnail_px),
        f"<h2>Best {len(best)} products</h2>",
        _card_grid(best, load_image, thumbnail_px),
        f"<p class='muted'>Generated {esc(_now())} by vistune.</p></body></html>",
    ]
    return "\n".join(parts)


def worst_and_best(predictions: pd.DataFrame, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Worst rows (unparsed first, then highest APE) and best rows (parsed, lowest APE)."""
    ranked = predictions.assign(
        _unparsed=~predictions["parse_ok"].astype(bool),
        _ape=predictions["ape"].fillna(np.inf),
        _wrong_cat=predictions["pred_category"] != predictions["true_category"],
    )
    worst = ranked.sort_values(["_unparsed", "_ape"], ascending=[False, False], kind="stable")
    parsed = ranked[~ranked["_unparsed"]]
    best = parsed.sort_values(["_ape", "_wrong_cat"], kind="stable")
    worst = worst.head(n)
    best = best[~best.index.isin(worst.index)].head(n)
    return worst, best


def price_scatter_png(predictions: pd.DataFrame, ablation: pd.DataFrame | None = None) -> bytes:
    """True vs predicted price on log-log axes, the y = x line and a ±25 % band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 5.0), dpi=100)
    ok = predictions["parse_ok"].astype(bool) & (predictions["pred_price"] > 0)
    true_all = predictions["true_price"][predictions["true_price"] > 0]
    values = [*true_all, *predictions.loc[ok, "pred_price"]]
    if ablation is not None:
        aok = ablation["parse_ok"].astype(bool) & (ablation["pred_price"] > 0)
        values += list(ablation.loc[aok, "pred_price"])
        ax.scatter(
            ablation.loc[aok, "true_price"],
            ablation.loc[aok, "pred_price"],
            s=14,
            alpha=0.5,
            marker="x",
            color="#999999",
            label=f"blank image ({int(aok.sum())} parsed)",
        )
    ax.scatter(
        predictions.loc[ok, "true_price"],
        predictions.loc[ok, "pred_price"],
        s=16,
        alpha=0.7,
        color="#1f6feb",
        label=f"model ({int(ok.sum())} of {len(predictions)} parsed)",
    )
    if values:
        lo, hi = min(values) / 1.3, max(values) * 1.3
        line = np.geomspace(lo, hi, 50)
        ax.plot(line, line, color="#222222", lw=1, label="y = x")
        ax.fill_between(line, line * 0.75, line * 1.25, color="#2ea043", alpha=0.12, label="±25 %")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_ticks(ax)
    if not ok.any():
        _no_data(ax, "no answer parsed: nothing to plot")
    ax.set_xlabel("true full price")
    ax.set_ylabel("predicted full price")
    ax.set_title("True vs predicted price (log scale)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, which="both", alpha=0.2)
    return _png(fig)


def error_histogram_png(predictions: pd.DataFrame, ablation: pd.DataFrame | None = None) -> bytes:
    """Signed price error (predicted - true) / true of parsed rows, clipped to -100..+200 %."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 5.0), dpi=100)
    bins = np.linspace(-100, 200, 31)
    series = [("model", predictions, "#1f6feb", "stepfilled", 0.6)]
    if ablation is not None:
        series.append(("blank image", ablation, "#666666", "step", 1.0))
    for label, frame, color, kind, alpha in series:
        ok = frame["parse_ok"].astype(bool) & (frame["true_price"] > 0)
        legend = f"{label} ({int(ok.sum())} parsed, {len(frame) - int(ok.sum())} not)"
        if not ok.any():
            ax.plot([], [], color=color, label=legend)
            continue
        true = frame.loc[ok, "true_price"]
        signed = (frame.loc[ok, "pred_price"] - true) / true
        clipped = np.clip(signed.to_numpy() * 100, -100, 200)
        ax.hist(clipped, bins=bins, color=color, histtype=kind, alpha=alpha, lw=1.5, label=legend)
    if not any(f["parse_ok"].astype(bool).any() for _, f, *_ in series):
        _no_data(ax, "no answer parsed: nothing to plot")
        ax.set_yticks([])
    ax.axvline(0, color="#222222", lw=1)
    for edge in (-25, 25):
        ax.axvline(edge, color="#2ea043", lw=1, ls="--")
    ax.set_xlim(-105, 205)
    ax.set_xlabel("price error, % of true price (clipped at -100 / +200)")
    ax.set_ylabel("products")
    ax.set_title("Price error of parsed answers")
    ax.legend(loc="upper right", fontsize=8)
    return _png(fig)


def thumbnail_data_uri(image: Image.Image, max_px: int) -> str:
    """A JPEG data URI of `image` shrunk to at most `max_px` on its longer side."""
    thumb = image.convert("RGB")
    thumb.thumbnail((max_px, max_px))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _no_data(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="#b00020")


def _plain_log_ticks(ax: Any) -> None:
    """Ticks at 1, 2, 5 x 10^k written as plain numbers (no overlapping 3x10^3 labels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    _pyplot().close(fig)
    return buffer.getvalue()


def _img_tag(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def _run_line(info: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    esc = html.escape
    bits = [
        f"model <code>{esc(str(info.get('model', '?')))}</code>",
        f"data <code>{esc(str(info.get('data', '?')))}</code>",
        f"split <code>{esc(str(info.get('split', '?')))}</code>",
        f"{summary.get('metrics', {}).get('n', 0)} products",
    ]
    template = info.get("answer_template")
    question = info.get("question")
    extra = ""
    if question or template:
        extra = (
            f"<div class='muted'>question <code>{esc(str(question))}</code> · answer format "
            f"<code>{esc(str(template))}</code></div>"
        )
    return "<div class='muted'>" + " · ".join(bits) + "</div>" + extra


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    if kind == "pct":
        return f"{100 * value:.1f} %"
    if kind == "money":
        return f"{value:,.2f}"
    if kind == "num":
        return f"{value:.3f}"
    return str(value)


def headline_columns(summary: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(column title, metrics) pairs of the headline table, in display order."""
    columns: list[tuple[str, Mapping[str, Any]]] = [
        ("model", summary.get("metrics", {})),
        ("model, parsed rows only", summary.get("metrics_parsed_only", {})),
    ]
    if summary.get("ablation"):
        columns.append(("blank image (ablation)", summary["ablation"]))
    if summary.get("base_model"):
        columns.append(("before fine-tuning", summary["base_model"]))
    names = {
        "global_median_price": "global median price",
        "category_median_price": "category median price",
        "most_frequent_category": "most frequent category",
    }
    for key, title in names.items():
        if key in summary.get("baselines", {}):
            columns.append((title, summary["baselines"][key]))
    return columns


def _headline_table(summary: Mapping[str, Any]) -> str:
    columns = headline_columns(summary)
    comparable = [i for i, (title, _) in enumerate(columns) if "parsed rows only" not in title]
    rows = ["<table><tr><th>metric</th>"]
    rows += [f"<th>{html.escape(title)}</th>" for title, _ in columns]
    rows.append("</tr>")
    for key, label, kind, higher in HEADLINE_ROWS:
        values = [metrics.get(key) for _, metrics in columns]
        candidates = [values[i] for i in comparable if values[i] is not None]
        best = None
        if len(candidates) > 1 and max(candidates) != min(candidates):  # ties everywhere: no bold
            best = (max if higher else min)(candidates)
        rows.append(f"<tr><td>{html.escape(label)}</td>")
        for i, value in enumerate(values):
            cls = "na" if value is None else ("best" if i in comparable and value == best else "")
            rows.append(f"<td class='{cls}'>{_fmt(value, kind)}</td>")
        rows.append("</tr>")
    rows.append("</table>")
    rows.append(
        "<p class='muted'>Bold: best of the model, the ablation and the baselines on the whole "
        "split (the parsed-only column is not compared).</p>"
    )
    return "".join(rows)


GROUP_METRICS = (
    ("parse_rate", "parse rate", "pct"),
    ("price_mape", "MAPE ↓", "pct"),
    ("price_smape", "SMAPE ↓", "pct"),
    ("price_rmsle", "RMSLE ↓", "num"),
    ("price_median_ape", "median APE ↓", "pct"),
    ("price_within_10pct", "within 10 %", "pct"),
    ("category_accuracy", "category acc.", "pct"),
    ("title_exact", "title exact", "pct"),
    ("title_similarity", "title sim.", "pct"),
)
GROUPS_NOTE = (
    "A test product is seen when its title (or its attribute combination: category, material, "
    "pattern, size) occurs in the train split, unseen otherwise. Seen products can be "
    "answered from memory; the unseen ones show what the model learned to read from the "
    "picture. Baselines are fitted on the whole train split and scored on each group's rows."
)


def _groups_section(groups: Mapping[str, Any]) -> list[str]:
    """The seen/unseen table (unseen first), or nothing for an old metrics.json."""
    from vistune.evaluation.groups import group_rows

    rows = group_rows(dict(groups))
    if not rows:
        return []
    out = ["<h2>Unseen vs seen in training</h2><table><tr><th>by</th><th>group</th><th>n</th>"]
    out += ["<th>predictor</th>", *(f"<th>{html.escape(h)}</th>" for _, h, _ in GROUP_METRICS)]
    out.append("</tr>")
    for breakdown, group, n, predictor, values in rows:
        out.append(
            f"<tr><td>{html.escape(breakdown)}</td><td>{group}</td><td>{n}</td>"
            f"<td>{html.escape(predictor)}</td>"
        )
        for key, _, kind in GROUP_METRICS:
            value = values.get(key)
            out.append(f"<td class='{'na' if value is None else ''}'>{_fmt(value, kind)}</td>")
        out.append("</tr>")
    out.append(f"</table><p class='muted'>{html.escape(GROUPS_NOTE)}</p>")
    return out


def _category_table(per_category: Mapping[str, Mapping[str, Any]]) -> str:
    if not per_category:
        return "<p class='muted'>No rows.</p>"
    cols = (
        ("n", "n", "int"),
        ("parse_rate", "parse rate", "pct"),
        ("category_accuracy", "category recall", "pct"),
        ("price_mape", "price MAPE", "pct"),
        ("price_median_ape", "median APE", "pct"),
        ("price_within_25pct", "within 25 %", "pct"),
        ("title_exact", "title exact", "pct"),
    )
    rows = ["<table><tr><th>true category</th>"]
    rows += [f"<th>{label}</th>" for _, label, _ in cols]
    rows.append("</tr>")
    for category, metrics in sorted(per_category.items(), key=lambda kv: -kv[1].get("n", 0)):
        rows.append(f"<tr><td>{html.escape(category)}</td>")
        rows += [f"<td>{_fmt(metrics.get(key), kind)}</td>" for key, _, kind in cols]
        rows.append("</tr>")
    rows.append("</table>")
    return "".join(rows)


def _failure_table(predictions: pd.DataFrame) -> str:
    failed = predictions[~predictions["parse_ok"].astype(bool)]
    if failed.empty:
        return "<p>Every answer parsed.</p>"
    rows = [
        "<table><tr><th>reason</th><th>answers</th>"
        "<th style='text-align:left'>example answer</th></tr>"
    ]
    groups = sorted(failed.groupby("parse_error", sort=True), key=lambda kv: -len(kv[1]))
    for reason, group in groups:
        example = str(group["generated"].iloc[0])
        rows.append(
            f"<tr><td>{html.escape(str(reason))}</td><td>{len(group)}</td>"
            f"<td style='text-align:left'><code>{html.escape(example[:160])}</code></td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _card_grid(rows: pd.DataFrame, load_image: ImageLoader, thumbnail_px: int) -> str:
    if rows.empty:
        return "<p class='muted'>None.</p>"
    esc = html.escape
    cards = ["<div class='grid'>"]
    for row in rows.itertuples(index=False):
        uri = thumbnail_data_uri(load_image(str(row.image)), thumbnail_px)
        if row.parse_ok:
            verdict = (
                f"<span class='{'ok' if row.ape <= 0.25 else 'bad'}'>price error "
                f"{100 * row.ape:.1f} %</span> · category "
                + (
                    "<span class='ok'>right</span>"
                    if row.pred_category == row.true_category
                    else "<span class='bad'>wrong</span>"
                )
            )
        else:
            verdict = f"<span class='bad'>not parsed: {esc(str(row.parse_error))}</span>"
        generated = esc(str(row.generated)) or "<i>(empty)</i>"
        cards.append(
            f"<div class='card'><img alt='{esc(str(row.image))}' src='{uri}'>"
            f"<div class='lbl'>row {esc(str(row.source_row))} · expected</div>"
            f"<div>{esc(str(row.expected))}</div>"
            f"<div class='lbl'>generated</div><div>{generated}</div>"
            f"<div>{verdict}</div></div>"
        )
    cards.append("</div>")
    return "".join(cards)
