"""Local Hugging Face causal language models as proposers, fallback models and judges.

A model is named by an embedded asset (`smollm2-135m-instruct`), a local directory or a hub id.
torch and transformers load on first use so that `import spec_agent` stays light.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spec_agent.actions import TOOL_KINDS
from spec_agent.cost import ModelCall, Role
from spec_agent.errors import ConfigError
from spec_agent.grammar import CallGrammar
from spec_agent.opening_head import OpeningHead, load_opening_head

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class GenerationConfig:
    """Decoding settings for action generation."""

    max_new_tokens: int = 96
    """Upper bound on generated tokens per action, which is one line. 96 tokens hold 98.3% of
    the BFCL eval split's gold call payloads in SmolLM2's tokenizer and 98.9% in Qwen2.5's, where
    64 held 94.4% and 96.1%."""
    temperature: float = 0.8
    """Sampling temperature for extra proposals; the first proposal is always greedy."""
    top_p: float = 0.95
    """Nucleus sampling mass for extra proposals."""
    max_prompt_tokens: int = 6144
    """Prompts longer than this drop their oldest conversation messages, with a warning."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}.")


@dataclass(frozen=True, kw_only=True)
class Generation:
    """One generated text with the model's confidence in it."""

    text: str
    """Generated text, special tokens removed."""
    confidence: float
    """Geometric mean probability of the generated tokens, in [0, 1]."""
    completion_tokens: int
    """Number of generated tokens."""
    kind_probability: float | None = None
    """Probability of the generation's opening among the allowed openings: the opening head's
    softmax, or the openings' likelihoods normalised over them. None when the text was free."""


class HFChatModel:
    """A transformers causal LM that renders chats with its own chat template.

    Args:
        model: Embedded asset name, local directory or hub id.
        role: Cost role of this model's calls (`cheap`, `strong`, ...).
        generation: Decoding settings.
        seed: Base seed; sampling for a prompt uses `seed` plus the caller's seed.
        reuse_prefix: Keep the KV cache of the latest prompt and prefill only the tokens a new
            prompt does not share with it. Off, every call prefills its whole prompt.
        adapter: Folder of a peft LoRA adapter trained on `model` (`spec-agent train proposer`);
            it is merged into the weights at load time, so generation costs what the base does.
        opening_head: An `OpeningHead` fitted on this model (or its file), which then chooses
            among exactly its openings in place of their likelihood (`spec-agent train head`).
        dtype: Weight precision: `float32`, `bfloat16`, or `auto` for bfloat16 where the CPU
            multiplies bfloat16 matrices in hardware (`compute_dtype`) and float32 elsewhere.
            The adapter is merged in float32 before the cast.
    """

    def __init__(
        self,
        model: str,
        *,
        role: Role,
        generation: GenerationConfig | None = None,
        seed: int = 0,
        reuse_prefix: bool = True,
        adapter: str | Path | None = None,
        opening_head: OpeningHead | str | Path | None = None,
        dtype: str = "float32",
    ) -> None:
        self.name = model
        self.dtype = compute_dtype(dtype)
        self.adapter = Path(adapter) if adapter is not None else None
        if opening_head is not None and not isinstance(opening_head, OpeningHead):
            opening_head = load_opening_head(opening_head)
        self.opening_head = opening_head
        self.role = role
        self.generation = generation or GenerationConfig()
        self.seed = seed
        self.reuse_prefix = reuse_prefix
        self._lock = threading.RLock()
        self._model: Any = None
        self._cache: Any = None
        self._cached_ids: Any = None
        self._newline_ids: Any = None
        self._texts: list[str] | None = None
        self._scored: tuple[Any, tuple[str, ...], Any] | None = None
        self._tokenizer: Any = None
        self.parameters = 0.0

    def load(self) -> HFChatModel:
        """Load the tokenizer and weights once; later calls return immediately."""
        with self._lock:
            if self._model is None:
                self._load()
        return self

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from spec_agent.assets import resolve_model

        path = resolve_model(self.name)
        started = time.perf_counter()
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"Could not load model {self.name!r} (tried {path!r}): {error}. Pass an embedded "
                "asset name (see `spec-agent assets list`), a local model directory or a hub id."
            ) from error
        if self.adapter is not None:
            model = _merge_adapter(model, self.adapter, self.name)
        model = model.to(getattr(torch, self.dtype)).eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        head = self.opening_head
        if head is not None and head.hidden_size != model.config.hidden_size:
            raise ConfigError(
                f"The opening head has {head.hidden_size} hidden features but {self.name!r} has "
                f"{model.config.hidden_size}; pass the head fitted on this model and adapter."
            )
        self._tokenizer, self._model = tokenizer, model
        self.parameters = float(sum(parameter.numel() for parameter in model.parameters()))
        logger.info("Loaded %s%s (%.0fM parameters, %s) in %.1fs", self.name,
                    f" with adapter {self.adapter}" if self.adapter else "", self.parameters / 1e6,
                    self.dtype, time.perf_counter() - started)

    @property
    def tokenizer(self) -> Any:
        """The loaded tokenizer."""
        return self.load()._tokenizer

    @property
    def model(self) -> Any:
        """The loaded `PreTrainedModel`."""
        return self.load()._model

    def encode(self, chat: list[dict[str, str]]) -> Any:
        """Tokenize a chat with the generation prompt, dropping old messages past the limit.

        The system message and the last message are always kept.
        """
        limit = self.generation.max_prompt_tokens
        chat = list(chat)
        dropped = 0
        while True:
            ids = self.tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )["input_ids"]
            if ids.shape[1] <= limit or len(chat) <= 2:
                break
            del chat[1]
            dropped += 1
        if dropped:
            logger.warning("Prompt exceeded %s tokens; dropped its %s oldest messages (now %s tokens)",
                           limit, dropped, ids.shape[1])
        if ids.shape[1] > limit:
            logger.warning("Prompt of %s tokens still exceeds max_prompt_tokens=%s with only the system "
                           "and last message left; sending it whole", ids.shape[1], limit)
        return ids

    def generate(
        self,
        chat: list[dict[str, str]],
        *,
        n: int = 1,
        sample: bool = False,
        seed: int = 0,
        openings: Sequence[str] | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> tuple[list[Generation], list[ModelCall]]:
        """Generate `n` one-line actions, greedily (then `n` must be 1) or by sampling.

        Each generation is charged as its own call with the full prompt, as a provider would bill
        it; `reused_tokens` counts the prompt tokens that came from the prefix cache instead.

        Args:
            chat: Rendered chat messages.
            n: Number of generations.
            sample: Sample with the configured temperature instead of greedy decoding.
            seed: Per-prompt seed so that sampled generations are reproducible.
            openings: Strings of which every generation must start with one, such as the `kind:`
                prefixes of the action format. The model scores each opening in full. Greedy
                decoding takes the most likely, sampling draws in proportion (with the configured
                temperature), and generation continues after it. With an opening head fitted on
                exactly these openings, its logits take the place of the likelihoods. None leaves
                the text free.
            tools: Tool schemas. A generation that opens with a tool kind's opening (`tool_call:`)
                then continues only as calls of these tools that fit their schemas (`CallGrammar`).
                None or an empty list leaves the payload free, as does `openings=None`.
        """
        import torch

        if n < 1 or (n > 1 and not sample):
            raise ConfigError(f"n={n} is invalid: greedy decoding gives 1 generation, sampling >= 1.")
        if openings is not None and not any(openings):
            raise ConfigError(f"openings={openings!r} contains no non-empty string; pass None to leave "
                              "the output free.")
        with self._lock, torch.inference_mode():
            started = time.perf_counter()
            ids = self.encode(chat)
            reused = self._prefill(ids)
            if sample:
                torch.manual_seed(self.seed + seed)
            if openings is None:
                generations = self._decode(ids, n=n, sample=sample)
            else:
                grammar = CallGrammar(tools) if tools else None
                generations = self._decode_openings(ids, [text for text in openings if text], n=n,
                                                    sample=sample, grammar=grammar)
            latency = (time.perf_counter() - started) / n
        calls = [
            ModelCall(
                role=self.role,
                model=self.name,
                prompt_tokens=int(ids.shape[1]),
                completion_tokens=item.completion_tokens,
                latency_s=latency,
                reused_tokens=reused if index == 0 else int(ids.shape[1]),
            )
            for index, item in enumerate(generations)
        ]
        return generations, calls

    def _prefill(self, ids: Any) -> int:
        """Fill the prefix cache with all prompt tokens but the last; return how many were reused.

        One cache per model keeps the latest prompt, so a judge question that extends the prompt the
        model just answered, or the next step of the same trajectory, prefills only the new tokens.
        """
        from transformers import DynamicCache

        keep = self._common_prefix(ids) if self.reuse_prefix else 0
        if keep == 0:
            self._cache, self._cached_ids = DynamicCache(), ids[:, :0]
        else:
            self._cache.crop(keep - self._cache.get_seq_length())
            self._cached_ids = self._cached_ids[:, :keep]
        target = ids.shape[1] - 1
        if target > keep:
            self.model(input_ids=ids[:, keep:target], cache=self._cache, use_cache=True)
            self._cached_ids = ids[:, :target]
        return keep

    def _common_prefix(self, ids: Any) -> int:
        cached = getattr(self, "_cached_ids", None)
        if cached is None or self._cache is None or cached.shape[1] == 0:
            return 0
        length = min(cached.shape[1], ids.shape[1] - 1)
        same = (cached[0, :length] == ids[0, :length]).long()
        return int(same.cumprod(0).sum())

    def opening_features(self, chat: list[dict[str, str]], openings: Sequence[str]) -> tuple[Any, Any]:
        """Return the hidden state after a chat's prompt and each opening's log-likelihood there.

        These are the inputs of an `OpeningHead`; `spec-agent train head` fits one on them.
        """
        import torch

        with self._lock, torch.inference_mode():
            ids = self.encode(chat)
            self._prefill(ids)
            scored, hidden = self._scored_openings(ids, list(openings))
        return hidden.clone(), torch.stack([logprobs.sum() for _, logprobs in scored]).float()

    def _decode_openings(
        self, ids: Any, openings: list[str], *, n: int, sample: bool, grammar: CallGrammar | None = None
    ) -> list[Generation]:
        """Choose an opening per generation, by the head or the likelihoods, then generate the rest
        of the line, within `grammar` after a tool kind's opening."""
        import torch

        scored, hidden = self._scored_openings(ids, openings)
        totals = torch.stack([logprobs.sum() for _, logprobs in scored]).float()
        head = self.opening_head
        if head is not None and head.openings == tuple(openings):
            totals = head.logits(hidden[None], totals[None])[0]
        totals = torch.log_softmax(totals, dim=0)
        if sample:
            weights = torch.softmax(totals / self.generation.temperature, dim=0)
            chosen = torch.multinomial(weights, n, replacement=True).tolist()
        else:
            chosen = [int(totals.argmax())]
        generations: dict[int, list[Generation]] = {}
        for index in sorted(set(chosen)):
            opening_ids, opening_logprobs = scored[index]
            tool_kind = openings[index].strip().removesuffix(":") in TOOL_KINDS
            generations[index] = self._decode(ids, n=chosen.count(index), sample=sample,
                                              opening=(opening_ids, opening_logprobs),
                                              grammar=grammar if tool_kind else None)
        # Keep the sampled order, so the i-th generation is the i-th draw.
        return [dataclasses.replace(generations[index].pop(0), kind_probability=float(totals[index].exp()))
                for index in chosen]

    def _scored_openings(self, ids: Any, openings: list[str]) -> tuple[list[tuple[Any, Any]], Any]:
        """Return `_score_openings` for a prompt, reusing the result of the same prompt just before.

        Configuration E requests a greedy generation and then sampled ones for the same prompt. Both
        need the same scores, so the second call skips the tree pass.
        """
        import torch

        last = self._scored
        if last is not None and last[1] == tuple(openings) and torch.equal(last[0], ids):
            return last[2]
        result = self._score_openings(ids, openings)
        self._scored = (ids, tuple(openings), result)
        return result

    def _score_openings(self, ids: Any, openings: list[str]) -> tuple[list[tuple[Any, Any]], Any]:
        """Return each opening's token ids and their log-probabilities after the prompt `ids`, and
        the final hidden state at the prompt's last token.

        All openings run in one forward pass as a token tree on the prefix cache: the prompt's last
        token, then every opening's tokens side by side, each attending to the prompt and to its own
        earlier tokens only. A short pass costs about one read of the weights on a CPU, so one pass
        is several times cheaper than a pass per opening, and the cache is not copied.
        """
        import torch

        encoded = [self.tokenizer.encode(text, add_special_tokens=False) for text in openings]
        cached = ids.shape[1] - 1
        tokens, positions, parents = [int(ids[0, -1])], [cached], [[0]]
        for opening in encoded:
            start = len(tokens)
            for depth, token in enumerate(opening):
                tokens.append(token)
                positions.append(cached + 1 + depth)
                parents.append([0, *range(start, start + depth + 1)])
        size = len(tokens)
        dtype = self.model.dtype
        mask = torch.full((1, 1, size, cached + size), torch.finfo(dtype).min, dtype=dtype)
        mask[..., :cached] = 0.0
        for query, visible in enumerate(parents):
            mask[0, 0, query, [cached + key for key in visible]] = 0.0
        output = self.model(
            input_ids=torch.tensor([tokens], dtype=ids.dtype),
            position_ids=torch.tensor([positions], dtype=ids.dtype),
            attention_mask=mask,
            cache=self._cache,
            use_cache=True,
            output_hidden_states=True,
        )
        self._cache.crop(-size)
        hidden = output.hidden_states[-1][0, 0].float()
        logprobs = torch.log_softmax(output.logits[0].float(), dim=-1)
        scored = []
        start = 1
        for opening in encoded:
            # Token j of an opening is predicted at the position before it: the prompt's last token
            # for the first, the opening's own previous token after that.
            where = [0, *range(start, start + len(opening) - 1)]
            values = logprobs[where, opening]
            scored.append((torch.tensor([opening], dtype=ids.dtype), values))
            start += len(opening)
        return scored, hidden

    def _decode(
        self,
        ids: Any,
        *,
        n: int,
        sample: bool,
        opening: tuple[Any, Any] | None = None,
        grammar: CallGrammar | None = None,
    ) -> list[Generation]:
        import copy

        import torch
        from transformers import LogitsProcessorList

        cache = copy.deepcopy(self._cache)
        if n > 1:
            cache.batch_repeat_interleave(n)
        options: dict[str, Any] = {"do_sample": False}
        if sample:
            options = {"do_sample": True, "temperature": self.generation.temperature,
                       "top_p": self.generation.top_p}
        start = ids.shape[1]
        if opening is not None:
            ids = torch.cat([ids, opening[0]], dim=1)
        batch = ids.repeat(n, 1)
        processors = LogitsProcessorList()
        if grammar is not None:
            from spec_agent.constrained import GrammarConstraint

            processors.append(GrammarConstraint(grammar, self._token_texts(), start=ids.shape[1], rows=n,
                                                stop_ids=self._stop_ids(), greedy=not sample))
        output = self.model.generate(
            input_ids=batch,
            attention_mask=torch.ones_like(batch),
            cache=cache,
            max_new_tokens=self.generation.max_new_tokens,
            stopping_criteria=[self._stop_at_newline()],
            logits_processor=processors,
            pad_token_id=self.tokenizer.pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
            top_k=None,
            **options,
        )
        # The raw logits, not the processed scores: confidence is what the model itself believes,
        # before a grammar or temperature reshaped its distribution.
        scores = self.model.compute_transition_scores(
            output.sequences, output.logits, normalize_logits=True
        )
        if opening is None:
            new_tokens = output.sequences[:, start:]
            return [self._to_generation(tokens, logprobs) for tokens, logprobs in zip(new_tokens, scores)]
        # The opening's tokens count as generated, because they are part of the output text.
        opening_logprobs = opening[1].to(scores.dtype).expand(n, -1)
        return [
            self._to_generation(tokens, logprobs)
            for tokens, logprobs in zip(output.sequences[:, start:], torch.cat([opening_logprobs, scores], dim=1))
        ]

    def _stop_at_newline(self) -> Any:
        """Return a stopping criterion that ends a sequence at its first newline token.

        transformers' `stop_strings` rebuilds its token tables on every `generate` call, which costs
        more than the generation itself on a small model; the newline token ids are computed once.
        """
        from transformers import StoppingCriteria

        if self._newline_ids is None:
            import torch

            ids = [index for index, text in enumerate(self._token_texts()) if "\n" in text]
            self._newline_ids = torch.tensor(ids, dtype=torch.long)
        newline_ids = self._newline_ids

        class _NewlineStop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                import torch

                return torch.isin(input_ids[:, -1], newline_ids)

        return _NewlineStop()

    def _token_texts(self) -> list[str]:
        """Return the text of every token id, computed once. Special tokens get no text.

        Each token is decoded alone, which is exact for byte-level BPE vocabularies such as
        SmolLM2's and Qwen's.
        """
        if self._texts is None:
            tokenizer = self.tokenizer
            special = set(tokenizer.all_special_ids)
            tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
            self._texts = [
                "" if index in special or not token else tokenizer.convert_tokens_to_string([token])
                for index, token in enumerate(tokens)
            ]
        return self._texts

    def _stop_ids(self) -> set[int]:
        """Return the ids that end a generation: the tokenizer's and the generation config's."""
        configured = self.model.generation_config.eos_token_id
        ids = set(configured if isinstance(configured, list) else [configured])
        ids.add(self.tokenizer.eos_token_id)
        return {int(index) for index in ids if index is not None}

    def _to_generation(self, tokens: Any, logprobs: Any) -> Generation:
        keep = tokens != self.tokenizer.pad_token_id
        count = int(keep.sum())
        values = logprobs[keep[: logprobs.shape[0]]]
        values = values[values.isfinite()]
        mean = float(values.mean()) if values.numel() else -math.inf
        text = self.tokenizer.decode(tokens[keep], skip_special_tokens=True).strip()
        return Generation(text=text, confidence=math.exp(mean), completion_tokens=count)

    def label_probability(
        self, chat: list[dict[str, str]], *, accept: str = "ACCEPT", reject: str = "REJECT"
    ) -> tuple[float, ModelCall]:
        """Return P(accept) from the next-token logits of the two labels, renormalised over both."""
        import torch

        accept_id, reject_id = self._label_token(accept), self._label_token(reject)
        with self._lock, torch.inference_mode():
            started = time.perf_counter()
            ids = self.encode(chat)
            reused = self._prefill(ids)
            logits = self.model(
                input_ids=ids[:, -1:], cache=self._cache, use_cache=True
            ).logits[0, -1]
            self._cached_ids = ids
            pair = torch.stack([logits[accept_id], logits[reject_id]]).float()
            probability = float(torch.softmax(pair, dim=0)[0])
            latency = time.perf_counter() - started
        call = ModelCall(
            role=self.role,
            model=self.name,
            prompt_tokens=int(ids.shape[1]),
            completion_tokens=0,
            latency_s=latency,
            reused_tokens=reused,
        )
        return probability, call

    def _label_token(self, label: str) -> int:
        ids = self.tokenizer.encode(label, add_special_tokens=False)
        if not ids:
            raise ConfigError(f"Label {label!r} encodes to no tokens with {self.name!r}.")
        return int(ids[0])



DTYPES = ("auto", "float32", "bfloat16")
"""Weight precisions a local model can run in."""


def compute_dtype(choice: str) -> str:
    """Return the weight precision that `choice` (one of `DTYPES`) means on this machine.

    `auto` picks bfloat16 only where the CPU has AMX tiles. There oneDNN multiplies bfloat16
    matrices in hardware, and a 900-token prefill of Qwen2.5-0.5B takes 1.1 s instead of 4.3 s on
    2 cores. Decoding one token reads every weight, so it stays memory-bound and gains nothing.
    Without AMX, bfloat16 matrix products are emulated and slower than float32.

    Raises:
        ConfigError: `choice` is not one of `DTYPES`.
    """
    if choice not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {choice!r}.")
    if choice != "auto":
        return choice
    import torch

    # A private probe, so a torch without it counts as a CPU without AMX.
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return "bfloat16" if amx() else "float32"


def _merge_adapter(model: Any, adapter: Path, name: str) -> Any:
    """Return `model` with the LoRA adapter in `adapter` merged into its weights.

    Raises:
        ConfigError: The folder contains no adapter, or one that does not fit the model.
    """
    from peft import PeftModel

    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(
            f"Adapter folder {str(adapter)!r} has no adapter_config.json; pass the `adapter` folder "
            "that `spec-agent train proposer` writes, or drop the adapter to run the base model."
        )
    try:
        with warnings.catch_warnings():
            # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` on every load,
            # which would print a FutureWarning that no caller of this function can act on.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as error:
        raise ConfigError(f"Adapter {str(adapter)!r} does not fit model {name!r}: {error}") from error
