"""Drives a worker-llm server with the official `openai` client and prints what it saw as JSON.

Usage: python openai_client.py BASE_URL MODEL API_KEY
The Rust test (openai_client.rs) starts the server, runs this, and checks what it prints against the
engine run in process. /metrics is read with prometheus_client's strict OpenMetrics parser.
"""

import json
import sys
import urllib.request

import openai
from prometheus_client.openmetrics.parser import text_string_to_metric_families

base, model, key = sys.argv[1:4]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120)
out = {}
messages = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]

whole = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)
out["chat"] = {
    "text": whole.choices[0].message.content,
    "role": whole.choices[0].message.role,
    "finish_reason": whole.choices[0].finish_reason,
    "usage": whole.usage.model_dump(),
    "object": whole.object,
}

chunks = list(
    client.chat.completions.create(
        model=model,
        messages=messages,
        max_completion_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
)
with_choices = [c for c in chunks if c.choices]
out["chat_stream"] = {
    "text": "".join(c.choices[0].delta.content or "" for c in with_choices),
    "first_role": with_choices[0].choices[0].delta.role,
    "finish_reasons": [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason],
    "usage": chunks[-1].usage.model_dump() if chunks[-1].usage else None,
    "ids": sorted({c.id for c in chunks}),
    "object": chunks[0].object,
}

prompt = "The capital of France is"
text = client.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0)
out["completion"] = {
    "text": text.choices[0].text,
    "finish_reason": text.choices[0].finish_reason,
    "usage": text.usage.model_dump(),
}
pieces = list(client.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0, stream=True))
out["completion_stream"] = {
    "text": "".join(p.choices[0].text for p in pieces if p.choices),
    "finish_reasons": [p.choices[0].finish_reason for p in pieces if p.choices and p.choices[0].finish_reason],
}

out["models"] = [m.id for m in client.models.list().data]

try:
    client.chat.completions.create(model=model, messages=messages, temperature=5)
    out["bad_temperature"] = None
except openai.BadRequestError as err:
    out["bad_temperature"] = {"status": err.status_code, "param": err.body.get("param"), "message": err.message}

try:
    client.chat.completions.create(model="hf:nobody/nothing", messages=messages)
    out["unknown_model"] = None
except openai.NotFoundError as err:
    out["unknown_model"] = {"status": err.status_code, "message": err.message}

try:
    openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()
    out["wrong_key"] = None
except openai.AuthenticationError as err:
    out["wrong_key"] = {"status": err.status_code}

request = urllib.request.Request(base + "/metrics", headers={"Authorization": "Bearer " + key})
exposition = urllib.request.urlopen(request).read().decode()
samples = []
for family in text_string_to_metric_families(exposition):
    for sample in family.samples:
        samples.append({"name": sample.name, "labels": sample.labels, "value": sample.value})
out["metrics"] = samples

print(json.dumps(out))
