"""Frigate's motion method in Python/OpenCV: the baseline of `vigil-bench motion`.

Reads FRAMES grey frames of WIDTH x HEIGHT from a raw file and runs, per
frame, what Frigate's motion detector does: resize to the working size
(INTER_LINEAR), Gaussian blur, absdiff against a running average
(accumulateWeighted), threshold, dilate, contours, keep contours of a least
area. The frames are read into memory first; only the per-frame loop is
timed, ROUNDS times over the frames. Prints one JSON line:
{"ms_per_frame": ..., "moving_frames": ...}.

usage: bench_motion.py RAW WIDTH HEIGHT FRAMES WORK_W WORK_H ROUNDS
"""

import json
import sys
import time

import cv2
import numpy as np


def main() -> None:
    raw, width, height, frames, work_w, work_h, rounds = sys.argv[1:8]
    width, height, frames = int(width), int(height), int(frames)
    size = (int(work_w), int(work_h))
    rounds = int(rounds)
    data = np.fromfile(raw, dtype=np.uint8, count=width * height * frames)
    images = data.reshape(frames, height, width)
    threshold, alpha = 25, 0.05
    min_area = 0.002 * size[0] * size[1]
    kernel = np.ones((3, 3), np.uint8)
    cv2.setNumThreads(1)
    moving = 0
    start = time.perf_counter()
    for _ in range(rounds):
        average = None
        for image in images:
            small = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            small = cv2.GaussianBlur(small, (3, 3), 0)
            if average is None:
                average = small.astype(np.float32)
                continue
            delta = cv2.absdiff(small, cv2.convertScaleAbs(average))
            cv2.accumulateWeighted(small, average, alpha)
            moved = cv2.threshold(delta, threshold, 255, cv2.THRESH_BINARY)[1]
            moved = cv2.dilate(moved, kernel, iterations=1)
            contours, _ = cv2.findContours(moved, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            if any(cv2.contourArea(c) >= min_area for c in contours):
                moving += 1
    elapsed = time.perf_counter() - start
    print(json.dumps({"ms_per_frame": elapsed * 1000 / (rounds * frames), "moving_frames": moving // rounds}))


if __name__ == "__main__":
    main()
