#!/usr/bin/env python3
"""Compare an Autobahn report (index.json) with the checked-in expected grades.

Fails (exit 1) when any expected case is missing from the run, or when a
case's behavior or close grade is worse than expected. Better grades pass
and are listed so the expectations can be raised (--update rewrites them).
"""
import json
import sys

RANK = {"OK": 0, "NON-STRICT": 1, "INFORMATIONAL": 1, "UNIMPLEMENTED": 2, "WRONG CODE": 3, "UNCLEAN": 3, "FAILED": 3}


def load_report(path):
    with open(path) as f:
        data = json.load(f)
    (cases,) = data.values()
    return {k: {"behavior": v["behavior"], "behaviorClose": v["behaviorClose"]} for k, v in cases.items()}


def case_key(case):
    return [int(p) for p in case.split(".")]


def main(argv):
    update = "--update" in argv
    args = [a for a in argv if a != "--update"]
    report, expected_path = args
    got = load_report(report)
    if update:
        with open(expected_path, "w") as f:
            json.dump({k: got[k] for k in sorted(got, key=case_key)}, f, indent=1, sort_keys=False)
            f.write("\n")
        print(f"autobahn: wrote {len(got)} cases to {expected_path}")
        return 0
    with open(expected_path) as f:
        expected = json.load(f)
    worse, better = [], []
    for case, want in sorted(expected.items(), key=lambda kv: case_key(kv[0])):
        have = got.get(case)
        if have is None:
            worse.append(f"{case}: missing from the run")
            continue
        for field in ("behavior", "behaviorClose"):
            w, h = want[field], have[field]
            if RANK.get(h, 3) > RANK.get(w, 3):
                worse.append(f"{case}: {field} {w} -> {h}")
            elif RANK.get(h, 3) < RANK.get(w, 3):
                better.append(f"{case}: {field} {w} -> {h}")
    extra = sorted(set(got) - set(expected), key=case_key)
    for case in extra:
        if RANK.get(got[case]["behavior"], 3) > 1:
            worse.append(f"{case}: not expected, graded {got[case]['behavior']}")
    counts = {}
    for v in got.values():
        counts[v["behavior"]] = counts.get(v["behavior"], 0) + 1
    print("autobahn: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) + f" ({len(got)} cases)")
    for line in better:
        print(f"autobahn: better than expected: {line}")
    for line in worse:
        print(f"autobahn: WORSE: {line}")
    if worse:
        print(f"autobahn: {len(worse)} regressions against {expected_path}")
        return 1
    print(f"autobahn: every case at least as good as {expected_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
