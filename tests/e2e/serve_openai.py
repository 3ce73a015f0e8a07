"""Conformance of `zerospeed serve` with the OpenAI API, on a real model (SmolLM2-135M GGUF).

1. Raw HTTP: every response body and every stream chunk validates against the schemas of the
   OpenAI OpenAPI spec (tests/fixtures/openai/openapi.yaml): CreateCompletionResponse,
   CreateChatCompletionResponse, CreateChatCompletionStreamResponse, ListModelsResponse,
   ErrorResponse.
2. The official `openai` Python client drives completions and chat, streaming and not; the text
   equals the raw answers and the greedy completion equals `zerospeed generate` (the oracle the
   shell script passes in); a bad parameter raises openai.BadRequestError.

Usage: serve_openai.py BASE_URL OPENAPI_YAML MODEL_ID PROMPT GENERATE_TEXT
"""
import copy
import json
import sys
import urllib.error
import urllib.request

import jsonschema
import openai
import yaml

base, spec_path, model, prompt, oracle = sys.argv[1:6]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def nullable_to_type(node):
    """OpenAPI 3.0's `nullable: true` (still used in parts of the spec) as JSON Schema types."""
    if isinstance(node, dict):
        if node.get("nullable") is True and "type" in node:
            t = node["type"]
            node["type"] = (t if isinstance(t, list) else [t]) + ["null"]
            if "enum" in node and None not in node["enum"]:
                node["enum"] = node["enum"] + [None]
        for v in node.values():
            nullable_to_type(v)
    elif isinstance(node, list):
        for v in node:
            nullable_to_type(v)


with open(spec_path) as f:
    spec = yaml.safe_load(f)
components = spec["components"]
nullable_to_type(components)


# The spec has no stream schema for legacy completions: chunks reuse CreateCompletionResponse,
# whose finish_reason is a non-null string, while the API (and the openai client) send null until
# the last chunk. Validate completion chunks against a copy that allows that null, nothing else.
stream_components = copy.deepcopy(components)
fr = stream_components["schemas"]["CreateCompletionResponse"]["properties"]["choices"]["items"][
    "properties"]["finish_reason"]
fr["type"] = ["string", "null"]
fr["enum"] = fr["enum"] + [None]
stream_components["schemas"]["CreateCompletionStreamChunk"] = stream_components["schemas"][
    "CreateCompletionResponse"]


def validate(obj, schema_name, what):
    comps = stream_components if schema_name == "CreateCompletionStreamChunk" else components
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": comps}
    try:
        jsonschema.Draft202012Validator(schema).validate(obj)
        check(True, f"{what} validates against {schema_name}")
    except jsonschema.ValidationError as e:
        check(False, f"{what} against {schema_name}: {e.message} at {list(e.absolute_path)}")


def post(path, body, stream=False):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            raw = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())
    if not stream:
        return status, json.loads(raw)
    events = [e[len("data: "):] for e in raw.split("\n\n") if e.startswith("data: ")]
    check(events and events[-1] == "[DONE]", f"{path} stream ends with data: [DONE]")
    return status, [json.loads(e) for e in events[:-1]]


# --- raw HTTP against the schemas ---
with urllib.request.urlopen(base + "/v1/models", timeout=30) as r:
    validate(json.loads(r.read()), "ListModelsResponse", "GET /v1/models")

comp_body = {"model": model, "prompt": prompt, "max_tokens": 16, "temperature": 0}
st, comp = post("/v1/completions", comp_body)
check(st == 200, "completions 200")
validate(comp, "CreateCompletionResponse", "completion")
check(comp["choices"][0]["text"] == oracle,
      f"greedy completion equals zerospeed generate: {comp['choices'][0]['text']!r} vs {oracle!r}")

st, chunks = post("/v1/completions", dict(comp_body, stream=True,
                                          stream_options={"include_usage": True}), stream=True)
for i, c in enumerate(chunks):
    validate(c, "CreateCompletionStreamChunk", f"completion chunk {i}")
text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
check(text == comp["choices"][0]["text"], "streamed completion text equals the non-streamed")
check(chunks[-1]["usage"] == comp["usage"], "include_usage: the last chunk carries the usage")

chat_body = {"model": model, "messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "What is the capital of France?"}],
             "max_tokens": 24, "temperature": 0, "logprobs": True, "top_logprobs": 2}
st, chat = post("/v1/chat/completions", chat_body)
check(st == 200, "chat 200")
validate(chat, "CreateChatCompletionResponse", "chat completion")
lp = chat["choices"][0]["logprobs"]["content"]
check(len(lp) == chat["usage"]["completion_tokens"], "one logprob entry per generated token")
check(all(len(t["top_logprobs"]) == 2 and t["logprob"] <= 0 for t in lp), "top_logprobs: 2 each")

st, cchunks = post("/v1/chat/completions", dict(chat_body, stream=True,
                                                stream_options={"include_usage": True}), stream=True)
for i, c in enumerate(cchunks):
    validate(c, "CreateChatCompletionStreamResponse", f"chat chunk {i}")
ctext = "".join(c["choices"][0]["delta"].get("content") or "" for c in cchunks if c["choices"])
check(ctext == chat["choices"][0]["message"]["content"], "streamed chat text equals the non-streamed")

st, err = post("/v1/chat/completions", {"model": model, "messages": [], "temperature": -1})
check(st == 400, "invalid chat request -> 400")
validate(err, "ErrorResponse", "error body")

# --- the official client ---
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
check([m.id for m in client.models.list().data] == [model], "client: models.list")
r = client.completions.create(model=model, prompt=prompt, max_tokens=16, temperature=0)
check(r.choices[0].text == oracle, "client: completions.create equals zerospeed generate")
s = client.completions.create(model=model, prompt=prompt, max_tokens=16, temperature=0,
                              stream=True)
check("".join(c.choices[0].text for c in s if c.choices) == oracle, "client: streamed completion")
msgs = chat_body["messages"]
r = client.chat.completions.create(model=model, messages=msgs, max_tokens=24, temperature=0)
check(r.choices[0].message.content == chat["choices"][0]["message"]["content"],
      "client: chat.completions.create")
check(r.usage.completion_tokens == chat["usage"]["completion_tokens"], "client: usage")
s = client.chat.completions.create(model=model, messages=msgs, max_tokens=24, temperature=0,
                                   stream=True, stream_options={"include_usage": True})
parts, usage = [], None
for c in s:
    if c.choices and c.choices[0].delta.content:
        parts.append(c.choices[0].delta.content)
    if c.usage:
        usage = c.usage
check("".join(parts) == chat["choices"][0]["message"]["content"], "client: streamed chat")
check(usage is not None and usage.total_tokens == chat["usage"]["total_tokens"],
      "client: streamed usage")
try:
    client.chat.completions.create(model=model, messages=msgs, temperature=5)
    check(False, "client: temperature 5 must raise BadRequestError")
except openai.BadRequestError as e:
    check(e.status_code == 400 and e.body.get("param") == "temperature",
          f"client: BadRequestError names the param ({e.body})")
try:
    client.completions.create(model="no-such-model", prompt="x")
    check(False, "client: unknown model must raise")
except openai.BadRequestError as e:
    check(e.body.get("code") == "model_not_found", "client: unknown model -> model_not_found")

print(f"serve_openai: {len(failures)} failure(s)")
sys.exit(1 if failures else 0)
