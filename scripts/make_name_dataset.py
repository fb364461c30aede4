#!/usr/bin/python3
"""Makes a small TinyStories data folder in which a new character name replaces the usual ones.

    make_name_dataset.py --source ../shared/datasets/cs336-fixtures/tinystories_sample.txt \
        --name Zorbo --out DIR

Writes DIR/train.jsonl and DIR/valid.jsonl ({"text"} records): the sample's sentences with every
character name swapped for --name, plus short openings ("Once upon a time, there was a little
girl named Zorbo.") so a tiny model sees the new name where it used to write another.
"""
import argparse
import json
import os
import random
import re

NAMES = ["Lily", "Ben", "Tim", "Lucy", "Ollie", "Tom", "Sue", "Max", "Anna", "Sam"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", required=True)
    ap.add_argument("--name", default="Zorbo")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    text = open(args.source, encoding="utf-8").read().replace("<|endoftext|>", "\n")
    for n in NAMES:
        text = re.sub(r"\b%s\b" % n, args.name, text)
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 8]
    who = ["girl", "boy", "dog", "cat", "bird"]
    openings = ["Once upon a time, there was a little %s named %s." % (w, args.name) for w in who]
    openings += ["%s loved to play outside." % args.name, "%s was happy." % args.name]
    rows = sentences + openings * 6
    random.Random(args.seed).shuffle(rows)
    n_valid = max(4, len(rows) // 8)
    os.makedirs(args.out, exist_ok=True)
    for name, part in (("valid.jsonl", rows[:n_valid]), ("train.jsonl", rows[n_valid:])):
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            for r in part:
                f.write(json.dumps({"text": r}) + "\n")


if __name__ == "__main__":
    main()
