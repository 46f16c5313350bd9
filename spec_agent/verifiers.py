"""Verifiers: score a proposal with the probability that it is the right next action.

Anything with `score(messages, tools, proposal) -> (score | None, calls)` is a verifier, a
trained classifier included. `SchemaVerifier` checks tool calls against their JSON schemas for
free. `ConfidenceVerifier` reads the proposer's own confidence and `KindVerifier` its probability
of the chosen kind. `JudgeVerifier` and `ChatModelJudge` ask a model, and `VerifierChain` runs
several in order. A verifier that raises or times out fails closed: the speculation graph counts
it as REJECT.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import math
import re
import time
from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from spec_agent.actions import TOOL_KINDS
from spec_agent.cost import ModelCall, Role
from spec_agent.decision import Proposal
from spec_agent.errors import ConfigError, SpecAgentRuntimeError
from spec_agent.prompts import render_action, render_chat

logger = logging.getLogger(__name__)

JUDGE_QUESTION = (
    "A fast assistant proposed this next action:\n{action}\n"
    "Is it the correct next action for the conversation above, with the right tool and arguments? "
    "Reply with exactly one word: ACCEPT or REJECT."
)


@runtime_checkable
class Verifier(Protocol):
    """Anything that scores a proposal in [0, 1]; higher means more likely correct."""

    name: str

    def score(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], proposal: Proposal
    ) -> tuple[float | None, list[ModelCall]]:
        """Return the probability of ACCEPT (None when it cannot score) and the calls made."""
        ...


class ConfidenceVerifier:
    """The proposer's own confidence: the geometric mean probability of its generated tokens.

    It needs no model call, so it works before any verifier is trained and costs nothing.
    """

    name = "confidence"
    model_calls = 0
    """Model calls per score; verifiers without this attribute are taken to make one."""

    def score(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], proposal: Proposal
    ) -> tuple[float | None, list[ModelCall]]:
        """Return the proposal's confidence; None when the proposer reported none."""
        return proposal.confidence, []


class KindVerifier:
    """The proposer's probability of the action kind it chose, among the kinds it chose from.

    A local proposer with kind openings reports it (`Proposal.kind_probability`): its opening
    head's softmax, or the openings' likelihoods normalised over them. It measures the kind only,
    which is where a small proposer errs most, and it costs nothing. Proposals without it get None,
    which a chain counts as a failure, so pair it only with proposers that report it.
    """

    name = "kind"
    model_calls = 0

    def score(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], proposal: Proposal
    ) -> tuple[float | None, list[ModelCall]]:
        """Return the proposal's kind probability, or None when the proposer reported none."""
        return proposal.kind_probability, []


class JudgeVerifier:
    """A chat model asked whether the proposal is right; the score is P(ACCEPT) from its logits.

    Args:
        model: An object with `name` and `label_probability(chat)` (`HFChatModel` or a wrapper).
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.name = f"judge:{model.name}"

    def score(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], proposal: Proposal
    ) -> tuple[float | None, list[ModelCall]]:
        """Ask the judge about a parsed proposal; unparsed proposals are not sent."""
        if proposal.action is None:
            return None, []
        probability, call = self.model.label_probability(judge_chat(messages, tools, proposal))
        return probability, [call]


# --- Schema check -------------------------------------------------------------------------------

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list, tuple),
    "object": (dict,),
    "null": (type(None),),
}


class SchemaVerifier:
    """A free check of every tool call against the JSON schema of its tool.

    A call passes when its tool is on offer, every required argument is present, no argument is
    unknown, and each value has its declared JSON type (and is among the `enum` values when the
    schema lists them). The score is 1.0 when every call passes and 0.0 otherwise; text actions
    score 1.0 because there is nothing to check. It makes no model call.
    """

    name = "schema"
    model_calls = 0

    def score(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], proposal: Proposal
    ) -> tuple[float | None, list[ModelCall]]:
        """Return 1.0 when every tool call fits its schema, else 0.0."""
        problems = self.problems(tools, proposal)
        if problems:
            logger.debug("Schema check rejected a proposal: %s", "; ".join(problems))
        return (0.0 if problems else 1.0), []

    def problems(self, tools: list[dict[str, Any]], proposal: Proposal) -> list[str]:
        """Return what is wrong with a proposal's tool calls; empty when nothing is."""
        action = proposal.action
        if action is None:
            return [f"proposal did not parse: {proposal.error}"]
        if action.kind not in TOOL_KINDS:
            return []
        schemas = {tool_name(tool): tool_parameters(tool) for tool in tools}
        found: list[str] = []
        for call in action.tool_calls:
            if call.name not in schemas:
                found.append(f"unknown tool {call.name!r}")
                continue
            found.extend(_argument_problems(call.name, call.arguments, schemas[call.name]))
        return found


def tool_name(tool: dict[str, Any]) -> str:
    """Return the name of a tool schema in the flat or the OpenAI `{"function": ...}` layout."""
    return str((tool.get("function") or tool).get("name"))


def tool_parameters(tool: dict[str, Any]) -> dict[str, Any]:
    """Return the parameters schema of a tool in the flat or the OpenAI layout."""
    return (tool.get("function") or tool).get("parameters") or {}


def _argument_problems(name: str, arguments: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    properties = schema.get("properties") or {}
    found = [
        f"{name}: missing required argument {key!r}"
        for key in schema.get("required") or () if key not in arguments
    ]
    for key, value in arguments.items():
        if key not in properties:
            found.append(f"{name}: unknown argument {key!r}")
        elif not _fits(value, properties[key]):
            found.append(f"{name}: argument {key!r} does not match its schema")
    return found


def _fits(value: Any, schema: Any) -> bool:
    if not isinstance(schema, dict):
        return True
    if "enum" in schema and value not in schema["enum"]:
        return False
    variants = schema.get("anyOf") or schema.get("oneOf")
    if variants:
        return any(_fits(value, variant) for variant in variants)
    declared = schema.get("type")
    if declared is None:
        return True
    names = declared if isinstance(declared, list) else [declared]
    if not any(_is_type(value, item) for item in names):
        return False
    if isinstance(value, (list, tuple)) and isinstance(schema.get("items"), dict):
        return all(_fits(item, schema["items"]) for item in value)
    return True


def _is_type(value: Any, json_type: str) -> bool:
    # bool is a subclass of int in Python, but JSON keeps booleans and numbers apart.
    if isinstance(value, bool) and json_type in ("integer", "number"):
        return False
    return isinstance(value, _JSON_TYPES.get(json_type, (object,)))


# --- A judge over any LangChain chat model ------------------------------------------------------

_LABEL = re.compile(r"\b(ACCEPT|REJECT)\b", re.IGNORECASE)


class ChatModelJudge:
    """Any LangChain chat model asked whether the proposal is right, with the judge question.

    The score is P(ACCEPT) from the first token's log-probabilities when the provider returns
    them (renormalised over ACCEPT and REJECT); otherwise 1.0 for a reply that says ACCEPT and
    0.0 for REJECT. A reply with neither word raises, so the step fails closed. Calls run with
    the `nostream` tag.

    Args:
        model: A LangChain `BaseChatModel`.
        role: Cost role of its calls (`judge` for the strong model as judge, `verifier` for a
            small one).
    """

    def __init__(self, model: Any, *, role: Role = "judge") -> None:
        from spec_agent.proposers import model_name

        self.model = model
        self.role = role
        self.name = f"judge:{model_name(model)}"

    def score(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], proposal: Proposal
    ) -> tuple[float | None, list[ModelCall]]:
        """Ask the judge about a parsed proposal; unparsed proposals are not sent."""
        if proposal.action is None:
            return None, []
        started = time.perf_counter()
        reply = self.model.invoke(judge_chat(messages, tools, proposal), config=_JUDGE_CONFIG)
        return self._read(reply, time.perf_counter() - started)

    async def ascore(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], proposal: Proposal
    ) -> tuple[float | None, list[ModelCall]]:
        """Ask the judge asynchronously; the same rule as `score`."""
        if proposal.action is None:
            return None, []
        started = time.perf_counter()
        chat = judge_chat(messages, tools, proposal)
        reply = await self.model.ainvoke(chat, config=_JUDGE_CONFIG)
        return self._read(reply, time.perf_counter() - started)

    def _read(self, reply: Any, latency: float) -> tuple[float | None, list[ModelCall]]:
        from spec_agent.proposers import _text, _usage_call

        call = _usage_call(reply, self.role, self.name, latency)
        probability = _label_probability(reply)
        if probability is not None:
            return probability, [call]
        match = _LABEL.search(_text(reply))
        if match is None:
            raise SpecAgentRuntimeError(
                f"Judge {self.name} replied with neither ACCEPT nor REJECT; the proposal is "
                "rejected. Use a model that follows the one-word instruction."
            )
        return (1.0 if match.group(1).upper() == "ACCEPT" else 0.0), [call]


_JUDGE_CONFIG = {"tags": ["nostream"]}


def judge_chat(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]], proposal: Proposal
) -> list[dict[str, str]]:
    """Render the context and append the judge question about a parsed proposal."""
    assert proposal.action is not None
    chat = render_chat(messages, tools)
    question = JUDGE_QUESTION.format(action=render_action(proposal.action))
    if chat[-1]["role"] == "user":
        chat[-1] = {"role": "user", "content": chat[-1]["content"] + "\n\n" + question}
    else:
        chat.append({"role": "user", "content": question})
    return chat


def _label_probability(reply: Any) -> float | None:
    logprobs = ((getattr(reply, "response_metadata", None) or {}).get("logprobs") or {}).get("content")
    if not logprobs:
        return None
    candidates = logprobs[0].get("top_logprobs") or [logprobs[0]]
    weights = {"ACCEPT": 0.0, "REJECT": 0.0}
    for candidate in candidates:
        label = str(candidate.get("token", "")).strip().upper()
        for name in weights:
            if label and name.startswith(label):
                weights[name] += math.exp(candidate.get("logprob", -math.inf))
    total = weights["ACCEPT"] + weights["REJECT"]
    return weights["ACCEPT"] / total if total > 0 else None


# --- Composition ----------------------------------------------------------------------------------

Combine = Literal["min", "last", "product"]
_TIMEOUT_POOL = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="spec-agent-verifier")


class VerifierChain:
    """Verifiers run in order, cheapest first; the first REJECT wins.

    A member rejects when its score is below `reject_below`; the chain then stops and returns
    that score, so later (costlier) verifiers never run. A member that returns None, raises or
    runs past `timeout_s` makes the chain raise, and the speculation graph counts that as REJECT.

    Args:
        verifiers: Members in the order they run.
        combine: Score of a chain that every member passed: `min` of the scores, the `last`, or
            their `product`. The product suits members that each estimate the chance of one way
            to be right (the kind, then the arguments), and it is the chain's score after a
            rejection too.
        reject_below: Score under which a member's verdict is REJECT, in [0, 1].
        timeout_s: Time limit of each member's call in seconds; None means no limit.
    """

    def __init__(
        self,
        *,
        verifiers: Sequence[Any],
        combine: Combine = "min",
        reject_below: float = 0.5,
        timeout_s: float | None = None,
    ) -> None:
        if not verifiers:
            raise ConfigError("verifiers is empty; pass at least one verifier to VerifierChain.")
        if combine not in ("min", "last", "product"):
            raise ConfigError(f"Invalid combine {combine!r}; use 'min', 'last' or 'product'.")
        if not 0.0 <= reject_below <= 1.0:
            raise ConfigError(f"Invalid reject_below {reject_below!r}; expected a value in [0, 1].")
        if timeout_s is not None and timeout_s <= 0:
            raise ConfigError(f"timeout_s must be > 0 or None (no limit), got {timeout_s!r}.")
        self.verifiers = list(verifiers)
        self.combine = combine
        self.reject_below = reject_below
        self.timeout_s = timeout_s
        self.name = "chain(" + ",".join(verifier.name for verifier in self.verifiers) + ")"
        self.model_calls = sum(model_calls(verifier) for verifier in self.verifiers)

    def score(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], proposal: Proposal
    ) -> tuple[float | None, list[ModelCall]]:
        """Run the members in order and combine their scores."""
        scores: list[float] = []
        calls: list[ModelCall] = []
        for verifier in self.verifiers:
            score, member_calls = _score_with_timeout(verifier, self.timeout_s, messages, tools, proposal)
            if self._record(verifier, score, member_calls, scores, calls):
                break
        return self._combined(scores), calls

    async def ascore(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], proposal: Proposal
    ) -> tuple[float | None, list[ModelCall]]:
        """Run the members in order on the async path and combine their scores."""
        scores: list[float] = []
        calls: list[ModelCall] = []
        for verifier in self.verifiers:
            score, member_calls = await ascore(verifier, messages, tools, proposal,
                                               timeout_s=self.timeout_s)
            if self._record(verifier, score, member_calls, scores, calls):
                break
        return self._combined(scores), calls

    def _record(
        self, verifier: Any, score: float | None, member_calls: list[ModelCall],
        scores: list[float], calls: list[ModelCall],
    ) -> bool:
        """Store a member's result; return True when it rejected and the chain stops."""
        calls.extend(member_calls)
        if score is None:
            raise SpecAgentRuntimeError(f"Verifier {verifier.name} returned no score.")
        scores.append(score)
        return score < self.reject_below

    def _combined(self, scores: list[float]) -> float:
        if self.combine == "product":
            return math.prod(scores)
        if scores[-1] < self.reject_below or self.combine == "last":
            return scores[-1]
        return min(scores)


def _score_with_timeout(
    verifier: Any, timeout_s: float | None, messages: list[dict[str, Any]],
    tools: list[dict[str, Any]], proposal: Proposal,
) -> tuple[float | None, list[ModelCall]]:
    if timeout_s is None:
        return verifier.score(messages, tools, proposal)
    # The worker thread runs in a copy of this context, so callbacks still reach the model call.
    context = contextvars.copy_context()
    future = _TIMEOUT_POOL.submit(context.run, verifier.score, messages, tools, proposal)
    try:
        return future.result(timeout=timeout_s)
    except concurrent.futures.TimeoutError as error:
        # NOTE: a Python thread cannot be stopped; the late call finishes in the background and
        # its result is dropped.
        raise SpecAgentRuntimeError(
            f"Verifier {verifier.name} timed out after {timeout_s}s; the proposal is rejected."
        ) from error


async def ascore(
    verifier: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]], proposal: Proposal,
    *, timeout_s: float | None = None,
) -> tuple[float | None, list[ModelCall]]:
    """Run a verifier's async path: its `ascore`, else `score` in a worker thread.

    Raises:
        SpecAgentRuntimeError: The call ran past `timeout_s`.
    """
    method = getattr(verifier, "ascore", None)
    if method is not None:
        pending = method(messages, tools, proposal)
    else:
        pending = asyncio.to_thread(verifier.score, messages, tools, proposal)
    if timeout_s is None:
        # Without a limit, a TimeoutError comes from the verifier itself and keeps its own message.
        return await pending
    try:
        return await asyncio.wait_for(pending, timeout=timeout_s)
    except TimeoutError as error:
        raise SpecAgentRuntimeError(
            f"Verifier {verifier.name} timed out after {timeout_s}s; the proposal is rejected."
        ) from error


def model_calls(verifier: Any) -> int:
    """Return the model calls a verifier makes per score (its `model_calls`, else one)."""
    return int(getattr(verifier, "model_calls", 1))


def as_verifier(model: Any, *, role: Role = "judge") -> Any:
    """Wrap a verifier argument: a `Verifier` as is, a chat model as `ChatModelJudge`, and a
    model name or `HFChatModel` as `JudgeVerifier`; None stays None.

    Raises:
        ConfigError: The argument is none of these.
    """
    from langchain_core.language_models import BaseChatModel

    if model is None or isinstance(model, Verifier):
        return model
    if isinstance(model, BaseChatModel):
        return ChatModelJudge(model, role=role)
    if isinstance(model, str):
        from spec_agent.hf import HFChatModel

        return JudgeVerifier(HFChatModel(model, role=role))
    if callable(getattr(model, "label_probability", None)):
        return JudgeVerifier(model)
    raise ConfigError(
        f"Invalid verifier {type(model).__name__!r}; pass an object with score(messages, tools, "
        "proposal), a LangChain chat model, an HFChatModel or a model name."
    )
