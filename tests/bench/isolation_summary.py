#!/usr/bin/env python3
"""isolation_summary.py - the legitimate classes of bench_batching.sh's
isolation rounds: per round (from each round's gpuwarden-load JSON report)
and pooled over the rounds (from the --timeline CSVs, one line per request).

    isolation_summary.py OUT_DIR ROUNDS SERVER... [--control CONTROL_DIR]

Reads OUT_DIR/isolation-SERVER-rROUND.{json,csv}. CONTROL_DIR: the
rounds of the control run (bench_batching.sh isolation with
GW_ISO_ATTACK=0: the same requests of the legitimate classes, at the same
instants, without the attack); each attacked class's pooled p99 is then
also compared with the same class's in the control, like for like. The
latency of a class is what its threshold in dist/scenarios/isolation.json names: TTFT for a
streaming class, the whole answer for the others. Percentiles are nearest
rank over the answers with status 200. The pooled ratio is the attacked
class's p99 over its calm class's, each over every round's answers. A
benchmark's report: it asserts nothing."""
import collections
import csv
import json
import math
import os
import sys


def pct(xs, p):
    """Nearest-rank percentile p of xs (None when empty)."""
    if not xs:
        return None
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]


def fmt(x):
    return "-" if x is None else f"{x:.1f}"


def streaming(scenario):
    return {c["name"]: c.get("stream", False) for c in scenario["classes"]}


def latency(row, stream):
    """A timeline row's latency in ms (its class's threshold's), or None
    for a refusal, an error, or a 200 whose answer never came."""
    value = row["ttft_ms"] if stream.get(row["class"]) else row["total_ms"]
    return float(value) if row["status"] == "200" and value else None


def compare(base, other):
    """The table cells "p50 base -> other | p99 base -> other | p99 ratio"."""
    p99b, p99o = pct(base, 99), pct(other, 99)
    ratio = p99o / p99b if p99b and p99o else None
    return (f"{fmt(pct(base, 50))} -> {fmt(pct(other, 50))} | {fmt(p99b)} -> {fmt(p99o)} | "
            f"{'-' if ratio is None else f'{ratio:.2f}'}")


def control_latencies(ctl, server, stream):
    """The control rounds' latencies of server's classes: class -> list."""
    lat = collections.defaultdict(list)
    for name in sorted(os.listdir(ctl)):
        if not (name.startswith(f"isolation-{server}-r") and name.endswith(".csv")):
            continue
        for row in csv.DictReader(open(os.path.join(ctl, name))):
            ms = latency(row, stream)
            if row["class"].startswith("legit-") and ms is not None:
                lat[row["class"]].append(ms)
    return lat


def main():
    args, ctl = sys.argv[1:], None
    if "--control" in args:
        i = args.index("--control")
        ctl = args[i + 1]
        del args[i:i + 2]
    out, rounds, servers = args[0], int(args[1]), args[2:]
    stream = streaming(json.load(open("dist/scenarios/isolation.json")))
    print("Per round (TTFT p99 for streams, whole answer p99 otherwise, ms):")
    print("| server | round | class | sent | 200 | other outcomes | p50 | p99 |")
    print("|---|---:|---|---:|---:|---|---:|---:|")
    pooled = collections.defaultdict(list)  # (server, class) -> latencies
    outcomes = collections.defaultdict(collections.Counter)
    for s in servers:
        for r in range(1, rounds + 1):
            path = os.path.join(out, f"isolation-{s}-r{r}.csv")
            if not os.path.exists(path):
                continue
            per = collections.defaultdict(list)
            other = collections.defaultdict(collections.Counter)
            sent = collections.Counter()
            for row in csv.DictReader(open(path)):
                cls, outcome, status = row["class"], row["outcome"], row["status"]
                if not cls.startswith("legit-"):
                    continue
                sent[cls] += 1
                outcomes[(s, cls)][f"{outcome}/{status}"] += 1
                ms = latency(row, stream)
                if ms is not None:
                    per[cls].append(ms)
                else:
                    other[cls][f"{outcome}/{status}"] += 1
            for cls in sorted(sent):
                pooled[(s, cls)] += per[cls]
                rest = ", ".join(f"{k} {v}" for k, v in sorted(other[cls].items())) or "-"
                print(f"| {s} | {r} | {cls} | {sent[cls]} | {len(per[cls])} | {rest} | "
                      f"{fmt(pct(per[cls], 50))} | {fmt(pct(per[cls], 99))} |")
    print()
    print(f"Pooled over {rounds} round(s):")
    print("| server | tenant class | answers calm / attacked | success attacked | "
          "p50 calm -> attacked | p99 calm -> attacked | p99 ratio |")
    print("|---|---|---:|---:|---|---|---:|")
    for s in servers:
        for calm in sorted(c for (sv, c) in pooled if sv == s and c.endswith("-calm")):
            att = calm[: -len("calm")] + "attacked"
            a, c = pooled.get((s, att), []), pooled[(s, calm)]
            total = sum(outcomes[(s, att)].values())
            ok = 100 * len(a) / total if total else 0
            print(f"| {s} | {calm[:-5]} | {len(c)} / {len(a)} | {ok:.2f}% | {compare(c, a)} |")
    if ctl:
        print()
        print(f"Against the control ({ctl}: the same requests without the attack):")
        print("| server | tenant class | answers control / attacked | p50 control -> attacked | "
              "p99 control -> attacked | p99 ratio |")
        print("|---|---|---:|---|---|---:|")
        for s in servers:
            lat = control_latencies(ctl, s, stream)
            for att in sorted(c for (sv, c) in pooled if sv == s and c.endswith("-attacked")):
                c, a = lat.get(att, []), pooled[(s, att)]
                if c:
                    print(f"| {s} | {att[:-9]} | {len(c)} / {len(a)} | {compare(c, a)} |")
    print()
    print("attack classes, last round: sent / 200 / other outcomes")
    for s in servers:
        p = os.path.join(out, f"isolation-{s}-r{rounds}.json")
        if not os.path.exists(p):
            continue
        for c in json.load(open(p))["classes"]:
            if c["name"].startswith("legit-"):
                continue
            rest = {k: v for k, v in c["outcomes"].items() if v and k != "200"}
            print(f"  {s:12} {c['name']:14} sent {c['sent']:5}  200 {c['outcomes']['200']:5}  {rest}")


if __name__ == "__main__":
    main()
