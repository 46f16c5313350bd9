"""Tests of the benchmark report written from a small synthetic trace store."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest
from matplotlib.image import imread

from spec_agent.actions import ACTION_KINDS, TOOL_KINDS, Action, ToolCall
from spec_agent.cost import CostModel, ModelCall
from spec_agent.db.store import DecisionRow, SqlTraceStore
from spec_agent.decision import Decision, Proposal
from spec_agent.errors import ConfigError
from spec_agent.eval.metrics import METRICS, compute_metrics
from spec_agent.eval.report import MAIN_COLUMNS, write_report

PRICES = CostModel().call_prices
# Share of examples with the right kind, per configuration.
PLAN = {"A": 0.7, "B": 0.5, "C": 0.7, "D": 0.65, "E": 0.6}


def _action(kind: str) -> Action:
    if kind in TOOL_KINDS:
        return Action(kind=kind, tool_calls=(ToolCall(name="ls"),))
    return Action(kind=kind, content="text")


def _decision(config: str, gold: Action, right: bool, rng: random.Random) -> Decision:
    wrong_kind = "BLOCKED" if gold.kind != "BLOCKED" else "final_answer"
    answer = gold if right else _action(wrong_kind)
    proposal = Proposal(text="p", action=answer if rng.random() > 0.1 else None)
    cheap = ModelCall(role="cheap", model="small", prompt_tokens=100, completion_tokens=10)
    strong = ModelCall(role="strong", model="big", prompt_tokens=100, completion_tokens=10)
    verifier = ModelCall(role="verifier", model="clf", prompt_tokens=110)
    if config == "A":
        direct = Decision(decision="direct", fallback=Proposal(text="s", action=answer))
        return _priced(direct, [strong])
    if config == "B":
        return _priced(Decision(decision="unverified", proposals=(proposal,), chosen=0), [cheap])
    second = verifier if config != "C" else ModelCall(role="judge", model="big", prompt_tokens=110)
    if rng.random() < 0.6 and proposal.valid:
        accepted = Decision(
            decision="accept", proposals=(proposal,), scores=(0.9,), verdicts=("ACCEPT",), chosen=0
        )
        return _priced(accepted, [cheap, second])
    escalated = Decision(
        decision="escalate",
        proposals=(proposal,),
        scores=(0.1,),
        verdicts=("REJECT",),
        fallback=Proposal(text="s", action=answer),
    )
    return _priced(escalated, [cheap, second, strong])


def _priced(decision: Decision, calls: list[ModelCall]) -> Decision:
    model = CostModel(parameters={"cheap": 1.35e8, "strong": 5e8, "verifier": 2.2e7, "judge": 5e8})
    return Decision(
        decision=decision.decision,
        proposals=decision.proposals,
        scores=decision.scores,
        verdicts=decision.verdicts,
        chosen=decision.chosen,
        fallback=decision.fallback,
        threshold=0.5,
        calls=tuple(calls),
        cost=model.call_cost(calls),
        flops=model.token_flops(calls),
        latency_s=0.05 * len(calls),
    )


def _fill(store: SqlTraceStore, examples: int = 30) -> str:
    rng = random.Random(5)
    config = {"seed": 11, "git_commit": "abc123", "package_versions": {"numpy": "2.4.6"}}
    run_id = store.start_run(name="synthetic", config=config)
    kinds = [kind for kind in ACTION_KINDS if kind != "repair"]
    for name, accuracy in PLAN.items():
        rows = []
        for index in range(examples):
            gold = _action(kinds[index % len(kinds)])
            right = rng.random() < accuracy
            decision = _decision(name, gold, right, rng)
            rows.append(
                DecisionRow.from_decision(
                    decision, run_id=run_id, config=name, example_id=f"ex-{index}", source="test",
                    scenario=f"s{index}", gold=gold, kind_correct=right,
                    full_correct=right and index % 3 > 0,
                    error="backend timed out" if name == "E" and index == 0 else None,
                )
            )
        store.log_decisions(run_id, rows)
    store.finish_run(run_id, "finished")
    return run_id


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    store = SqlTraceStore(f"sqlite:///{folder / 'traces.sqlite'}")
    run_id = _fill(store)
    paths = write_report(store, run_id, folder / "out")
    yield store, run_id, paths
    store.close()


def test_report_files_exist(report):
    _, _, paths = report
    assert paths.markdown.is_file()
    assert paths.results.is_file()
    assert paths.frontier.is_file()


def test_markdown_has_rows_and_headers(report):
    _, _, paths = report
    markdown = paths.markdown.read_text(encoding="utf-8")
    for name in ("A", "B", "C", "D", "E"):
        assert f"| **{name}** |" in markdown
    for name in ("random", "majority", "oracle", "random-escalation"):
        assert f"| {name} (" in markdown
    for column in MAIN_COLUMNS:
        assert column in markdown
    assert "Kind acc ↑ [95% CI]" in markdown
    assert "Cost/call model ↓ [95% CI]" in markdown


def test_markdown_has_metadata(report):
    _, run_id, paths = report
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert run_id in markdown
    assert "`abc123`" in markdown
    assert "numpy 2.4.6" in markdown
    assert "Seed: 11" in markdown


def test_markdown_counts_errors(report):
    _, _, paths = report
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert "Errored examples: 1 of 150 decision rows" in markdown
    assert "E 1/30" in markdown


def test_markdown_defines_columns(report):
    _, _, paths = report
    notes = paths.markdown.read_text(encoding="utf-8").split("## How to read this report")[1]
    for spec in METRICS:
        assert f"**{spec.label}**" in notes


def test_per_kind_shows_missing_support(report):
    _, _, paths = report
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert "| repair | — (0) | — (0) | — (0) | — (0) | — (0) |" in markdown


def test_results_match_metrics(report):
    store, run_id, paths = report
    results = json.loads(paths.results.read_text(encoding="utf-8"))
    expected = compute_metrics(store.decisions(run_id), seed=11)
    for name, row in expected.configs.items():
        assert results["configs"][name] == row.to_dict()
    for name, row in expected.references.items():
        assert results["references"][name] == row.to_dict()
    assert results["frontier"] == list(expected.frontier)
    assert results["delta_vs_a"] == expected.deltas
    assert results["per_kind"]["A"]["repair"] == {"support": 0, "accuracy": None}


def test_results_metadata(report):
    _, run_id, paths = report
    results = json.loads(paths.results.read_text(encoding="utf-8"))
    assert results["run"]["run_id"] == run_id
    assert results["run"]["git_commit"] == "abc123"
    assert results["run"]["seed"] == 11
    assert results["run"]["status"] == "finished"
    assert results["metrics"]["cost"]["direction"] == "lower"
    assert results["report"]["bootstrap"]["resamples"] == 1000


def test_results_keys_sorted(report):
    _, _, paths = report
    text = paths.results.read_text(encoding="utf-8")
    assert list(json.loads(text)) == sorted(json.loads(text))


def test_frontier_png_valid(report):
    _, _, paths = report
    assert paths.frontier.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(paths.frontier)
    assert image.shape[0] > 400
    assert image.shape[1] > 1000


def test_cost_model_reprices(report, tmp_path):
    store, run_id, _ = report
    prices = {
        "strong": Decimal(2),
        "cheap": Decimal("0.3"),
        "verifier": Decimal("0.1"),
        "judge": Decimal(2),
    }
    paths = write_report(store, run_id, tmp_path, cost_model=CostModel(call_prices=prices))
    results = json.loads(paths.results.read_text(encoding="utf-8"))
    assert results["configs"]["A"]["cost"] == pytest.approx(2.0)
    assert results["configs"]["B"]["cost"] == pytest.approx(0.3)


def test_unknown_run_rejected(report, tmp_path):
    store, _, _ = report
    with pytest.raises(ConfigError, match="not found"):
        write_report(store, "missing", tmp_path)


def test_empty_run_reports(tmp_path):
    store = SqlTraceStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    run_id = store.start_run(name="empty", config={})
    paths = write_report(store, run_id, tmp_path / "out")
    assert "No decision rows" in paths.markdown.read_text(encoding="utf-8")
    assert json.loads(paths.results.read_text(encoding="utf-8"))["configs"] == {}


def test_confusion_counts_chosen_kinds(report):
    store, run_id, paths = report
    results = json.loads(paths.results.read_text(encoding="utf-8"))
    rows = store.decisions(run_id, "B")
    confusion = results["kind_confusion"]["B"]
    assert sum(sum(chosen.values()) for chosen in confusion.values()) == len(rows)
    assert sum(chosen.get(gold, 0) for gold, chosen in confusion.items()) == sum(
        row.final_kind == row.gold_kind for row in rows)
    assert sum(chosen.get("invalid", 0) for chosen in confusion.values()) == sum(row.final_kind is None for row in rows)
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert "## Chosen kind per gold kind" in markdown
    assert "<summary>B</summary>" in markdown


def test_header_names_models_and_verifier(tmp_path):
    store = SqlTraceStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    config = {"settings": {"cheap_model": "small", "strong_model": "big", "verifier": "/v",
                           "thresholds": {"verifier": 0.39}},
              "trained": {"cheap": {"folder": "/a", "steps": 16, "validation": {"eval_loss_before": 2.0, "eval_loss_after": 1.5}},
                          "strong": {"folder": "/b", "steps": 18, "validation": {},
                                     "opening_head": {"validation_accuracy": 0.62, "validation_likelihood_accuracy": 0.22}},
                          "verifier": {"folder": "/v", "validation": {"heldout_roc_auc": 0.922}}}}
    run_id = store.start_run(name="models", config=config)
    store.finish_run(run_id, "finished")
    markdown = write_report(store, run_id, tmp_path / "out").markdown.read_text(encoding="utf-8")
    assert "- Cheap model: small with LoRA adapter `/a` (16 steps; validation loss 2.000 -> 1.500)" in markdown
    assert ("- Strong model: big with LoRA adapter `/b` (18 steps; opening head kind accuracy 0.620 on held-out "
            "train-split examples, against 0.220 by likelihood)") in markdown
    assert ("- Verifier of D and E: trained classifier `/v`; ROC AUC of the classifier on held-out train-split "
            "pairs 0.922; threshold 0.390") in markdown


def test_header_kind_verifier(tmp_path):
    store = SqlTraceStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    config = {"settings": {"cheap_model": "small", "verifier": "kind", "thresholds": {"verifier": 0.8}},
              "trained": {"cheap": {"folder": "/a", "steps": 16, "validation": {},
                                    "opening_head": {"validation_accuracy": 0.62, "validation_likelihood_accuracy": 0.22,
                                                     "kind_roc_auc": 0.778, "kind_threshold": 0.7996}}}}
    run_id = store.start_run(name="kind", config=config)
    store.finish_run(run_id, "finished")
    markdown = write_report(store, run_id, tmp_path / "out").markdown.read_text(encoding="utf-8")
    assert "and ROC AUC 0.778 of its kind probability there (calibrated threshold 0.800)" in markdown
    assert "- Verifier of D and E: the cheap proposal's kind probability (`KindVerifier`), threshold 0.800" in markdown
    assert "Escalation target" not in markdown


def test_header_escalation_target(tmp_path):
    store = SqlTraceStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    run_id = store.start_run(name="target", config={"settings": {"verifier": "kind", "max_cost": 0.4}})
    store.finish_run(run_id, "finished")
    markdown = write_report(store, run_id, tmp_path / "out").markdown.read_text(encoding="utf-8")
    assert ("- Escalation target: D's thresholds (and E's, when its three proposals cost less than the aim) move by "
            "one shared offset, learnt from the scores of earlier steps (no label is read), so that a step costs "
            "0.400 of a strong call on average") in markdown


def test_header_names_the_unused_shipped_verifier(tmp_path):
    store = SqlTraceStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    config = {"settings": {"verifier": "kind", "thresholds": {"verifier": 0.8}},
              "trained": {"shipped_verifier": {"folder": "/v", "validation": {"heldout_roc_auc": 0.924}}}}
    run_id = store.start_run(name="kind", config=config)
    store.finish_run(run_id, "finished")
    markdown = write_report(store, run_id, tmp_path / "out").markdown.read_text(encoding="utf-8")
    assert ("- Trained classifier verifier `/v` (not used by this run; `--verifier` with its folder uses it): "
            "ROC AUC 0.924 on held-out train-split pairs") in markdown


def test_header_kind_thresholds(tmp_path):
    store = SqlTraceStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    escalation = {"rows": 300, "max_accuracy_drop": 0.02, "strong_accuracy": 0.79, "accuracy": 0.77, "cost": 0.413,
                  "met": True}
    config = {"settings": {"verifier": "kind", "thresholds": {"verifier": 0.77},
                           "thresholds_by_kind": {"tool_call": 0.784, "BLOCKED": 0.401}},
              "trained": {"cheap": {"folder": "/a", "steps": 16, "validation": {},
                                    "opening_head": {"escalation": escalation}}}}
    run_id = store.start_run(name="kind", config=config)
    store.finish_run(run_id, "finished")
    markdown = write_report(store, run_id, tmp_path / "out").markdown.read_text(encoding="utf-8")
    assert ("(`KindVerifier`), threshold 0.770; per kind BLOCKED 0.401, tool_call 0.784") in markdown
    assert ("- D's kind thresholds were chosen on 300 held-out train-split examples as the cheapest that keep D's "
            "kind accuracy within 0.020 of the strong head's (0.790): there D scored 0.770 at cost 0.413") in markdown


def test_header_kind_prior(tmp_path):
    store = SqlTraceStore(f"sqlite:///{tmp_path / 'traces.sqlite'}")
    config = {"settings": {"verifier": "/v", "kind_prior": True, "thresholds": {"verifier": 0.25}},
              "trained": {"verifier": {"folder": "/v", "validation": {"heldout_roc_auc": 0.9}}}}
    run_id = store.start_run(name="prior", config=config)
    store.finish_run(run_id, "finished")
    markdown = write_report(store, run_id, tmp_path / "out").markdown.read_text(encoding="utf-8")
    assert "trained classifier `/v` times the cheap proposal's kind probability;" in markdown
    assert "threshold 0.250" in markdown
