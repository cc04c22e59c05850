#!/usr/bin/env python3
"""Writes the seed corpora under tests/fuzz/corpus/<target>/ from the inputs
the other tests use (tests/supervisor/test_routes.c, test_auth.c,
test_service.c, tests/common/test_config.c, tests/engine/test_gguf.c,
tests/fixtures/). Run from anywhere; rerun after changing it. Deterministic:
the same files every time. Needs only the Python standard library."""
import base64, hashlib, hmac, json, os, struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "corpus")


def write(target, items):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    for i, data in enumerate(items):
        if isinstance(data, str):
            data = data.encode()
        with open(os.path.join(d, "seed-%02d" % i), "wb") as f:
            f.write(data)


# ---------------------------------------------------------------- http
# byte 0: read size (0 = one read)
def req(method, path, headers=(), body=b"", version="1.1"):
    h = "%s %s HTTP/%s\r\nHost: localhost\r\n" % (method, path, version)
    for k, v in headers:
        h += "%s: %s\r\n" % (k, v)
    return h.encode() + b"\r\n" + body


GEN = b'{"prompt":"Hello","max_tokens":4}'
cl = ("Content-Length", str(len(GEN)))
ct = ("Content-Type", "application/json")
auth = ("Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig")
http = [
    b"\0" + req("GET", "/healthz"),
    b"\0" + req("HEAD", "/readyz"),
    b"\0" + req("GET", "/metrics?x=1"),
    b"\0" + req("POST", "/v1/generate", [ct, cl, auth], GEN),
    b"\x07" + req("POST", "/v1/completions", [ct, cl, auth], GEN),
    b"\x01" + req("POST", "/v1/chat/completions", [ct, auth, cl], GEN),
    b"\0" + req("POST", "/v1/generate", [("Transfer-Encoding", "chunked")],
                b"5\r\n{\"pro\r\n1d\r\nmpt\":\"Hello\",\"max_tokens\":4}\r\n0\r\n\r\n"),
    b"\0" + req("GET", "/healthz") + req("GET", "/readyz") + req("GET", "/metrics"),
    b"\x10" + req("GET", "/healthz", [("Connection", "close")]) + req("GET", "/healthz"),
    b"\0" + req("GET", "/healthz", version="1.0"),
    b"\0" + req("GET", "/healthz", [("Connection", "keep-alive")], version="1.0"),
    b"\0" + req("POST", "/v1/generate", [("Content-Length", "5"), ("Transfer-Encoding", "chunked")], b"0\r\n\r\n"),
    b"\0" + req("POST", "/v1/generate", [("Content-Length", "5"), ("Content-Length", "6")], b"hello!"),
    b"\0" + req("POST", "/v1/generate", [("Content-Length", "99999999")]),
    b"\0" + req("GET", "/healthz", [("X-Big", "a" * 1100)]),
    b"\0" + req("GET", "/" + "a" * 1100),
    b"\0" + req("GET", "/healthz", [("Authorization", "Bearer " + "A" * 1000)]),
    b"\0" + req("GET", "/v1/../healthz"),
    b"\0" + req("GET", "//healthz"),
    b"\0" + req("GET", "/%68ealthz"),
    b"\0" + req("GET", "/healthz/"),
    b"\0" + req("POST", "/healthz", [("Content-Length", "0")]),
    b"\0" + req("GET", "/v1/generate"),
    b"\0" + req("DELETE", "/v1/generate"),
    b"\0" + req("CONNECT", "localhost:443"),
    b"\0" + req("GET", "/healthz", [("Upgrade", "websocket"), ("Connection", "Upgrade")]),
    b"\0" + req("OPTIONS", "*"),
    b"\0GET /healthz HTTP/1.1\nHost: x\n\n",
    b"\0GET /healthz HTTP/9.9\r\n\r\n",
    b"\0GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n",
    b"\0GET /healthz HTTP/1.1\r\n folded: x\r\n\r\n",
    b"\0\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"\0" + req("POST", "/v1/generate", [("Transfer-Encoding", "chunked")], b"ffffffffffffffff\r\n"),
    b"\x03" + req("POST", "/v1/generate", [("Transfer-Encoding", "chunked")],
                  b"400\r\n" + b"x" * 1024 + b"\r\n1\r\nx\r\n0\r\n\r\n"),
    # /v1/models (issue 20): the one path with a variable part
    b"\0" + req("GET", "/v1/models", [auth]),
    b"\0" + req("GET", "/v1/models/smollm2?x=1", [auth]),
    b"\0" + req("GET", "/v1/models/HuggingFaceTB/SmolLM2%2d135M", [auth]),
    b"\0" + req("GET", "/v1/models/../../etc/passwd"),
    b"\0" + req("GET", "/v1/models/"),
    b"\0" + req("POST", "/v1/models", [cl], GEN),
]
write("http", http)

# -------------------------------------------------------- request_json
# byte 0: route (% 3: 0 generate, 1 completions, 2 chat)
G, C, H = b"\0", b"\1", b"\2"
rj = [
    G + b'{"prompt":"Hello","max_tokens":8}',
    G + b'{"prompt":"x","temperature":0.7,"top_p":0.9,"top_k":40,"seed":42,"stop":["\\n","END"],"stream":true}',
    G + b'{"model":"smollm2-135m-instruct","prompt":"","max_tokens":null}',
    C + b'{"model":"smollm2-135m-instruct","prompt":"Once upon","max_tokens":16,"n":1,"best_of":1,"echo":false,"logprobs":0,"suffix":"","user":"u1"}',
    C + b'{"model":"m","prompt":"a","stream":true,"stream_options":{"include_usage":true},"presence_penalty":0,"frequency_penalty":0,"logit_bias":{}}',
    C + b'{"model":"m","prompt":["a","b"]}',
    C + b'{"model":"m","prompt":"a","max_tokens":1.0}',
    C + b'{"model":"m","prompt":"a","max_tokens":1e3}',
    C + b'{"model":"m","prompt":"a","max_tokens":99999999999999999999999}',
    C + b'{"model":"m","prompt":"a","max_tokens":-1}',
    C + b'{"model":"m","prompt":"a","temperature":"hot"}',
    C + b'{"model":"m","prompt":"a","max_token":5}',
    C + b'{"model":"m","prompt":"a\xff"}',
    C + b'{"model":"m","prompt":"a\\u0000b"}',
    C + b'{"model":"m","prompt":"\\ud800"}',
    C + b'{"model":"m","prompt":"a","stop":"s"}',
    C + b'{"model":"m","prompt":"a","stop":["1","2","3","4","5"]}',
    H + b'{"model":"smollm2-135m-instruct","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi","name":"bob"}],"max_completion_tokens":8}',
    H + b'{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}',
    H + b'{"model":"m","messages":[{"role":"tool","content":"x"}]}',
    H + b'{"model":"m","messages":[]}',
    H + b'{"model":"m","messages":[{"role":"user"}]}',
    H + b'{"model":"m","messages":[{"role":"user","content":"x","extra":1}],"tools":[],"tool_choice":"none","response_format":{"type":"text"},"store":false,"metadata":{},"parallel_tool_calls":true,"logprobs":false,"top_logprobs":0}',
    H + b'{"model":"m","messages":[{"role":"user","content":"x\xc3"}]}',
    H + b'{"messages":[{"role":"user","content":"x"}]}',
    G + b'[]',
    G + b'',
    G + b'{"prompt":"a",',
    G + b'{"prompt":"a","prompt":"b"}',
    G + b'"just a string"',
    G + b'{"prompt":"a","seed":18446744073709551615}',
    G + b'{"prompt":"a","top_p":1.5,"temperature":-1}',
    # content parts, stream_options, user (issue 20)
    H + b'{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"text":"b","type":"text"}]}],"user":"end-user"}',
    H + b'{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:,"}}]}]}',
    H + b'{"model":"m","messages":[{"role":"user","content":[{"type":"text"},{"type":7},"x",[]]}]}',
    H + b'{"model":"m","messages":[{"role":"user","content":[]}],"stream":true,"stream_options":{"include_usage":true}}',
    C + b'{"model":"m","prompt":"a","stream":true,"stream_options":{"include_usage":"yes","x":1}}',
    C + b'{"model":"m","prompt":"a","user":"' + b"u" * 300 + b'"}',
]
write("request_json", rj)

# --------------------------------------------------------------- jwt
SECRET = b"test-secret-0123456789abcdef-0123456789abcdef"
NOW = 1800000000


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def hs(claims, header=None, key=SECRET, alg="HS256"):
    header = header or {"alg": alg, "typ": "JWT", "kid": "hs"}
    si = b64(json.dumps(header, separators=(",", ":")).encode()) + b"." + \
        b64(json.dumps(claims, separators=(",", ":")).encode())
    h = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}.get(alg, hashlib.sha256)
    return b"Bearer " + si + b"." + b64(hmac.new(key, si, h).digest())


good = {"iss": "gpuwarden-test", "aud": "gpuwarden", "iat": NOW - 10, "exp": NOW + 600, "sub": "acme"}


def w(**kw):
    c = dict(good)
    for k, v in kw.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def fixture(name):
    with open(os.path.join(ROOT, "tests", "fixtures", "keys", name), "rb") as f:
        return f.read().strip()


jwt = [
    hs(good),
    hs(w(plan="pro")),
    hs(w(sub="a.b@c:d-e_f")),
    hs(good, header={"alg": "HS256"}),
    hs(w(exp=NOW - 100)),
    hs(w(nbf=NOW + 100)),
    hs(w(iat=NOW + 100)),
    hs(w(exp=None)),
    hs(w(sub=None)),
    hs(w(sub="bad sub!")),
    hs(w(sub="x" * 64)),
    hs(w(iss="other")),
    hs(w(aud=["gpuwarden", "x"])),
    hs(w(aud="other")),
    hs(w(exp="soon")),
    hs(good, key=b"wrong-secret-0123456789abcdef-0123456789"),
    hs(good, header={"alg": "none", "kid": "hs"}).rsplit(b".", 1)[0] + b".",
    hs(good, header={"alg": "HS256", "kid": "rs"}),
    hs(good, header={"alg": "HS512", "kid": "hs"}, alg="HS512"),
    hs(good, header={"alg": "HS256", "kid": "nope"}),
    b"Bearer " + fixture("es256.interop.jwt"),
    b"Bearer " + fixture("rs256.interop.jwt"),
    b"bearer " + fixture("rs256.interop.jwt"),
    b"Basic dXNlcjpwYXNz",
    b"Bearer ",
    b"",
    b"Bearer a.b",
    b"Bearer a.b.c.d",
    b"Bearer !!!.###.$$$",
    b"Bearer " + b64(b'{"alg":"HS256"') + b"." + b64(b"{}") + b".x",
    b"Bearer " + b"A" * 9000,
]
write("jwt", jwt)

# ------------------------------------------------------------ config
with open(os.path.join(ROOT, "dist", "gpuwarden.dev.json"), "rb") as f:
    dev = f.read()
KEY = {"kid": "k", "alg": "HS256", "secret_file": "dist/dev-secret.key"}
MODEL = {"path": "m.gguf", "name": "m"}


def cfgj(**top):
    d = {"model": MODEL, "auth": {"keys": [KEY]}}
    d.update(top)
    return json.dumps(d, indent=1).encode()


config = [
    dev,
    cfgj(),
    cfgj(auth={"keys": [KEY, {"kid": "rs", "alg": "RS256", "public_key_file": "tests/fixtures/keys/rs256.pub.pem"},
                        {"kid": "es", "alg": "ES256", "public_key_file": "tests/fixtures/keys/es256.pub.pem"}],
               "issuer": "i", "audience": "a", "leeway_s": 5}),
    cfgj(auth={"keys": [{"kid": "k", "alg": "HS512", "secret_file": "dist/dev-secret.key"}]}),
    cfgj(auth={"keys": [{"kid": "k", "alg": "RS256", "secret_file": "dist/dev-secret.key"}]}),
    cfgj(auth={"keys": [{"kid": "k", "alg": "HS256", "secret_file": "/nonexistent"}]}),
    cfgj(auth={"keys": [KEY, KEY]}),
    cfgj(listen=["0.0.0.0:80", "[::1]:8080", "unix:/tmp/x.sock"], fronts=4, workers=2),
    cfgj(listen=["nope"], fronts=0, workers=-1),
    cfgj(http={"header_bytes": 1024, "body_bytes": 1024, "header_timeout_ms": 1}),
    cfgj(http={"header_bytes": 1, "body_bytes": 1 << 40}),
    cfgj(segment={"accounts": 1, "budgets": 1, "slots": 1, "queue": 1, "prompt_bytes": 1, "output_bytes": 1}),
    cfgj(plans={"free": {"rate": ["2 per second burst 3", "60 per hour"], "budget": "60 GPU-seconds per day",
                         "max_inflight": 2, "max_tokens": 256, "on_budget": "refuse"}}, default_plan="free"),
    cfgj(plans={"p": {"rate": ["50 per fortnight"], "budget": "x GPU-seconds per second"}}),
    cfgj(plans={"p": {"rate": "2 per second"}}, default_plan="missing"),
    cfgj(tenants={"acme": {"plan": "pro", "plans": ["free"]}},
         plans={"pro": {"max_tokens": 10}, "free": {}}),
    cfgj(tenants={"acme": {"plan": {"rate": ["1 per second"], "max_tokens": 5}}}),
    cfgj(ip={"rate": ["20 per second burst 20"]}, **{"global": {"rate": ["200 per second burst 100"],
         "budget": "1.5 GPU-seconds per second", "max_inflight": 64}}),
    cfgj(admin={"socket": "./run/admin.sock", "operators": ["alice"], "admins": ["root"]}),
    cfgj(cost={"initial_us_per_token": 20000}),
    cfgj(watchdog={"interval_ms": 10, "stall_ms": 100}),
    cfgj(guard=[{"pattern": "(a+)+b", "action": "kill"}]),
    cfgj(unknown_key=1),
    b"{}",
    b"[]",
    b"",
    b"{\"model\": ",
    b'{"a":1,"a":2}',
    b'{"model": {"path": "\xff", "name": "m"}}',
    # auth.jwks_file: the fixture key set alone, beside auth.keys, a kid
    # taken twice, a file that is not a key set, a missing file
    cfgj(auth={"jwks_file": "tests/fixtures/keys/jwks.json", "issuer": "i"}),
    cfgj(auth={"keys": [KEY], "jwks_file": "tests/fixtures/keys/jwks.json"}),
    cfgj(auth={"keys": [{"kid": "rs", "alg": "HS256", "secret_file": "dist/dev-secret.key"}],
               "jwks_file": "tests/fixtures/keys/jwks.json"}),
    cfgj(auth={"jwks_file": "tests/fixtures/keys/rs256.pub.pem"}),
    cfgj(auth={"jwks_file": "/nonexistent/jwks.json"}),
]
write("config", config)

# -------------------------------------------------------------- gguf
def gstr(s):
    s = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(s)) + s


def kv(key, t, payload):
    return gstr(key) + struct.pack("<I", t) + payload


def arr(et, items):
    return struct.pack("<IQ", et, len(items)) + b"".join(items)


def gguf(kvs, tensors=(), version=3, align=32, data=b""):
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)) + b"".join(kvs)
    for name, dims, typ, off in tensors:
        out += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", typ, off)
    out += b"\0" * ((-len(out)) % align)
    return out + data


U32, I32, F32, BOOL, STR, ARR, U64 = 4, 5, 6, 7, 8, 9, 10
vocab = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "H", "e", "l", "o", "\u0120", "He", "ll"]
tok_kvs = [
    kv("general.architecture", STR, gstr("llama")),
    kv("tokenizer.ggml.model", STR, gstr("gpt2")),
    kv("tokenizer.ggml.pre", STR, gstr("smollm")),
    kv("tokenizer.ggml.tokens", ARR, arr(STR, [gstr(t) for t in vocab])),
    kv("tokenizer.ggml.token_type", ARR, arr(I32, [struct.pack("<i", 3 if t.startswith("<|") else 1) for t in vocab])),
    kv("tokenizer.ggml.merges", ARR, arr(STR, [gstr("H e"), gstr("l l")])),
    kv("tokenizer.ggml.bos_token_id", U32, struct.pack("<I", 1)),
    kv("tokenizer.ggml.eos_token_id", U32, struct.pack("<I", 2)),
]
spm_vocab = ["<unk>", "<s>", "</s>", "<0x41>", "\u2581a", "a"]
spm_kvs = [
    kv("tokenizer.ggml.model", STR, gstr("llama")),
    kv("tokenizer.ggml.tokens", ARR, arr(STR, [gstr(t) for t in spm_vocab])),
    kv("tokenizer.ggml.scores", ARR, arr(F32, [struct.pack("<f", -i) for i in range(len(spm_vocab))])),
    kv("tokenizer.ggml.token_type", ARR, arr(I32, [struct.pack("<i", t) for t in (2, 3, 3, 6, 1, 1)])),
]
f32 = struct.pack("<8f", *range(8))
ggufs = [
    gguf([]),
    gguf([], version=2),
    gguf([kv("general.alignment", U32, struct.pack("<I", 64))], align=64),
    gguf([kv("general.name", STR, gstr("tiny")), kv("x.u64", U64, struct.pack("<Q", 1 << 63)),
          kv("x.f32", F32, struct.pack("<f", 1.5)), kv("x.bool", BOOL, b"\1"),
          kv("x.nested", ARR, arr(ARR, [arr(U32, [struct.pack("<I", 1)]), arr(STR, [gstr("a")])]))]),
    gguf([], tensors=[("w", [8], 0, 0)], data=f32),
    gguf([], tensors=[("w", [4, 2], 0, 0), ("b", [2], 0, 32)], data=f32 + b"\0" * 24 + f32[:8]),
    gguf([], tensors=[("q", [32], 2, 0)], data=b"\0" * 18),
    gguf([], tensors=[("q", [32], 3, 0)], data=b"\0" * 20),
    gguf([], tensors=[("w", [8], 0, 64)], data=f32),
    gguf([], tensors=[("w", [1 << 62, 4], 0, 0)], data=f32),
    gguf([], tensors=[("w", [8], 99, 0)], data=f32),
    gguf([], tensors=[("w", [8], 0, 0), ("w", [8], 0, 0)], data=f32),
    gguf(tok_kvs),
    gguf(spm_kvs),
    gguf(tok_kvs[:3]),
    b"GGUF" + struct.pack("<IQQ", 3, 0, 1 << 60),
    b"GGUF" + struct.pack("<IQQ", 3, 1 << 60, 0),
    b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 62),
    b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gstr("k") + struct.pack("<IIQ", ARR, STR, 1 << 40),
    b"GGUF" + struct.pack("<IQQ", 1, 0, 0),
    b"GGUF",
    b"GGML" + struct.pack("<IQQ", 3, 0, 0),
    b"",
]
write("gguf", ggufs)

# ---------------------------------------------------------- tokenizer
# byte 0: flags (1 parse special, 2 add bos)
with open(os.path.join(ROOT, "tests", "fixtures", "smollm2_tokens.json"), "rb") as f:
    fixture_texts = [c["text"] for c in json.load(f)["cases"]]
tok = [b"\0" + t.encode() for t in fixture_texts[:24]]
tok += [
    b"\1<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    b"\0<|im_start|>user",
    b"\3Hello",
    b"\0\xff\xfe",
    b"\0\xed\xa0\x80",
    b"\0a\0b",
    b"\0" + "\u00e9\u4e2d\U0001F600 \t\r\n  x".encode(),
    b"\0" + b" " * 40 + b"123456789012345",
    b"\0",
]
write("tokenizer", tok)

# ---------------------------------------------------------------- fwd
# byte 0: 0 X-Forwarded-For, 1 Forwarded, 2 a CIDR range (tests/common/test_netaddr.c)
fwd = [b"\0" + s for s in (b"198.51.100.7", b"6.6.6.6, 198.51.100.7, 10.9.9.9",
                           b"[2001:db8::5]:4711, 10.2.2.2", b"unknown, 10.2.2.2",
                           b"1.2.3.4:99999", b"198.51.100.7,,10.0.0.2", b"::ffff:198.51.100.7")]
fwd += [b"\1" + s for s in (b"for=198.51.100.7",
                            b'for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, for=10.3.3.3',
                            b'For="198.51.100.7:80";by=10.0.0.1;host="a,b"',
                            b"for=_hidden, for=10.4.4.4", b'for="\\1\\98.51.100.7"',
                            b'for="1.2.3.4', b"for=1.2.3.4;for=5.6.7.8", b"proto=https")]
fwd += [b"\2" + s for s in (b"10.0.0.0/8", b"2001:db8::/32", b"::ffff:10.0.0.0/104",
                            b"10.0.0.1/8", b"::/129", b"192.0.2.1")]
# 3: a PROXY protocol header and what follows (tests/common/test_netaddr.c)
SIG = b"\r\n\r\n\0\r\nQUIT\n"
v4 = bytes([198, 51, 100, 7, 192, 0, 2, 1, 0xdc, 4, 1, 0xbb])
fwd += [b"\3" + s for s in (
    b"PROXY TCP4 198.51.100.7 192.0.2.1 56324 443\r\nGET / HTTP/1.1\r\n\r\n",
    b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n", b"PROXY UNKNOWN\r\n",
    b"PROXY TCP4 1.2.3 192.0.2.1 1 2\r\n", b"PROXY TCP4 " + b"1" * 120,
    SIG + b"\x21\x11\x00\x0c" + v4 + b"GET",
    SIG + b"\x21\x11\x00\x10" + v4 + b"\x04\x00\x01\x00",
    SIG + b"\x21\x21\x00\x24" + bytes([0x20, 1, 0xd, 0xb8] + [0] * 11 + [5]) + bytes(20),
    SIG + b"\x20\x00\x00\x00", SIG + b"\x21\x11\x00\x08" + v4[:8],
    SIG + b"\x21\x11\xff\xff" + v4, SIG + b"\x11\x11\x00\x0c" + v4)]
write("fwd", fwd)

# --------------------------------------------------------------- jwks
# a key set's text (tests/common/test_jwks.c), beside an HS256 key "k"
with open(os.path.join(ROOT, "tests", "fixtures", "keys", "jwks.json"), "rb") as f:
    fixture = json.load(f)
RS, ES = fixture["keys"]


def jwks(*keys, **top):
    d = {"keys": list(keys)}
    d.update(top)
    return json.dumps(d).encode()


def w(k, **m):
    k = dict(k)
    for name, v in m.items():
        if v is None:
            k.pop(name, None)
        else:
            k[name] = v
    return k


jwks_seeds = [
    jwks(RS, ES),
    jwks(RS, ES, x="ignored"),
    jwks(w(RS, alg=None, use=None, x5c=["MIIC"], key_ops=["verify"])),
    jwks(w(ES, kid="Nf_2e+/x=:9.-")),
    jwks(),
    jwks(*([RS] * 40)),
    jwks(RS, w(ES, kid="rs")),
    jwks(w(RS, kid="k")),
    jwks(w(RS, d="AQAB", p="AQAB")),
    jwks({"kty": "oct", "kid": "h", "k": "c2VjcmV0"}),
    jwks(w(RS, kty="OKP"), w(ES, crv="P-384")),
    jwks(w(RS, use="enc"), w(ES, key_ops=["sign"])),
    jwks(w(RS, alg="RS384"), w(ES, alg="none")),
    jwks(w(RS, e="AQAB="), w(ES, x="NxsysBZWTHsG7sRIqwjIGuyGRVqtu9yqFICyfhrd1I")),
    jwks(w(RS, n=RS["n"][:171]), w(RS, kid="r2", e="Aw")),
    jwks(w(ES, y=ES["y"][:-1] + "x")),
    jwks(w(RS, n=None), w(ES, x=7)),
    b'{"keys": [1, "a", null, []]}',
    b'{"keys": {}}',
    b"[]",
    b"",
    b'{"keys": [',
    b'{"keys": [], "keys": []}',
]
write("jwks", jwks_seeds)
