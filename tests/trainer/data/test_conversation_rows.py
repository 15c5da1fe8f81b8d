"""Chat rows (dataset.conversations): strict row checks naming file, line and field; ShareGPT rows;
mixtures of chat and prompt/completion tasks; length policy; packing of chat rows."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from chat_families import family_tokenizer
from kubetune_api.conversations import ConversationsSpec
from kubetune_api.errors import DataError
from kubetune_api.training import DatasetSpec
from kubetune_trainer.data.chat_masks import tokenize_conversation
from kubetune_trainer.data.conversations import read_conversation
from kubetune_trainer.data.packing import PackedCollator
from kubetune_trainer.data.rows import check_dataset
from kubetune_trainer.data.splits import load_splits
from kubetune_trainer.data.tokenization import IGNORE_INDEX, Collator, Tokenized, tokenize, tokenize_splits
from kubetune_trainer.training.loss import batch_loss
from tinymodels import TEMPLATE, build_model, make_rows, write_jsonl

ROW = {"messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "Weather "}, {"type": "text", "text": "in Oslo?"}]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "abc123xyz", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
    {"role": "tool", "tool_call_id": "abc123xyz", "content": "9 C"},
    {"role": "assistant", "content": "It is 9 C in Oslo.", "weight": 1},
], "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]}


def broken(change) -> dict:
    row = copy.deepcopy(ROW)
    change(row)
    return row


@pytest.mark.parametrize("row,message", [
    ({"text": "hi"}, r"d.jsonl line 4: no conversation: the row has neither a messages nor a conversations field"),
    ({"messages": []}, r"d.jsonl line 4: 'messages' must be a non-empty list"),
    (broken(lambda r: r["messages"][1].update(role="bot")), r"messages\[1\].role must be one of system, user, assistant, tool, got 'bot'"),
    (broken(lambda r: r["messages"][1].update(content=7)), r"messages\[1\].content must be a string or a list of text parts, got int"),
    (broken(lambda r: r["messages"][1].update(content=[{"type": "image_url", "image_url": {"url": "x"}}])),
     r"messages\[1\].content part 1: only text parts .* got type 'image_url'"),
    (broken(lambda r: r["messages"][4].update(weight=0.5)), r"messages\[4\].weight must be 0 or 1, got 0.5"),
    (broken(lambda r: r["messages"][1].update(weight=1)), r"messages\[1\].weight: only assistant messages take a weight"),
    (broken(lambda r: [r["messages"][i].update(weight=0) for i in (2, 4)]), r"'messages' has no trained assistant message"),
    (broken(lambda r: r["messages"][2].update(tool_calls={"id": "x"})), r"messages\[2\].tool_calls must be a non-empty list"),
    (broken(lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments="{city")),
     r"messages\[2\].tool_calls\[0\].function.arguments is not valid JSON"),
    (broken(lambda r: r["messages"][2]["tool_calls"][0].pop("function")), r"messages\[2\].tool_calls\[0\].function must be an object"),
    (broken(lambda r: r["messages"][1].update(tool_calls=[])), r"messages\[1\].tool_calls: only assistant messages make tool calls"),
    (broken(lambda r: r["messages"][4].pop("content")), r"messages\[4\].content is missing"),
    (broken(lambda r: r["messages"][4].update(function_call={})), r"messages\[4\]: unknown key 'function_call'"),
    (broken(lambda r: r.update(tools={"name": "x"})), r"tools must be a list of tool definitions"),
])
def test_bad_rows_are_refused_naming_file_line_and_field(row, message):
    with pytest.raises(DataError, match=message):
        read_conversation(ConversationsSpec(), row, "d.jsonl line 4")


def test_openai_rows_become_template_messages():
    conversation = read_conversation(ConversationsSpec(), ROW, "d.jsonl line 1")
    assert [m["role"] for m in conversation.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert conversation.messages[1]["content"] == "Weather in Oslo?"  # text parts joined
    call = conversation.messages[2]["tool_calls"][0]
    assert call == {"type": "function", "id": "abc123xyz", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    assert conversation.messages[2]["content"] == "" and conversation.trained == (False, False, True, False, True)


def test_sharegpt_rows_map_onto_the_same_messages():
    row = {"conversations": [
        {"from": "system", "value": "Be brief."}, {"from": "human", "value": "Weather in Oslo?"},
        {"from": "function_call", "value": "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}"},
        {"from": "observation", "value": "9 C"}, {"from": "gpt", "value": "It is 9 C in Oslo."}],
        "tools": json.dumps(ROW["tools"])}
    for spec in (ConversationsSpec(), ConversationsSpec(style="sharegpt")):
        conversation = read_conversation(spec, row, "s.jsonl line 1")
        assert [m["role"] for m in conversation.messages] == ["system", "user", "assistant", "tool", "assistant"]
        assert conversation.messages[2]["tool_calls"][0]["function"]["arguments"] == {"city": "Oslo"}
        assert conversation.tools == tuple(ROW["tools"]) and conversation.trained[-1]
    with pytest.raises(DataError, match=r"s.jsonl line 2: conversations\[0\].from must be one of"):
        read_conversation(ConversationsSpec(), {"conversations": [{"from": "bob", "value": "x"}]}, "s.jsonl line 2")
    for value, words in (("get_weather(Oslo)", "is not valid JSON"), ("[1, 2]", "must be a function_call turn's JSON object")):
        broken = {"conversations": [{"from": "human", "value": "hi"}, {"from": "function_call", "value": value}]}
        with pytest.raises(DataError, match=rf"s.jsonl line 3: conversations\[1\].value {words}"):
            read_conversation(ConversationsSpec(), broken, "s.jsonl line 3")


def test_a_template_without_tool_support_is_refused_not_silently_dropping_calls():
    conversation = read_conversation(ConversationsSpec(), ROW, "d.jsonl line 9")
    with pytest.raises(DataError, match=r"d.jsonl line 9: the model's chat template does not render tools or tool calls"):
        tokenize_conversation(family_tokenizer("smollm2"), conversation, "d.jsonl line 9")


@pytest.fixture
def mixture(tmp_path) -> DatasetSpec:
    chat = write_jsonl(tmp_path / "chat.jsonl", [ROW] * 10)
    plain = write_jsonl(tmp_path / "plain.jsonl", make_rows(10))
    return DatasetSpec.model_validate({"tasks": [
        {"name": "chat", "path": str(chat), "conversations": {}},
        {"name": "qa", "path": str(plain), "promptTemplate": TEMPLATE, "completionField": "answer"}],
        "validationRatio": 0.2, "testRatio": 0.2, "maxLength": 2048})


def test_a_mixture_of_chat_and_prompt_tasks_tokenizes_both(mixture):
    tokenizer = family_tokenizer("qwen2.5")
    assert check_dataset(mixture) == 20
    data = tokenize_splits(load_splits(mixture, seed=1), tokenizer, 2048)
    assert data.counts()["tasks"]["chat"]["train"] == 6 and data.counts()["tasks"]["qa"]["train"] == 6
    chat = data.by_task("validation")["chat"][0]
    trained = tokenizer.decode([t for t, label in zip(chat.input_ids, chat.labels) if label != IGNORE_INDEX])
    assert "It is 9 C in Oslo." in trained and "Weather in Oslo" not in trained and chat.prompt_length is not None
    qa = data.by_task("validation")["qa"][0]
    assert qa.prompt_length is None and tokenizer.decode([t for t in qa.labels if t != IGNORE_INDEX]).strip()


def test_length_policy_on_conversations(mixture):
    tokenizer = family_tokenizer("qwen2.5")
    example = next(e for e in load_splits(mixture, seed=1)["train"] if e.conversation is not None)
    full = tokenize(tokenizer, [example], 4096)[0]
    first_end = next(i for i in range(len(full.labels) - 1, 0, -1) if full.labels[i] != IGNORE_INDEX
                     and i < len(full.labels) - 5 and full.labels[i + 1] == IGNORE_INDEX) + 1
    # truncate: the cut falls at the end of the last trained turn that fits (the tool call)
    cut = tokenize(tokenizer, [example], first_end + 3)[0]
    assert cut.truncated and cut.input_ids == full.input_ids[:first_end] and cut.labels == full.labels[:first_end]
    dropped = []
    assert tokenize(tokenizer, [example], first_end + 3, "drop", dropped) == [] and dropped == [example]
    # No trained token within maxLength: the row is dropped, and counted, even under truncate.
    gone = []
    assert tokenize(tokenizer, [example], 20, "truncate", gone) == [] and gone == [example]


def test_packed_chat_rows_give_the_padded_loss():
    tokenizer = family_tokenizer("qwen2.5")
    torch.manual_seed(0)
    model = build_model(tokenizer)
    rows = []
    for answer in ("It is 9 C in Oslo.", "Nine degrees.", "Cold: 9 C."):
        row = copy.deepcopy(ROW)
        row["messages"][4]["content"] = answer
        ids, labels, _, _ = tokenize_conversation(tokenizer, read_conversation(ConversationsSpec(), row, "x"), "x")
        rows.append(Tokenized(ids, labels))
    padded_sum, padded_n, _ = batch_loss(model, model, Collator(tokenizer.eos_token_id)(rows))
    packed_sum, packed_n, _ = batch_loss(model, model, PackedCollator()(rows))
    assert packed_n.item() == padded_n.item() == sum(label != IGNORE_INDEX for r in rows for label in r.labels[1:])
    torch.testing.assert_close(packed_sum / packed_n, padded_sum / padded_n, rtol=1e-5, atol=1e-5)
