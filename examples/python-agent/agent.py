"""A small stand-in for an AI agent: reads its task from input.json, works
through it step by step, reports progress on stdout, and leaves its answer
in out/result.json, which Airlock collects.

    airlock run --image debian --workload examples/python-agent -- python3 agent.py
"""

import collections
import json
import os
import platform
import sys
import time


def main():
    with open("input.json", encoding="utf-8") as f:
        task = json.load(f)

    documents = task["documents"]
    top = int(task.get("top", 3))
    counts = collections.Counter()
    per_document = {}
    for number, (name, text) in enumerate(sorted(documents.items()), start=1):
        words = [w.strip(".,;:!?\"'()").lower() for w in text.split()]
        words = [w for w in words if w]
        counts.update(words)
        per_document[name] = len(words)
        print(f"[{number}/{len(documents)}] read {name}: {len(words)} words", flush=True)

    answer = {
        "question": task["question"],
        "documents": per_document,
        "topWords": [{"word": w, "count": c} for w, c in counts.most_common(top)],
        "python": platform.python_version(),
        "host": platform.node(),
        "finishedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    os.makedirs("out", exist_ok=True)
    with open("out/result.json", "w", encoding="utf-8") as f:
        json.dump(answer, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"done: wrote out/result.json ({len(counts)} distinct words)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
