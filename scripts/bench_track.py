"""vigil's tracker beside the trackers people pick today, on real pedestrian
ground truth (scripts/bench-track runs it; docs/benchmarks.md has the table).

The ground truth is py-motmetrics' own copy of TUD-Campus and TUD-Stadtmitte
(MOT15, 25 frames/s). From it, detections are made the way a real detector
errs, seeded, the same for every tracker: people hidden behind nearer people
(by the bottom edge) are missed or score low, each person drops out now and
then for several frames, boxes jitter, false positives come and go, and no
detection carries an id. vigil's tracker (`vigil track --mot-det`) and, in
the same run on the same detections, the PyPI `trackers` package's SORT,
ByteTrack, OC-SORT and BoT-SORT (camera-motion compensation off: these
cameras do not move) track them; py-motmetrics scores each (IDF1, MOTA, id
switches; IoU 0.5), and each one's frames per second is its tracking time
alone (vigil: as `vigil track` reports it, the Python trackers: their
`update` calls).

With --every S the trackers see one frame every S seconds (as vigil's live
detector samples a camera: one key frame per GOP), renumbered as a sequence
of 1/S frames per second; scores are over those frames, and "with id" is the
share of the people in them that a tracked box with an id covered.

usage: bench_track.py VIGIL [--seed N] [--rounds N] [--every S] [--config FILE]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

# py-motmetrics 1.4.0 (its latest release) still calls np.asfarray, which
# NumPy 2 removed; `trackers` needs NumPy 2. The same function, restored:
if not hasattr(np, "asfarray"):
    np.asfarray = lambda a, dtype=np.float64: np.asarray(a, dtype=dtype)

import motmetrics as mm  # noqa: E402
import supervision as sv  # noqa: E402
import trackers  # noqa: E402

FPS = 25.0
SEQUENCES = ["TUD-Campus", "TUD-Stadtmitte"]


def load_gt(name):
    path = os.path.join(os.path.dirname(mm.__file__), "data", name, "gt.txt")
    rows = np.loadtxt(path, delimiter=",")
    frames = {}
    for r in rows:
        f, i, x, y, w, h = int(r[0]), int(r[1]), *r[2:6]
        frames.setdefault(f, []).append((i, x, y, w, h))
    return frames, int(rows[:, 0].max())


def iou_cover(a, b):
    """The share of box a covered by box b (x, y, w, h)."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3])


def detections(gt, last, seed):
    """Per frame, a list of (x, y, w, h, score): a detector's mistakes."""
    rng = np.random.default_rng(seed)
    dropout = {}  # person -> frames left of a dropout
    out = {}
    for f in range(1, last + 1):
        people = gt.get(f, [])
        dets = []
        for (i, x, y, w, h) in people:
            if dropout.get(i, 0) > 0:
                dropout[i] -= 1
                continue
            if rng.random() < 0.03:
                dropout[i] = int(rng.integers(2, 7)) - 1
                continue
            # Hidden by a nearer person (lower bottom edge is nearer).
            cover = max(
                [iou_cover((x, y, w, h), (x2, y2, w2, h2)) for (j, x2, y2, w2, h2) in people if j != i and y2 + h2 > y + h]
                or [0.0]
            )
            if cover > 0.5 and rng.random() < 0.8:
                continue
            score = rng.uniform(0.55, 0.95)
            if cover > 0.25:
                score = rng.uniform(0.2, 0.55)
            jx, jy = rng.normal(0, 0.04 * w), rng.normal(0, 0.03 * h)
            jw, jh = rng.normal(0, 0.05 * w), rng.normal(0, 0.04 * h)
            dets.append((x + jx, y + jy, max(4.0, w + jw), max(4.0, h + jh), score))
        for _ in range(rng.poisson(0.3)):
            w = rng.uniform(40, 100)
            dets.append((rng.uniform(0, 600), rng.uniform(50, 250), w, w * 2.2, rng.uniform(0.25, 0.65)))
        order = rng.permutation(len(dets))
        out[f] = [dets[k] for k in order]
    return out


def mot_det_text(dets):
    return "".join(
        f"{f},-1,{x:.2f},{y:.2f},{w:.2f},{h:.2f},{s:.4f},-1,-1,-1\n" for f in sorted(dets) for (x, y, w, h, s) in dets[f]
    )


def subsample(gt, dets, last, every):
    """The frames one every `every` seconds keeps, renumbered from 1."""
    kept, bucket = [], None
    for f in range(1, last + 1):
        b = int((f - 1) / FPS // every)
        if b != bucket:
            kept.append(f)
            bucket = b
    gt2 = {i + 1: gt.get(f, []) for i, f in enumerate(kept)}
    dets2 = {i + 1: dets.get(f, []) for i, f in enumerate(kept)}
    return gt2, dets2, len(kept)


def run_vigil(vigil, text, fps, config=None):
    """Tracks per frame {frame: [(id, x, y, w, h)]} and seconds of tracking
    (as `vigil track` measures it: the tracker's own time, like the Python
    trackers' `update` calls)."""
    with tempfile.TemporaryDirectory() as d:
        det, out = os.path.join(d, "det.txt"), os.path.join(d, "out.txt")
        open(det, "w").write(text)
        cmd = [vigil, "track", "--mot-det", det, "--frame-rate", str(fps), "-o", out, "--metrics-listen", "off"]
        if config:
            cmd[1:1] = ["--config", os.path.abspath(config)]
        # Best of 3, as the tracker's time is a few milliseconds.
        seconds = min(tracking_seconds(subprocess.run(cmd, check=True, cwd=d, capture_output=True, text=True).stderr) for _ in range(3))
        tracks = {}
        for line in open(out):
            f = line.split(",")
            tracks.setdefault(int(f[0]), []).append((int(f[1]), *map(float, f[2:6])))
    return tracks, seconds


def tracking_seconds(stderr):
    m = re.search(r"in ([0-9.]+) ms of tracking", stderr)
    if not m:
        sys.exit(f"vigil track did not report its tracking time: {stderr}")
    return max(float(m.group(1)) / 1e3, 1e-9)


def run_python(make, dets, last, fps):
    tracker = make(fps)
    tracks = {}
    seconds = 0.0
    for f in range(1, last + 1):
        d = dets.get(f, [])
        xyxy = np.array([[x, y, x + w, y + h] for (x, y, w, h, _) in d], dtype=np.float32).reshape(-1, 4)
        conf = np.array([s for (*_, s) in d], dtype=np.float32)
        det = sv.Detections(xyxy=xyxy, confidence=conf, class_id=np.zeros(len(d), dtype=int))
        t0 = time.perf_counter()
        res = tracker.update(det)
        seconds += time.perf_counter() - t0
        for (x1, y1, x2, y2), tid in zip(res.xyxy, res.tracker_id):
            if tid is not None and tid >= 0:
                tracks.setdefault(f, []).append((int(tid), x1, y1, x2 - x1, y2 - y1))
    return tracks, seconds


def accumulate(gt, tracks, last):
    acc = mm.MOTAccumulator(auto_id=True)
    for f in range(1, last + 1):
        g = gt.get(f, [])
        t = tracks.get(f, [])
        dist = mm.distances.iou_matrix([r[1:] for r in g], [r[1:] for r in t], max_iou=0.5)
        acc.update([r[0] for r in g], [r[0] for r in t], dist)
    return acc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vigil")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=10, help="detection seeds per sequence (seed, seed+1, ...)")
    ap.add_argument("--every", type=float, default=None, help="analyse one frame every S seconds")
    ap.add_argument("--config", default=None, help="a vigil config file whose [detect] tracker settings vigil uses")
    a = ap.parse_args()
    python_trackers = {
        "SORT": lambda fps: trackers.SORTTracker(frame_rate=fps),
        "ByteTrack": lambda fps: trackers.ByteTrackTracker(frame_rate=fps),
        "OC-SORT": lambda fps: trackers.OCSORTTracker(frame_rate=fps),
        "BoT-SORT": lambda fps: trackers.BoTSORTTracker(frame_rate=fps, enable_cmc=False),
    }
    names = ["vigil"] + list(python_trackers)
    accs = {n: [] for n in names}
    seconds = {n: 0.0 for n in names}
    frames = 0
    labels = []
    for name in SEQUENCES:
        gt, last = load_gt(name)
        for r in range(a.rounds):
            dets = detections(gt, last, a.seed + r)
            g, d, n_frames, fps = gt, dets, last, FPS
            if a.every:
                g, d, n_frames = subsample(gt, dets, last, a.every)
                fps = 1.0 / a.every
            frames += n_frames
            labels.append(f"{name}/{a.seed + r}")
            tracks, s = run_vigil(a.vigil, mot_det_text(d), fps, a.config)
            accs["vigil"].append(accumulate(g, tracks, n_frames))
            seconds["vigil"] += s
            for n, make in python_trackers.items():
                tracks, s = run_python(make, d, n_frames, fps)
                accs[n].append(accumulate(g, tracks, n_frames))
                seconds[n] += s
    mh = mm.metrics.create()
    rate = f"one frame every {a.every:g} s" if a.every else f"{FPS:g} fps"
    print(f"{len(SEQUENCES)} sequences x {a.rounds} detection seeds from {a.seed}, {frames} frames, {rate}")
    print(f"{'tracker':<10} {'IDF1':>6} {'MOTA':>6} {'IDsw':>5} {'with id':>8} {'frames/s':>10}")
    rows = {}
    for n in names:
        metrics = ["idf1", "mota", "num_switches", "num_matches", "num_objects"]
        m = mh.compute_many(accs[n], metrics=metrics, names=labels, generate_overall=True)
        o = m.loc["OVERALL"]
        # A box with an id over a person: matched, or matched to another id.
        with_id = (o["num_matches"] + o["num_switches"]) / max(o["num_objects"], 1)
        rows[n] = (o["idf1"], o["mota"], int(o["num_switches"]), frames / seconds[n])
        print(f"{n:<10} {o['idf1']:6.3f} {o['mota']:6.3f} {int(o['num_switches']):5d} {with_id:8.1%} {frames / seconds[n]:10.0f}")
    best = max(names[1:], key=lambda n: rows[n][0])
    fastest = max(rows[n][3] for n in names[1:])
    print(
        f"vigil vs the best of them ({best}): IDF1 {rows['vigil'][0] - rows[best][0]:+.3f} (goal >= +0.05), "
        f"speed {rows['vigil'][3] / fastest:.0f}x the fastest (goal >= 20x)"
    )


if __name__ == "__main__":
    sys.exit(main())
