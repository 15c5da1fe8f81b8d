"""Writes chat-tools.jsonl (48 rows): multi-turn conversations with tool calls in OpenAI's chat
fine-tuning format, exactly as a file written for OpenAI's fine-tuning API looks (messages with
system/user/assistant/tool roles, per-message weight, tool_calls with JSON-string arguments and a
row-level tools list), for dataset.conversations (docs/finetunejob.md#conversations).

Every answer is computed, so the data is correct by construction. Tool call ids are 9
alphanumeric characters, which Mistral's template requires. Run
`python examples/data/make_chat_tools.py` to regenerate it.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

CITIES = {"Paris": 21, "Tokyo": 26, "Nairobi": 24, "Oslo": 9, "Lima": 19, "Cairo": 33, "Madrid": 28, "Hanoi": 31}
ROWS = 48

TOOLS = [
    {"type": "function", "function": {
        "name": "get_temperature", "description": "Current temperature in a city, in degrees Celsius",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "convert_temperature", "description": "Convert a temperature from Celsius to Fahrenheit",
        "parameters": {"type": "object", "properties": {"celsius": {"type": "number"}}, "required": ["celsius"]}}},
]
SYSTEM = {"role": "system", "content": "You are a concise weather assistant. Use the tools for facts."}


def call(rng: random.Random, name: str, arguments: dict) -> tuple[dict, str]:
    """An assistant message calling one tool, and its id."""
    call_id = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(9))
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}]}
    return message, call_id


def row(rng: random.Random) -> dict:
    city = rng.choice(sorted(CITIES))
    celsius = CITIES[city]
    ask, ask_id = call(rng, "get_temperature", {"city": city})
    messages = [SYSTEM]
    if rng.random() < 0.5:  # an earlier exchange that is context only (weight 0)
        messages += [{"role": "user", "content": "Hello!"},
                     {"role": "assistant", "content": "Hello! Which city's weather would you like?", "weight": 0}]
    messages += [{"role": "user", "content": f"How warm is it in {city} right now?"}, ask,
                 {"role": "tool", "tool_call_id": ask_id, "content": json.dumps({"city": city, "celsius": celsius})},
                 {"role": "assistant", "content": f"It is {celsius} °C in {city}."}]
    if rng.random() < 0.5:
        convert, convert_id = call(rng, "convert_temperature", {"celsius": celsius})
        fahrenheit = f"{celsius * 9 / 5 + 32:g}"
        messages += [{"role": "user", "content": "And in Fahrenheit?"}, convert,
                     {"role": "tool", "tool_call_id": convert_id, "content": json.dumps({"fahrenheit": float(fahrenheit)})},
                     {"role": "assistant", "content": f"That is {fahrenheit} °F."}]
    return {"messages": messages, "tools": TOOLS}


def main() -> None:
    rng = random.Random(19)
    lines = [json.dumps(row(rng), ensure_ascii=False) for _ in range(ROWS)]
    (Path(__file__).parent / "chat-tools.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
