#!/usr/bin/env python3
"""bench/plot.py - P@1 against training seconds, one panel per data set, as an SVG.

    python3 bench/plot.py RESULTS.csv OUT.svg

RESULTS.csv holds the checkpoints bench-scale writes with --csv: one line per checkpoint,
"name,variant,examples,train_seconds,p1,p5" (bench/plot.sh makes it for citeulike-t and the two
large sets). The x axis is logarithmic: the full softmax is about a hundred times slower, and its
curve would otherwise squeeze the others into the first pixels. Python 3 standard library only.
"""
import csv
import math
import sys

COLOURS = {"full": "#444444", "shared": "#999999", "simhash": "#1f77b4", "lsh": "#1f77b4",
           "mongoose": "#d62728", "perfect": "#2ca02c"}
LABELS = {"full": "full softmax", "shared": "shared set only", "simhash": "lsh (SimHash tables)",
          "lsh": "lsh", "mongoose": "mongoose (learned hashing)", "perfect": "perfect retrieval (bound)"}


def read(path):
    runs = {}
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if len(row) < 6 or row[0] == "name":
                continue
            name, variant = row[0], row[1]
            runs.setdefault(name, {}).setdefault(variant, []).append((float(row[3]), float(row[4])))
    for variants in runs.values():
        for points in variants.values():
            points.sort()
    return runs


def panel(name, variants, x0, y0, w, h):
    """One panel's SVG elements, at (x0, y0), w x h pixels."""
    out = []
    xs = [s for pts in variants.values() for s, _ in pts if s > 0]
    ys = [p for pts in variants.values() for _, p in pts]
    if not xs:
        return out
    lo, hi = math.log10(min(xs)), math.log10(max(xs))
    lo, hi = math.floor(lo), math.ceil(hi) if hi > lo else lo + 1
    ymin, ymax = 0.0, max(ys) * 1.1 if ys else 1.0
    left, right, top, bottom = x0 + 50, x0 + w - 10, y0 + 25, y0 + h - 35

    def X(s):
        return left + (math.log10(max(s, 10 ** lo)) - lo) / (hi - lo) * (right - left)

    def Y(p):
        return bottom - (p - ymin) / (ymax - ymin) * (bottom - top)

    out.append(f'<text x="{x0 + w / 2:.0f}" y="{y0 + 15}" text-anchor="middle" font-weight="bold">{name}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#ccc"/>')
    for e in range(lo, hi + 1):
        x = X(10 ** e)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle" font-size="10">{10 ** e:g}</text>')
    steps = 5
    for i in range(steps + 1):
        p = ymin + (ymax - ymin) * i / steps
        out.append(f'<text x="{left - 4}" y="{Y(p) + 3:.1f}" text-anchor="end" font-size="10">{p:.2f}</text>')
    out.append(f'<text x="{(left + right) / 2:.0f}" y="{bottom + 28}" text-anchor="middle" font-size="11">'
               f'training seconds (log scale)</text>')
    out.append(f'<text x="{x0 + 12}" y="{(top + bottom) / 2:.0f}" font-size="11" '
               f'transform="rotate(-90 {x0 + 12} {(top + bottom) / 2:.0f})" text-anchor="middle">P@1</text>')
    for variant, pts in sorted(variants.items()):
        colour = COLOURS.get(variant, "#8c564b")
        path = " ".join(f"{X(s):.1f},{Y(p):.1f}" for s, p in pts if s > 0)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for s, p in pts:
            if s > 0:
                out.append(f'<circle cx="{X(s):.1f}" cy="{Y(p):.1f}" r="2.5" fill="{colour}"/>')
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py RESULTS.csv OUT.svg")
    runs = read(sys.argv[1])
    names = sorted(runs)
    w, h = 380, 300
    width, height = max(1, len(names)) * w, h + 30
    body = []
    for i, name in enumerate(names):
        body += panel(name, runs[name], i * w, 0, w, h)
    variants = sorted({v for r in runs.values() for v in r})
    for i, v in enumerate(variants):
        x = 10 + i * 190
        body.append(f'<rect x="{x}" y="{h + 8}" width="12" height="12" fill="{COLOURS.get(v, "#8c564b")}"/>')
        body.append(f'<text x="{x + 16}" y="{h + 18}" font-size="11">{LABELS.get(v, v)}</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">\n<rect width="100%" height="100%" fill="white"/>\n'
           + "\n".join(body) + "\n</svg>\n")
    with open(sys.argv[2], "w") as f:
        f.write(svg)


if __name__ == "__main__":
    main()
