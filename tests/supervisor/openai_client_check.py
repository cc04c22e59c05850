"""The official openai Python client against a running gpuwarden node.

Run by test_openai_client.c, which starts the node:
    python3 openai_client_check.py BASE_URL TOKEN MODEL

What a client that lists models, sends content parts and bills from the
usage chunk sees. Exit 0 when every check passes, 77 when the openai package
cannot be imported (ctest: Skipped), 1 with the failed check otherwise.
"""
import sys

try:
    import openai
except ImportError as e:  # the driver tried to install it; no network, no test
    print(f"skipped: the openai package is not importable: {e}")
    sys.exit(77)

BASE, TOKEN, MODEL = sys.argv[1:4]
client = openai.OpenAI(base_url=BASE, api_key=TOKEN, max_retries=0, timeout=120)
passed = 0


def check(name, cond, detail=""):
    global passed
    if not cond:
        print(f"FAILED: {name} {detail}")
        sys.exit(1)
    passed += 1


# models.list() and models.retrieve()
models = list(client.models.list())
check("models.list() lists the served model", [m.id for m in models] == [MODEL], models)
m = models[0]
check("the model object", m.object == "model" and m.owned_by == "gpuwarden" and m.created > 0, m)
one = client.models.retrieve(MODEL)
check("models.retrieve()", one.id == MODEL and one.created == m.created, one)
try:
    client.models.retrieve("gpt-4o")
    check("an unknown model is NotFoundError", False)
except openai.NotFoundError as e:
    check("an unknown model is NotFoundError with code model_not_found",
          e.status_code == 404 and e.code == "model_not_found", e)

# a chat call with content parts: the same answer as the joined string
parts = client.chat.completions.create(
    model=MODEL, temperature=0, max_tokens=12,
    messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is the capital "},
        {"type": "text", "text": "of France?"}]}])
plain = client.chat.completions.create(
    model=MODEL, temperature=0, max_tokens=12,
    messages=[{"role": "user", "content": "What is the capital of France?"}])
answer = parts.choices[0].message.content
check("content parts answer", parts.choices[0].message.role == "assistant" and len(answer) > 0,
      parts)
check("content parts mean their joined text", answer == plain.choices[0].message.content,
      f"{answer!r} vs {plain.choices[0].message.content!r}")
check("usage of a whole response", parts.usage.completion_tokens >= 1 and
      parts.usage.total_tokens == parts.usage.prompt_tokens + parts.usage.completion_tokens,
      parts.usage)
try:
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}])
    check("an image part is refused", False)
except openai.BadRequestError as e:
    check("an image part is BadRequestError naming the part",
          e.status_code == 400 and "messages[0].content[0].type" in str(e) and
          "image_url" in str(e), e)

# a stream with include_usage: the client reads the usage chunk
stream = client.chat.completions.create(
    model=MODEL, temperature=0, max_tokens=12, stream=True,
    stream_options={"include_usage": True},
    messages=[{"role": "user", "content": "What is the capital of France?"}])
chunks = list(stream)
with_usage = [c for c in chunks if c.usage is not None]
check("exactly one chunk carries usage, the last", len(with_usage) == 1 and
      with_usage[0] is chunks[-1], [c.usage for c in chunks])
check("the usage chunk has no choices", chunks[-1].choices == [], chunks[-1])
u = chunks[-1].usage
check("the stream's usage is the whole response's",
      (u.prompt_tokens, u.completion_tokens) ==
      (plain.usage.prompt_tokens, plain.usage.completion_tokens), f"{u} vs {plain.usage}")
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check("the streamed text is the whole response's", text == plain.choices[0].message.content,
      f"{text!r}")
check("the last choice chunk has a finish_reason",
      [c for c in chunks if c.choices][-1].choices[0].finish_reason in ("stop", "length"))

# the same on /v1/completions
cs = list(client.completions.create(model=MODEL, prompt="Once upon a time", temperature=0,
                                    max_tokens=6, stream=True,
                                    stream_options={"include_usage": True}))
check("completions: the usage chunk", cs[-1].choices == [] and cs[-1].usage is not None and
      cs[-1].usage.completion_tokens >= 1, cs[-1])

print(f"(openai {openai.__version__})")
print(f"openai_client_check: {passed} passed, 0 failed")
