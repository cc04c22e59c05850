#!/usr/bin/env python3
"""bench_stream.py - closed-loop streaming client for the batching benchmark
(tests/bench/bench_batching.sh); standard library only.

    bench_stream.py run --target 127.0.0.1:PORT --concurrency N --requests R
                        [--token JWT] [--max-tokens 128] [--prompt TEXT]
                        [--ignore-eos] [--label NAME] [--json FILE]
    bench_stream.py table FILE.jsonl     side-by-side table of the runs in FILE

`run`: N clients, each on its own keep-alive connection, send streamed
/v1/completions requests back to back (closed loop: the next as soon as the
last ended) until R have been sent; greedy (temperature 0). Without
--token no Authorization header is sent (llama-server). Per request:
TTFT = first streamed text minus the send; TPOT = (last text event - first
text event) / (tokens - 1), tokens being usage.completion_tokens when the
server gives it (stream_options.include_usage), else the text events.
Per run (one line, and one JSON object appended to --json): concurrency,
requests, answered, total generated tokens, wall time (first send to last
end), aggregate tok/s = tokens / wall, TPOT p50/p99, TTFT p50/p99 (nearest
rank, as gpuwarden-load). Loopback targets only; every request has a
timeout (--timeout, default 300 s). A benchmark, not a test: it asserts
nothing, but exits 1 when a request failed.
"""
import argparse
import asyncio
import ipaddress
import json
import math
import sys
import time

DEFAULT_PROMPT = ("Here is a long numbered list of one hundred animals, one per line, "
                  "each with a short description:\n1.")


def quantile(v, q):
    """Nearest rank: the smallest sample with at least q of them at or below."""
    if not v:
        return 0.0
    s = sorted(v)
    i = max(0, math.ceil(q * len(s)) - 1)
    return s[min(i, len(s) - 1)]


class Conn:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closes."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.r = self.w = None

    async def open(self):
        if self.w is None:
            self.r, self.w = await asyncio.open_connection(self.host, self.port)

    def close(self):
        if self.w is not None:
            self.w.close()
        self.r = self.w = None

    async def body_chunks(self, headers):
        """Yields the response body as it arrives (chunked, length or EOF)."""
        te = headers.get("transfer-encoding", "").lower()
        if "chunked" in te:
            while True:
                line = await self.r.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await self.r.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                data = await self.r.readexactly(size)
                await self.r.readline()
                yield data
        elif "content-length" in headers:
            left = int(headers["content-length"])
            while left > 0:
                data = await self.r.read(min(left, 65536))
                if not data:
                    raise ConnectionError("EOF inside the body")
                left -= len(data)
                yield data
        else:
            while True:
                data = await self.r.read(65536)
                if not data:
                    return
                yield data
            # (the connection is closed after such a body)


class Stale(ConnectionError):
    """A kept-alive connection the server had closed (idle timeout): retried."""


async def one_request(conn, args, body):
    """Sends one streamed request; returns a dict of what it measured."""
    reused = conn.w is not None
    await conn.open()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: {args.target}\r\n"
            f"User-Agent: bench_stream\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n")
    if args.token:
        head += f"Authorization: Bearer {args.token}\r\n"
    t0 = time.perf_counter()
    try:
        conn.w.write(head.encode() + b"\r\n" + body)
        await conn.w.drain()
        status_line = await conn.r.readline()
    except OSError as e:
        if reused:
            raise Stale(str(e)) from e
        raise
    if not status_line:
        if reused:
            raise Stale("closed before the status line")
        raise ConnectionError("connection closed before the status line")
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = await conn.r.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    res = {"status": status, "t0": t0, "first": None, "last": None, "events": 0,
           "tokens": None, "finish": None}
    buf = b""
    raw = b""
    async for chunk in conn.body_chunks(headers):
        now = time.perf_counter()
        if status != 200:
            raw += chunk
            continue
        buf += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            for line in ev.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]" or not data:
                    continue
                o = json.loads(data)
                ch = (o.get("choices") or [None])[0]
                if ch:
                    text = ch.get("text")
                    if text is None:
                        text = (ch.get("delta") or {}).get("content")
                    if text:
                        res["events"] += 1
                        if res["first"] is None:
                            res["first"] = now
                        res["last"] = now
                    if ch.get("finish_reason"):
                        res["finish"] = ch["finish_reason"]
                u = o.get("usage")
                if isinstance(u, dict) and isinstance(u.get("completion_tokens"), int):
                    res["tokens"] = u["completion_tokens"]
    res["end"] = time.perf_counter()
    if status != 200:
        res["error"] = raw[:300].decode("utf-8", "replace")
    conn_hdr = headers.get("connection", "").lower()
    if conn_hdr == "close" or ("transfer-encoding" not in headers
                               and "content-length" not in headers):
        conn.close()
    if res["tokens"] is None:
        res["tokens"] = res["events"]
    return res


async def client(args, conn, body, todo, results):
    while todo[0] > 0:
        todo[0] -= 1
        try:
            try:
                r = await asyncio.wait_for(one_request(conn, args, body), args.timeout)
            except Stale:
                conn.close()
                r = await asyncio.wait_for(one_request(conn, args, body), args.timeout)
        except (OSError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                ValueError) as e:
            conn.close()
            r = {"status": 0, "error": f"{type(e).__name__}: {e}"}
        results.append(r)


async def run(args):
    host, _, port = args.target.rpartition(":")
    if not ipaddress.ip_address(host.strip("[]")).is_loopback:
        sys.exit(f"bench_stream: {args.target}: loopback targets only")
    req = {"model": args.model, "prompt": args.prompt, "max_tokens": args.max_tokens,
           "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    if args.ignore_eos:
        req["ignore_eos"] = True
    body = json.dumps(req).encode()
    conns = [Conn(host.strip("[]"), int(port)) for _ in range(args.concurrency)]
    todo = [args.requests]
    results = []
    t0 = time.perf_counter()
    await asyncio.gather(*(client(args, c, body, todo, results) for c in conns))
    wall = time.perf_counter() - t0
    for c in conns:
        c.close()
    ok = [r for r in results if r["status"] == 200 and r["first"] is not None]
    tokens = sum(r["tokens"] for r in ok)
    ttft = [(r["first"] - r["t0"]) * 1e3 for r in ok]
    tpot = [(r["last"] - r["first"]) * 1e3 / (r["tokens"] - 1) for r in ok if r["tokens"] > 1]
    finish = {}
    for r in ok:
        finish[r["finish"] or "none"] = finish.get(r["finish"] or "none", 0) + 1
    errors = [r.get("error") or f"status {r['status']}" for r in results if r not in ok]
    out = {
        "label": args.label, "concurrency": args.concurrency, "requests": len(results),
        "ok": len(ok), "tokens": tokens, "wall_s": round(wall, 3),
        "tok_per_s": round(tokens / wall, 2) if wall > 0 else 0.0,
        "tokens_per_request_min": min((r["tokens"] for r in ok), default=0),
        "tokens_per_request_max": max((r["tokens"] for r in ok), default=0),
        "tpot_p50_ms": round(quantile(tpot, 0.5), 2), "tpot_p99_ms": round(quantile(tpot, 0.99), 2),
        "ttft_p50_ms": round(quantile(ttft, 0.5), 1), "ttft_p99_ms": round(quantile(ttft, 0.99), 1),
        "finish": finish, "errors": errors[:3], "n_errors": len(errors),
    }
    print(f"{args.label or args.target}: concurrency {out['concurrency']}, requests "
          f"{out['requests']} ({out['ok']} ok), tokens {tokens} "
          f"({out['tokens_per_request_min']}..{out['tokens_per_request_max']} per request), "
          f"wall {wall:.2f} s, {out['tok_per_s']:.1f} tok/s, TPOT p50 {out['tpot_p50_ms']:.1f} "
          f"p99 {out['tpot_p99_ms']:.1f} ms, TTFT p50 {out['ttft_p50_ms']:.1f} "
          f"p99 {out['ttft_p99_ms']:.1f} ms, finish {finish}", flush=True)
    for e in errors[:3]:
        print(f"  error: {e}", file=sys.stderr)
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(out) + "\n")
    return 0 if not errors else 1


def table(path):
    """Side by side: per concurrency one row per label, then tok/s and TPOT p50
    of every label on one row."""
    runs = [json.loads(line) for line in open(path) if line.strip()]
    labels = []
    for r in runs:
        if r["label"] not in labels:
            labels.append(r["label"])
    by = {(r["label"], r["concurrency"]): r for r in runs}
    ns = sorted({r["concurrency"] for r in runs})
    print("| streams | server | requests | tokens (per request) | wall s | tok/s | TPOT p50 | "
          "TPOT p99 | TTFT p50 | TTFT p99 |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in ns:
        for lab in labels:
            r = by.get((lab, n))
            if not r:
                continue
            per = (str(r["tokens_per_request_min"])
                   if r["tokens_per_request_min"] == r["tokens_per_request_max"] else
                   f"{r['tokens_per_request_min']}..{r['tokens_per_request_max']}")
            print(f"| {n} | {lab} | {r['ok']}/{r['requests']} | {r['tokens']} ({per}) | "
                  f"{r['wall_s']:.1f} | {r['tok_per_s']:.1f} | {r['tpot_p50_ms']:.1f} | "
                  f"{r['tpot_p99_ms']:.1f} | {r['ttft_p50_ms']:.0f} | {r['ttft_p99_ms']:.0f} |")
    print()
    print("| streams | " + " | ".join(f"{lab} tok/s" for lab in labels) + " | " +
          " | ".join(f"{lab} TPOT p50" for lab in labels) + " |")
    print("|---:|" + "---:|" * (2 * len(labels)))
    for n in ns:
        rs = [by.get((lab, n)) for lab in labels]
        print(f"| {n} | " + " | ".join(f"{r['tok_per_s']:.1f}" if r else "-" for r in rs) + " | " +
              " | ".join(f"{r['tpot_p50_ms']:.1f}" if r else "-" for r in rs) + " |")
    print("(tok/s: tokens generated by all streams / wall time, first send to last end; "
          "TPOT, TTFT in ms, nearest-rank percentiles over the run's requests)")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--target", required=True, help="HOST:PORT (loopback)")
    r.add_argument("--concurrency", type=int, required=True)
    r.add_argument("--requests", type=int, required=True)
    r.add_argument("--token", default="", help="JWT for gpuwarden; none for llama-server")
    r.add_argument("--model", default="smollm2")
    r.add_argument("--max-tokens", type=int, default=128)
    r.add_argument("--prompt", default=DEFAULT_PROMPT)
    r.add_argument("--ignore-eos", action="store_true",
                   help="send ignore_eos (llama-server only; gpuwarden refuses unknown fields)")
    r.add_argument("--timeout", type=float, default=300)
    r.add_argument("--label", default="")
    r.add_argument("--json", default="")
    t = sub.add_parser("table")
    t.add_argument("file")
    args = p.parse_args()
    if args.cmd == "table":
        table(args.file)
        return 0
    if not 1 <= args.concurrency <= 256 or not 1 <= args.requests <= 10000:
        sys.exit("bench_stream: concurrency in 1..256, requests in 1..10000")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
