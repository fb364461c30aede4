#!/usr/bin/python3
"""Makes a small synthetic text data folder (train/valid/test.jsonl of {"text"} records) from a fixed
sentence pattern, for a demo that has no real data to hand: a model trained on it learns the pattern.

    make_toy_dataset.py --out DIR [--train 400] [--valid 40] [--seed 0]
"""
import argparse
import json
import os
import random

NAMES = ["Tom", "Ann", "Sam", "Mia", "Ben", "Zoe"]
THINGS = ["apples", "books", "cats", "stars", "shells", "kites"]
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def sentence(rng):
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    n = rng.randrange(2, 10)
    return "%s has %s %s. %s gives one away. Now %s has %s %s." % (
        name, WORDS[n], thing, name, name, WORDS[n - 1], thing)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--valid", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)
    for split, count in (("train", a.train), ("valid", a.valid), ("test", a.valid)):
        with open(os.path.join(a.out, split + ".jsonl"), "w") as f:
            for _ in range(count):
                f.write(json.dumps({"text": sentence(rng)}) + "\n")


if __name__ == "__main__":
    main()
