"""Fixtures for training tests: tiny models and a tiny dataset folder with train and eval splits."""

from __future__ import annotations

import pytest

from spec_agent.actions import Action, ToolCall
from spec_agent.eval.schema import Example, write_examples
from tests.tiny_models import build_causal_lm

TOOLS = [
    {"name": "ls", "description": "List files.",
     "parameters": {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": []}},
    {"name": "cat", "description": "Read a file.",
     "parameters": {"type": "object", "properties": {"file_name": {"type": "string"}},
                    "required": ["file_name"]}},
    {"name": "touch", "description": "Create a file.",
     "parameters": {"type": "object", "properties": {"file_name": {"type": "string"}},
                    "required": ["file_name"]}},
]
GOLDS = [
    Action(kind="file_read", tool_calls=(ToolCall(name="ls", arguments={"a": True}),)),
    Action(kind="file_read", tool_calls=(ToolCall(name="cat", arguments={"file_name": "notes.txt"}),)),
    Action(kind="file_write", tool_calls=(ToolCall(name="touch", arguments={"file_name": "a.txt"}),)),
    Action(kind="final_answer", content="The file was moved."),
]


def make_example(index: int, split: str) -> Example:
    """Return a small example of scenario `<split>:<index // 2>` with a cycling gold action."""
    gold = GOLDS[index % len(GOLDS)]
    messages = [
        {"role": "user", "content": f"Request {index}: list the files and read notes.txt."},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "ls", "arguments": {"a": True}}}]},
        {"role": "tool", "tool_call_id": "c1", "name": "ls", "content": '{"current_directory_content": ["a.txt"]}'},
    ]
    return Example(id=f"{split}-{index:03d}", source="tiny/multi_turn", scenario=f"{split}:{index // 2}",
                   messages=messages, tools=TOOLS, action=gold)


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dataset")
    write_examples([make_example(index, "train") for index in range(48)], folder / "train.jsonl")
    write_examples([make_example(index, "eval") for index in range(8)], folder / "eval.jsonl")
    return folder


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    return build_causal_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return build_bert_classifier_base(tmp_path_factory.mktemp("tiny-bert"))


def build_bert_classifier_base(directory):
    """Save a 2-layer BERT with random weights and a WordPiece tokenizer trained on the fly."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus = [example.action.kind + " " + str(example.messages) for example in
              (make_example(index, "train") for index in range(8))]
    tokenizer.train_from_iterator(corpus * 4, trainers.WordPieceTrainer(vocab_size=300, special_tokens=special))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))],
    )
    wrapped = BertTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    wrapped.save_pretrained(directory)
    config = BertConfig(vocab_size=len(wrapped), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    return directory
