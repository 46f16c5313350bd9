"""The benchmark report of one run: REPORT.md, results.json, frontier.png and reliability.png.

The report is computed from stored decision rows only, so it can be rebuilt (or repriced with
another `CostModel`) at any time without calling a model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spec_agent.actions import ACTION_KINDS
from spec_agent.cost import CostModel
from spec_agent.db.store import RunInfo, TraceStore
from spec_agent.errors import ConfigError
from spec_agent.eval.metrics import (
    CONFIDENCE,
    INVALID_KIND,
    METRIC_SPECS,
    METRICS,
    BenchmarkMetrics,
    MetricRow,
    compute_metrics,
    pareto_frontier,
)

logger = logging.getLogger(__name__)

MISSING = "—"


@dataclass(frozen=True, kw_only=True)
class ReportPaths:
    """Files written by `write_report`."""

    markdown: Path
    """REPORT.md: tables and notes for people."""
    results: Path
    """results.json: every number of the report, sorted keys."""
    frontier: Path
    """frontier.png: accuracy against per-call cost and against FLOPs relative to A."""
    reliability: Path | None = None
    """reliability.png: verifier score against observed correctness; None without A, B and D."""


def write_report(
    store: TraceStore, run_id: str, out_dir: Path, *, cost_model: CostModel | None = None
) -> ReportPaths:
    """Compute the metrics of a run and write REPORT.md, results.json and frontier.png.

    Args:
        store: Trace store that contains the run.
        run_id: Run to report on.
        out_dir: Folder for the three files; created when missing.
        cost_model: Prices to recompute costs with; None keeps the stored costs.

    Raises:
        ConfigError: The run is not in the store.
    """
    run = find_run(store, run_id)
    seed = _seed(run.config)
    metrics = compute_metrics(store.decisions(run_id), cost_model=cost_model, seed=seed)
    results = build_results(run, metrics)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(
        markdown=out_dir / "REPORT.md",
        results=out_dir / "results.json",
        frontier=out_dir / "frontier.png",
        reliability=out_dir / "reliability.png" if metrics.routing else None,
    )
    paths.results.write_text(
        json.dumps(results, sort_keys=True, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    paths.markdown.write_text(render_markdown(results, metrics), encoding="utf-8")
    plot_frontier(metrics, paths.frontier)
    if metrics.routing is not None and paths.reliability is not None:
        plot_reliability(metrics.routing, paths.reliability)
    logger.info("Wrote the report of run %s to %s", run_id, out_dir)
    return paths


def find_run(store: TraceStore, run_id: str) -> RunInfo:
    """Return the run with this id.

    Raises:
        ConfigError: No run has this id.
    """
    runs = store.runs()
    for run in runs:
        if run.run_id == run_id:
            return run
    known = ", ".join(run.run_id for run in runs[-5:]) or "none"
    raise ConfigError(f"Run {run_id!r} not found in the trace store; latest run ids: {known}.")


def _seed(config: dict[str, Any]) -> int:
    seed = config.get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else 0


def build_results(run: RunInfo, metrics: BenchmarkMetrics) -> dict[str, Any]:
    """Return the JSON-compatible content of results.json."""
    configs = metrics.configs.values()
    return {
        "run": run_metadata(run, seed=metrics.seed),
        "report": {
            "generated_at": datetime.now(UTC).isoformat(),
            "bootstrap": {
                "resamples": metrics.resamples,
                "confidence": CONFIDENCE,
                "seed": metrics.seed,
            },
            "call_prices": metrics.call_prices,
        },
        "metrics": {
            spec.key: {
                "label": spec.label,
                "direction": spec.direction,
                "description": spec.description,
            }
            for spec in METRICS
        },
        "configs": {name: row.to_dict() for name, row in metrics.configs.items()},
        "references": {name: row.to_dict() for name, row in metrics.references.items()},
        "frontier": list(metrics.frontier),
        "per_kind": {
            name: {
                item.kind: {"support": item.support, "accuracy": item.accuracy} for item in kinds
            }
            for name, kinds in metrics.per_kind.items()
        },
        "delta_vs_a": metrics.deltas,
        "kind_confusion": metrics.confusion,
        "routing": metrics.routing.to_dict() if metrics.routing else None,
        "examples": {
            "rows": sum(row.n for row in configs),
            "errors": sum(row.errors for row in configs),
        },
    }


def run_metadata(run: RunInfo, *, seed: int) -> dict[str, Any]:
    """Return the run's id, name, status, dates, settings and the settings' sha256."""
    config_text = json.dumps(run.config, sort_keys=True)
    return {
        "run_id": run.run_id,
        "name": run.name,
        "status": run.status,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "schema_version": run.schema_version,
        "config": run.config,
        "config_sha256": hashlib.sha256(config_text.encode("utf-8")).hexdigest(),
        "git_commit": run.config.get("git_commit"),
        "package_versions": run.config.get("package_versions"),
        "seed": seed,
    }


def render_markdown(results: dict[str, Any], metrics: BenchmarkMetrics) -> str:
    """Return REPORT.md: run header, main table, deltas vs A, per-kind table and reading notes."""
    sections = [
        _header(results),
        _main_table(metrics),
        _errors_section(metrics),
        _delta_table(metrics),
        _per_kind_table(metrics),
        _confusion_section(metrics),
        _target_section(metrics),
        _routing_section(metrics),
        _reading_notes(metrics),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _header(results: dict[str, Any]) -> str:
    run = results["run"]
    versions = run["package_versions"] or {}
    version_text = ", ".join(f"{name} {version}" for name, version in sorted(versions.items()))
    lines = [
        f"# Benchmark report: {run['name']}",
        "",
        f"- Run id: `{run['run_id']}` ({run['status']})",
        f"- Started: {run['created_at']}; finished: {run['finished_at'] or MISSING}",
        f"- Report generated: {results['report']['generated_at']}",
        f"- Git commit: `{run['git_commit'] or 'unknown'}`",
        f"- Seed: {run['seed']}; settings sha256: `{run['config_sha256'][:16]}`",
        f"- Package versions: {version_text or 'not recorded'}",
        *_trained_lines(run["config"] or {}),
        "",
        "<details><summary>Run settings</summary>",
        "",
        "```json",
        json.dumps(run["config"], sort_keys=True, indent=2),
        "```",
        "",
        "</details>",
    ]
    return "\n".join(lines)


def _trained_lines(config: dict[str, Any]) -> list[str]:
    """Describe the models of a run: base or adapter per proposer, and the trained verifier's quality."""
    settings = config.get("settings") or {}
    trained = config.get("trained") or {}
    lines = []
    for role in ("cheap", "strong"):
        model = settings.get(f"{role}_model", MISSING)
        adapter = trained.get(role)
        if adapter is None:
            lines.append(f"- {role.capitalize()} model: {model} (base weights, no adapter)")
            continue
        validation = adapter.get("validation") or {}
        loss = ""
        if "eval_loss_before" in validation:
            loss = f"; validation loss {validation['eval_loss_before']:.3f} -> {validation['eval_loss_after']:.3f}"
        head = adapter.get("opening_head")
        if head:
            loss += (f"; opening head kind accuracy {_number(head.get('validation_accuracy'))} on held-out "
                     f"train-split examples, against {_number(head.get('validation_likelihood_accuracy'))} "
                     "by likelihood")
            if head.get("kind_roc_auc") is not None:
                loss += (f", and ROC AUC {_number(head['kind_roc_auc'])} of its kind probability there "
                         f"(calibrated threshold {_number(head.get('kind_threshold'))})")
        lines.append(f"- {role.capitalize()} model: {model} with LoRA adapter `{adapter['folder']}` "
                     f"({adapter.get('steps')} steps{loss})")
    if settings.get("free_decoding"):
        lines.append("- Decoding of local models: free text")
    else:
        # Runs from before the call grammar existed have no `free_calls` setting; theirs were free.
        payloads = "free" if settings.get("free_calls", True) else "within the call grammar of the example's tools"
        lines.append(f"- Decoding of local models: a `kind:` opening, then tool payloads {payloads}")
    verifier = trained.get("verifier")
    prior = " times the cheap proposal's kind probability" if settings.get("kind_prior") else ""
    threshold = (settings.get("thresholds") or {}).get("verifier")
    if settings.get("verifier") == "kind":
        by_kind = settings.get("thresholds_by_kind") or {}
        per_kind = ", ".join(f"{kind} {_number(value)}" for kind, value in sorted(by_kind.items()))
        lines.append(f"- Verifier of D and E: the cheap proposal's kind probability (`KindVerifier`), threshold "
                     f"{_number(threshold)}" + (f"; per kind {per_kind}" if per_kind else ""))
        lines += _escalation_line(((trained.get("cheap") or {}).get("opening_head") or {}).get("escalation"))
    elif verifier is None:
        lines.append(f"- Verifier of D and E: {settings.get('verifier', MISSING)}{prior}, threshold "
                     f"{_number(threshold)}")
    else:
        validation = verifier.get("validation") or {}
        auc = validation.get("heldout_roc_auc")
        lines.append(f"- Verifier of D and E: trained classifier `{verifier['folder']}`{prior}; ROC AUC of the "
                     f"classifier on held-out train-split pairs {_number(auc)}; threshold {_number(threshold)}")
    if settings.get("max_cost") is not None:
        lines.append(f"- Escalation target: D's thresholds (and E's, when its three proposals cost less than the aim) "
                     f"move by one shared offset, learnt from the scores of earlier steps (no label is read), so that "
                     f"a step costs {_number(settings['max_cost'])} of a strong call on average (`--max-cost`)")
    shipped = trained.get("shipped_verifier")
    if shipped:
        auc = (shipped.get("validation") or {}).get("heldout_roc_auc")
        lines.append(f"- Trained classifier verifier `{shipped['folder']}` (not used by this run; `--verifier` "
                     f"with its folder uses it): ROC AUC {_number(auc)} on held-out train-split pairs of "
                     "(context, proposed action)")
    return lines


def _escalation_line(escalation: dict[str, Any] | None) -> list[str]:
    """Describe how `spec-agent train head` chose D's kind thresholds, when it did."""
    if not escalation:
        return []
    missed = "" if escalation.get("met") else " (no thresholds reached the floor; the closest were kept)"
    return [f"- D's kind thresholds were chosen on {escalation.get('rows', MISSING)} held-out train-split examples "
            f"as the cheapest that keep D's kind accuracy within {_number(escalation.get('max_accuracy_drop'))} of "
            f"the strong head's ({_number(escalation.get('strong_accuracy'))}): there D scored "
            f"{_number(escalation.get('accuracy'))} at cost {_number(escalation.get('cost'))}{missed}"]


def _column(key: str, label: str | None = None) -> str:
    spec = METRIC_SPECS[key]
    return f"{label or spec.label} {spec.arrow}"


MAIN_COLUMNS: tuple[str, ...] = (
    "Row",
    "n",
    "Errors",
    _column("kind_accuracy") + " [95% CI]",
    _column("full_accuracy") + " [95% CI]",
    _column("cost") + " [95% CI]",
    _column("flops_vs_a"),
    _column("accept_rate"),
    _column("false_accept_rate"),
    _column("false_accept_share"),
    _column("escalation_rate"),
    _column("invalid_rate"),
    _column("latency_p50", "Latency p50/p95 (s)"),
    _column("on_frontier"),
)


def _main_table(metrics: BenchmarkMetrics) -> str:
    rows = [*metrics.configs.values(), *metrics.references.values()]
    lines = ["## Results", "", _table_line(MAIN_COLUMNS), _table_line(["---"] * len(MAIN_COLUMNS))]
    lines += [_table_line(_main_cells(row)) for row in rows]
    if not rows:
        lines.append("\nNo decision rows are stored for this run.")
    return "\n".join(lines)


def _main_cells(row: MetricRow) -> list[str]:
    name = f"**{row.name}**" if row.role == "config" else f"{row.name} ({row.description})"
    frontier = MISSING
    if row.on_frontier is not None:
        frontier = "yes" if row.on_frontier else "no"
    return [
        name,
        str(row.n),
        str(row.errors) if row.role == "config" else MISSING,
        _with_ci(row.kind_accuracy, row.kind_accuracy_ci),
        _with_ci(row.full_accuracy, row.full_accuracy_ci),
        _with_ci(row.cost, row.cost_ci),
        _number(row.flops_vs_a, suffix="×"),
        _number(row.accept_rate),
        _number(row.false_accept_rate),
        _number(row.false_accept_share),
        _number(row.escalation_rate),
        _number(row.invalid_rate),
        f"{_number(row.latency_p50, digits=2)} / {_number(row.latency_p95, digits=2)}",
        frontier,
    ]


def _errors_section(metrics: BenchmarkMetrics) -> str:
    total = sum(row.n for row in metrics.configs.values())
    errors = sum(row.errors for row in metrics.configs.values())
    parts = ", ".join(f"{row.name} {row.errors}/{row.n}" for row in metrics.configs.values())
    return (
        f"Errored examples: {errors} of {total} decision rows ({parts or 'no rows'}). "
        "They are kept in every metric as stored, usually as wrong answers."
    )


def _delta_table(metrics: BenchmarkMetrics) -> str:
    if not metrics.deltas:
        return (
            "## Against configuration A\n\n"
            "Configuration A did not run, so there is no comparison."
        )
    columns = ("Config", "Δ kind acc ↑", "Δ full acc ↑", "Δ cost ↓", "Cost vs A ↓")
    lines = ["## Against configuration A", "", _table_line(columns), _table_line(["---"] * 5)]
    for name, delta in metrics.deltas.items():
        cells = [
            name,
            _number(delta["kind_accuracy"], signed=True),
            _number(delta["full_accuracy"], signed=True),
            _number(delta["cost"], signed=True),
            _number(delta["cost_ratio"], suffix="×"),
        ]
        lines.append(_table_line(cells))
    return "\n".join(lines)


def _per_kind_table(metrics: BenchmarkMetrics) -> str:
    names = list(metrics.per_kind)
    if not names:
        return ""
    columns = ["Gold kind", *[f"{name} acc ↑ (support)" for name in names]]
    lines = ["## Kind accuracy per gold kind", "", _table_line(columns)]
    lines.append(_table_line(["---"] * len(columns)))
    kinds = [item.kind for item in metrics.per_kind[names[0]]]
    for index, kind in enumerate(kinds):
        cells = [kind]
        for name in names:
            item = metrics.per_kind[name][index]
            cells.append(f"{_number(item.accuracy)} ({item.support})")
        lines.append(_table_line(cells))
    return "\n".join(lines)


def _confusion_section(metrics: BenchmarkMetrics) -> str:
    """Render, per configuration, which kind was chosen for each gold kind (rows gold, columns chosen)."""
    if not metrics.confusion:
        return ""
    chosen_kinds = [*ACTION_KINDS, INVALID_KIND]
    lines = ["## Chosen kind per gold kind", "",
             "Rows are gold kinds and columns the kind of the chosen action; `invalid` counts decisions "
             "with no valid action. The diagonal is the correct share."]
    for name, table in metrics.confusion.items():
        used = [kind for kind in chosen_kinds if any(kind in row for row in table.values())]
        lines += ["", f"<details><summary>{name}</summary>", "",
                  _table_line(["gold \\ chosen", *used]), _table_line(["---"] * (len(used) + 1))]
        for gold in [kind for kind in ACTION_KINDS if kind in table]:
            lines.append(_table_line([gold, *[str(table[gold].get(kind, 0)) for kind in used]]))
        lines += ["", "</details>"]
    return "\n".join(lines)


def _reading_notes(metrics: BenchmarkMetrics) -> str:
    prices = ", ".join(f"{role} {price:g}" for role, price in sorted(metrics.call_prices.items()))
    lines = [
        "## How to read this report",
        "",
        "↑ marks a column where higher is better, ↓ one where lower is better. "
        f"{MISSING} means the metric does not apply (e.g. A has no proposer) or has no support.",
        "",
        "- **Row**: configurations A–E in bold (A strong model only; B cheap model unverified; "
        "C cheap proposes, strong judges; D cheap proposes, small verifier decides; "
        "E three cheap proposals, verifier picks), then reference rows.",
        "- **n**: examples in the row. **Errors**: examples stored with an error.",
    ]
    lines += [f"- **{spec.label}**: {spec.description}" for spec in METRICS]
    lines += [
        f"- **[95% CI]**: percentile bootstrap over examples, {metrics.resamples} resamples, "
        f"seed {metrics.seed}.",
        f"- **Call prices** (relative to one strong call): {prices or 'not recorded'}.",
        "- **Reference rows**: random is the exact expectation of a uniform guess among the nine "
        "kinds; majority always answers the most frequent gold kind; oracle picks per example the "
        "cheapest configuration with the right kind (its full accuracy counts an example when any "
        "configuration got it fully right); random-escalation keeps B's action and escalates a "
        "random share of examples to A at D's escalation rate, costing one cheap call, one "
        "verifier call and that share of a strong call.",
        "- **Per-kind table**: kind accuracy on the examples of each gold kind, with the support "
        f"in brackets; a kind with support 0 shows {MISSING}.",
    ]
    return "\n".join(lines)


def _table_line(cells: list[str] | tuple[str, ...]) -> str:
    return "| " + " | ".join(cells) + " |"


def _number(
    value: float | None, *, digits: int = 3, suffix: str = "", signed: bool = False
) -> str:
    if value is None:
        return MISSING
    sign = "+" if signed else ""
    return f"{value:{sign}.{digits}f}{suffix}"


def _with_ci(value: float | None, interval: tuple[float, float] | None) -> str:
    if value is None:
        return MISSING
    if interval is None:
        return _number(value)
    return f"{_number(value)} [{_number(interval[0])}, {_number(interval[1])}]"


def plot_frontier(metrics: BenchmarkMetrics, path: Path) -> Path:
    """Draw kind accuracy against per-call cost and against FLOPs relative to A into a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    cost_axes, flops_axes = figure.subplots(1, 2)
    cost_label = "Mean cost per example (per-call model, strong call = 1)"
    _draw_panel(cost_axes, metrics, x_key="cost", x_label=cost_label)
    flops_label = "Mean FLOPs per example relative to A"
    _draw_panel(flops_axes, metrics, x_key="flops_vs_a", x_label=flops_label)
    figure.suptitle("Kind accuracy against cost (error bars: 95% bootstrap CI)")
    figure.savefig(path, dpi=120)
    return path


def _draw_panel(axes: Any, metrics: BenchmarkMetrics, *, x_key: str, x_label: str) -> None:
    configs = [row for row in metrics.configs.values() if _point(row, x_key)]
    for index, row in enumerate(configs):
        _draw_config(axes, row, x_key, label="configurations" if index == 0 else None)
    points = {row.name: _point(row, x_key) for row in configs}
    frontier = pareto_frontier(points)  # type: ignore[arg-type]
    if x_key == "cost" and metrics.routing is not None:
        routing = metrics.routing
        axes.plot(routing.cost, routing.kind_accuracy, "--", color="tab:orange", alpha=0.8,
                  label="D threshold sweep (replayed)")
    if frontier:
        xs, ys = zip(*(points[name] for name in frontier), strict=True)
        axes.plot(xs, ys, "-", color="tab:blue", alpha=0.6, label="Pareto frontier (A–E)")
    for index, row in enumerate(metrics.references.values()):
        # Alternate label sides because random and majority often sit close together at cost 0.
        offset = (6, -12) if index % 2 == 0 else (6, 6)
        label = "reference rows" if index == 0 else None
        _draw_reference(axes, row, x_key, label=label, offset=offset)
    if not configs:
        axes.text(
            0.5, 0.5, "no data for this axis", ha="center", va="center", transform=axes.transAxes
        )
    axes.set_xlabel(x_label)
    axes.set_ylabel("Kind accuracy")
    axes.set_ylim(-0.02, 1.05)
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="best", fontsize="small")


def _point(row: MetricRow, x_key: str) -> tuple[float, float] | None:
    x = getattr(row, x_key)
    if x is None or row.kind_accuracy is None:
        return None
    return float(x), row.kind_accuracy


def _draw_config(axes: Any, row: MetricRow, x_key: str, *, label: str | None) -> None:
    x, y = _point(row, x_key)  # type: ignore[misc]
    x_error = _error_bar(row.cost, row.cost_ci) if x_key == "cost" else None
    y_error = _error_bar(row.kind_accuracy, row.kind_accuracy_ci)
    axes.errorbar(
        [x],
        [y],
        xerr=x_error,
        yerr=y_error,
        fmt="o",
        color="tab:blue",
        capsize=3,
        markersize=7,
        label=label,
    )
    axes.annotate(row.name, (x, y), textcoords="offset points", xytext=(6, 6), fontweight="bold")


def _draw_reference(
    axes: Any, row: MetricRow, x_key: str, *, label: str | None, offset: tuple[int, int]
) -> None:
    point = _point(row, x_key)
    if point is None:
        return
    axes.plot(*point, marker="D", linestyle="none", color="tab:gray", markersize=6, label=label)
    axes.annotate(
        row.name,
        point,
        textcoords="offset points",
        xytext=offset,
        color="dimgray",
        fontsize="small",
    )


def _error_bar(
    value: float | None, interval: tuple[float, float] | None
) -> list[list[float]] | None:
    if value is None or interval is None:
        return None
    return [[max(0.0, value - interval[0])], [max(0.0, interval[1] - value)]]



def _target_section(metrics: BenchmarkMetrics) -> str:
    target = metrics.routing.target if metrics.routing is not None else None
    if target is None:
        return ""
    lines = [
        "## D against its target",
        "",
        f"Target: D's kind accuracy within {target.max_accuracy_drop:.2f} of A's "
        f"({_number(target.a_kind_accuracy)}) at no more than {target.max_cost_ratio:.2f} of A's cost.",
        "",
        _table_line(("Point", "Threshold", "Kind acc ↑", "Δ vs A ↑", "Cost vs A ↓", "Escalation ↓",
                     "Accuracy met", "Cost met")),
        _table_line(["---"] * 8),
    ]
    for point in target.points:
        accurate, cheap = target.meets(point)
        lines.append(_table_line([
            point.label, _number(point.threshold), _number(point.kind_accuracy),
            _number(point.kind_accuracy - target.a_kind_accuracy, signed=True), _number(point.cost_ratio),
            _number(point.escalation_rate), "yes" if accurate else "no", "yes" if cheap else "no",
        ]))
    lines += [
        "",
        "The replayed points choose a global threshold on this run's own examples, so they are "
        "optimistic for new ones. The perfect router escalates only examples whose kind A gets right "
        "and the proposal gets wrong, cheapest first, besides the proposals that did not parse: no "
        "verifier can do better with these two models at these prices. Where the perfect router meets the target and D does not, the gap is the "
        "verifier's ranking of proposals (ROC AUC, kind, in the routing section); where it does not, "
        "the two models cannot meet it at these prices.",
    ]
    return "\n".join(lines)


def _routing_section(metrics: BenchmarkMetrics) -> str:
    routing = metrics.routing
    if routing is None:
        return "## Routing\n\nThe run lacks A, B or D, so there is no threshold sweep."
    cpt = routing.cpt
    lines = [
        "## Routing",
        "",
        f"D's verifier threshold replayed over {len(routing.thresholds)} values from the stored "
        "rows (no model calls; the dashed line on frontier.png).",
        "",
        f"- APGR ↑ (RouteLLM, B weak, A strong, kind accuracy): {_number(routing.apgr)}",
        f"- CPT(50%) ↓: {_number(cpt.get('50'))}; CPT(80%) ↓: {_number(cpt.get('80'))} "
        "(share of examples sent to the strong model)",
        "",
        _table_line(("Config", "IBC ↑", "ΔIBC % ↑", "False-reject rate ↓", "Wasted tokens ↓",
                     "Wasted cost ↓")),
        _table_line(["---"] * 6),
    ]
    for name in sorted(set(routing.ibc) | set(routing.wasted_cost)):
        lines.append(_table_line([
            name,
            _number(routing.ibc.get(name)),
            _number(routing.delta_ibc.get(name), digits=1, signed=True),
            _number(routing.false_reject_rate.get(name)),
            _number(routing.wasted_tokens.get(name), digits=1),
            _number(routing.wasted_cost.get(name)),
        ]))
    lines += ["", _table_line(("Score", "n", "Correct", "ROC AUC ↑", "ECE ↓", "n (kind)", "ROC AUC, kind ↑")),
              _table_line(["---"] * 7)]
    for quality in routing.verifiers:
        lines.append(_table_line([
            quality.score, str(quality.n), str(quality.positives), _number(quality.roc_auc),
            _number(quality.reliability.ece), str(quality.kind_n), _number(quality.kind_roc_auc),
        ]))
    lines += [
        "",
        "IBC (AutoMix): accuracy gained over B per unit of extra cost; ΔIBC compares it with A's "
        "slope. False-reject rate: escalated examples whose proposal was fully correct (from B's "
        "row of the same example). Wasted tokens and cost: cheap and scoring calls of escalated "
        "examples, per example. ROC AUC and ECE: each stored score against the full correctness "
        "of the proposal it scored; reliability.png shows the bins. ROC AUC, kind: the same score "
        "against whether the proposal's kind was right, over every proposal it scored.",
    ]
    return "\n".join(lines)


def plot_reliability(routing: Any, path: Path) -> Path:
    """Draw each stored score's reliability curve (mean score against observed accuracy) into a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
    for quality in routing.verifiers:
        curve = quality.reliability
        points = [(x, y) for x, y in zip(curve.mean_score, curve.observed, strict=True) if x is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            auc = _number(quality.roc_auc)
            axes.plot(xs, ys, "o-", label=f"{quality.score} (AUC {auc}, n={quality.n})")
    axes.set_xlabel("Mean score in bin")
    axes.set_ylabel("Share of fully correct proposals")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    figure.suptitle("Reliability of stored proposal scores")
    figure.savefig(path, dpi=120)
    return path
