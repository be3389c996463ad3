#!/usr/bin/env python3
"""The Python baseline of `vigil-bench detect`: the detection stage as a
numpy + onnxruntime programmer would write it, over the same clip, model and
thread count as vigil's pipeline.

  decode       an `ffmpeg` child decodes the Annex-B clip and pipes rgb24
               frames to stdout (PyAV is not available); the time spent
               waiting for each frame's bytes is "decode"
  preprocess   letterbox (Ultralytics' LetterBox: bilinear resize only when
               the scale is not 1, gray 114 padding), HWC->CHW, /255, float32
  inference    onnxruntime.InferenceSession, intra_op_num_threads=T,
               inter_op_num_threads=1, graph optimisations all (as vigil)
  postprocess  best class per anchor, score > --score, class-aware greedy
               NMS at --iou (vectorised numpy), at most 300, back to source px
  tracking     SORT-like: a constant-velocity Kalman filter per track (the
               7-state SORT filter, numpy), class-aware greedy IoU matching
               (best pair first, IoU >= 0.3; not Hungarian: scipy is not
               installed), --min-hits, --max-age (vigil's tracker settings)

Model loading and one warm-up inference on a gray image happen before the
clock starts (vigil's side does the same). The clock then runs from starting
ffmpeg to the last frame tracked: wall time of the whole pipeline, pipe
included. Prints one JSON object on stdout.

  bench_detect.py --clip CLIP.h264 --model M.onnx --threads T
                  [--every K] [--size 640] [--keep 3]
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

PAD = 114
MAX_DET = 300


def probe_size(clip):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
         "-of", "csv=p=0", clip],
        check=True, capture_output=True, text=True).stdout
    w, h = out.strip().split(",")[:2]
    return int(w), int(h)


class Letterbox:
    """Where a w x h image lies in the size x size input, and the gather
    tables of a bilinear resize (pixel centres aligned, as cv2 INTER_LINEAR)."""

    def __init__(self, w, h, size):
        scale = min(size / w, size / h)
        self.w, self.h, self.size = w, h, size
        self.nw = min(max(round(w * scale), 1), size)
        self.nh = min(max(round(h * scale), 1), size)
        self.left, self.top = (size - self.nw) // 2, (size - self.nh) // 2
        self.copy = (self.nw, self.nh) == (w, h)
        if not self.copy:
            def table(dst, src):
                s = np.clip((np.arange(dst, dtype=np.float32) + 0.5) * src / dst - 0.5, 0, src - 1)
                i0 = np.floor(s).astype(np.intp)
                return i0, np.minimum(i0 + 1, src - 1), (s - i0).astype(np.float32)
            self.x0, self.x1, self.fx = table(self.nw, w)
            self.y0, self.y1, self.fy = table(self.nh, h)
        # The input tensor, padding filled once; only the image area is rewritten.
        self.tensor = np.full((1, 3, size, size), PAD / 255.0, dtype=np.float32)

    def __call__(self, rgb):
        if self.copy:
            img = rgb
        else:
            # The four neighbours of every output pixel gathered as uint8
            # (np.take: several times faster than fancy indexing), then
            # blended in float32.
            r0, r1 = rgb[self.y0], rgb[self.y1]
            a, b = (np.take(r0, x, axis=1).astype(np.float32) for x in (self.x0, self.x1))
            c, d = (np.take(r1, x, axis=1).astype(np.float32) for x in (self.x0, self.x1))
            fx = self.fx[None, :, None]
            top = a + (b - a) * fx
            img = top + (c + (d - c) * fx - top) * self.fy[:, None, None]
        area = self.tensor[0, :, self.top:self.top + self.nh, self.left:self.left + self.nw]
        np.multiply(img.transpose(2, 0, 1), np.float32(1 / 255.0), out=area, casting="unsafe")
        return self.tensor

    def to_source(self, boxes):
        sx, sy = self.w / self.nw, self.h / self.nh
        boxes[:, [0, 2]] = np.clip((boxes[:, [0, 2]] - self.left) * sx, 0, self.w)
        boxes[:, [1, 3]] = np.clip((boxes[:, [1, 3]] - self.top) * sy, 0, self.h)
        return boxes


def iou_one(box, boxes):
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def postprocess(out, lb, score_threshold, iou_threshold):
    """[1, 4 + C, N] -> (boxes [k, 4] source px, scores [k], classes [k]), best first."""
    pred = out[0]
    scores_all = pred[4:]
    cls = scores_all.argmax(axis=0)
    score = scores_all[cls, np.arange(pred.shape[1])]
    keep = score > score_threshold
    cx, cy, w, h = pred[:4, keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    score, cls = score[keep], cls[keep]
    order = np.argsort(-score, kind="stable")
    boxes, score, cls = boxes[order], score[order], cls[order]
    # Class-aware greedy NMS: offset each class's boxes far apart, then one pass.
    shifted = boxes + (cls.astype(np.float32) * 4096.0)[:, None]
    kept = []
    alive = np.ones(len(boxes), dtype=bool)
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        kept.append(i)
        if len(kept) == MAX_DET:
            break
        rest = np.nonzero(alive[i + 1:])[0] + i + 1
        alive[rest[iou_one(shifted[i], shifted[rest]) > iou_threshold]] = False
    kept = np.array(kept, dtype=np.intp)
    boxes = lb.to_source(boxes[kept].copy())
    good = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[good], score[kept][good], cls[kept][good]


class Kalman:
    """SORT's filter: state [cx, cy, s, r, vcx, vcy, vs], measurement [cx, cy, s, r]."""
    F = np.eye(7)
    F[0, 4] = F[1, 5] = F[2, 6] = 1.0
    H = np.eye(4, 7)
    R = np.diag([1.0, 1.0, 10.0, 10.0])
    Q = np.diag([1.0, 1.0, 1.0, 1.0, 0.01, 0.01, 0.0001])

    def __init__(self, z):
        self.x = np.zeros(7)
        self.x[:4] = z
        self.P = np.diag([10.0, 10.0, 10.0, 10.0, 1e4, 1e4, 1e4])

    def predict(self):
        if self.x[2] + self.x[6] <= 0:
            self.x[6] = 0.0
        self.x = self.F @ self.x
        self.P = self.F @ self.P @ self.F.T + self.Q
        return to_box(self.x)

    def update(self, z):
        y = z - self.H @ self.x
        S = self.H @ self.P @ self.H.T + self.R
        K = self.P @ self.H.T @ np.linalg.inv(S)
        self.x = self.x + K @ y
        self.P = (np.eye(7) - K @ self.H) @ self.P


def measure(b):
    w, h = b[2] - b[0], b[3] - b[1]
    return np.array([b[0] + w / 2, b[1] + h / 2, w * h, w / h])


def to_box(x):
    w = np.sqrt(max(x[2] * x[3], 0.0))
    h = x[2] / w if w > 0 else 0.0
    return np.array([x[0] - w / 2, x[1] - h / 2, x[0] + w / 2, x[1] + h / 2])


class Tracker:
    def __init__(self, max_age=15, min_hits=3, iou=0.3):
        self.max_age, self.min_hits, self.iou = max_age, min_hits, iou
        self.tracks = []  # dicts: kf, cls, hits, missed, id
        self.next_id = 0

    def update(self, boxes, cls):
        preds = np.array([t["kf"].predict() for t in self.tracks]).reshape(-1, 4)
        pairs = []
        for ti, p in enumerate(preds):
            if len(boxes):
                ious = iou_one(p, boxes)
                for di in np.nonzero((ious >= self.iou) & (cls == self.tracks[ti]["cls"]))[0]:
                    pairs.append((ious[di], ti, di))
        pairs.sort(key=lambda x: -x[0])
        t_used, d_track = set(), {}
        for _, ti, di in pairs:
            if ti not in t_used and di not in d_track:
                t_used.add(ti)
                d_track[di] = ti
        for ti, t in enumerate(self.tracks):
            if ti not in t_used:
                t["missed"] += 1
        confirmed = []
        for di, b in enumerate(boxes):
            if b[2] <= b[0] or b[3] <= b[1]:
                continue
            if di in d_track:
                t = self.tracks[d_track[di]]
                t["kf"].update(measure(b))
                t["hits"] += 1
                t["missed"] = 0
            else:
                t = {"kf": Kalman(measure(b)), "cls": cls[di], "hits": 1, "missed": 0, "id": self.next_id}
                self.next_id += 1
                self.tracks.append(t)
            if t["hits"] >= self.min_hits:
                confirmed.append(t["id"])
        self.tracks = [t for t in self.tracks if t["missed"] == 0
                       or (t["hits"] >= self.min_hits and t["missed"] <= self.max_age)]
        return confirmed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--score", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.45)
    ap.add_argument("--max-age", type=int, default=15)
    ap.add_argument("--min-hits", type=int, default=3)
    ap.add_argument("--track-iou", type=float, default=0.3)
    ap.add_argument("--keep", type=int, default=3, help="analysed frames whose detections are printed")
    a = ap.parse_args()

    w, h = probe_size(a.clip)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    lb = Letterbox(w, h, a.size)
    sess.run(None, {name: lb(np.full((h, w, 3), PAD, dtype=np.uint8))})  # warm-up, as vigil's side
    tracker = Tracker(a.max_age, max(a.min_hits, 1), a.track_iou)

    t = dict(decode=0.0, preprocess=0.0, inference=0.0, postprocess=0.0, tracking=0.0)
    frame_bytes = w * h * 3
    # Every frame of the clip is decoded (the bench cuts it to --frames).
    # Only the analysed frames come through the pipe, as rgb24; ffmpeg still
    # decodes every frame (later ones refer to them). Decoder threads = T.
    vf = [] if a.every == 1 else ["-vf", f"select=not(mod(n\\,{a.every}))", "-fps_mode", "passthrough"]
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    ff = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-nostdin", "-threads", str(a.threads), "-f", "h264", "-i", a.clip,
         *vf,
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        stdout=subprocess.PIPE, bufsize=0)
    buf = bytearray(frame_bytes)
    view = memoryview(buf)
    analysed, kept, tracked = 0, [], 0
    while True:
        t0 = time.perf_counter()
        got = 0
        while got < frame_bytes:
            n = ff.stdout.readinto(view[got:])
            if not n:
                break
            got += n
        if got < frame_bytes:
            break
        rgb = np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3)
        t1 = time.perf_counter()
        x = lb(rgb)
        t2 = time.perf_counter()
        out = sess.run(None, {name: x})[0]
        t3 = time.perf_counter()
        boxes, scores, cls = postprocess(out, lb, a.score, a.iou)
        t4 = time.perf_counter()
        tracked += len(tracker.update(boxes, cls))
        t5 = time.perf_counter()
        for k, v in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            t[k] += v
        if analysed < a.keep:
            kept.append([[int(c), float(s), *map(float, b)] for b, s, c in zip(boxes, scores, cls)])
        analysed += 1
    ff.wait()
    wall = time.perf_counter() - start
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    ruc = resource.getrusage(resource.RUSAGE_CHILDREN)  # ffmpeg (and ffprobe, ~tens of ms, before the clock)
    if ff.returncode != 0:
        sys.exit(f"ffmpeg exited with {ff.returncode}")
    cpu_self = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    print(json.dumps({
        "analysed": analysed,
        "wall_s": wall,
        "stages_s": t,
        "cpu_s": cpu_self,
        "cpu_children_s": ruc.ru_utime + ruc.ru_stime,
        "tracked": tracked,
        "detections": kept,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
    }))


if __name__ == "__main__":
    main()
