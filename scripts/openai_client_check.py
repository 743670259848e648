"""Chapter 7's server with the official `openai` Python client: a completion, then the same one
streamed, which must give the same text. Usage: python3 scripts/openai_client_check.py BASE_URL"""

import sys

from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="unused")
model = client.models.list().data[0].id
whole = client.completions.create(model=model, prompt="ROMEO:", max_tokens=12, temperature=0, seed=1)
text = whole.choices[0].text
assert text, "empty completion"
assert whole.usage.completion_tokens == 12, whole.usage
stream = client.completions.create(model=model, prompt="ROMEO:", max_tokens=12, temperature=0, seed=1, stream=True)
streamed = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
assert streamed == text, (streamed, text)
try:
    client.completions.create(model=model, prompt="ROMEO:", max_tokens=0)
    raise AssertionError("max_tokens 0 was accepted")
except Exception as e:  # openai.BadRequestError
    assert getattr(e, "status_code", None) == 400, e
print(f"openai {__import__('openai').__version__}: completion and stream agree: {text!r}")
