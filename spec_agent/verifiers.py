"""Verifiers: score a proposal with the probability that it is the right next action."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from spec_agent.cost import ModelCall
from spec_agent.decision import Proposal
from spec_agent.prompts import render_action, render_chat

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

    def score(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], proposal: Proposal
    ) -> tuple[float | None, list[ModelCall]]:
        """Return the proposal's confidence; None when the proposer reported none."""
        return proposal.confidence, []


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
        chat = render_chat(messages, tools)
        question = JUDGE_QUESTION.format(action=render_action(proposal.action))
        if chat[-1]["role"] == "user":
            chat[-1] = {"role": "user", "content": chat[-1]["content"] + "\n\n" + question}
        else:
            chat.append({"role": "user", "content": question})
        probability, call = self.model.label_probability(chat)
        return probability, [call]
