"""The distillation's data: every image under --data, its augmented views, and each teacher's feature of each view.

Views are decoded once, rendered at the teacher's and at the student's size (train.views) and run through every
teacher once; the result is cached as the run folder's `views.npz`, so that --resume never runs a teacher again.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HELD_OUT_SPLITS = {"val", "validation", "test", "testing"}


def list_images(folders: list[str]) -> list[Path]:
    """Every image under the folders, sorted. A folder that is itself a val/test split is refused; a dataset
    root is taken whole (its val images are then distilled on: fine for extra data such as grocery-other,
    never for the dataset the model is judged on), and the count of such images is printed."""
    from model.images import scan_folder

    paths = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise FileNotFoundError(f"data folder not found: {folder}")
        if folder.resolve().name.lower() in HELD_OUT_SPLITS:
            raise ValueError(f"{folder} is a val/test split: distil on training images only, so the "
                             "evaluation images stay unseen")
        scan = scan_folder(folder, recursive=True)  # the batch path's listing: hidden files are skipped
        held_out = [f for f in scan.images
                    if HELD_OUT_SPLITS & {p.lower() for p in f.relative_to(scan.folder).parts[:-1]}]
        if held_out:
            print(f"note: {len(held_out)} images under {folder} sit in val/test folders and are used as "
                  "unlabelled distillation data")
        paths += scan.images
    if not paths:
        raise ValueError(f"no images found under {', '.join(folders)}")
    return paths


def build_views(paths: list[Path], teachers: list, args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from model.images import load_images
    from train.views import ViewPolicy, render_batch, sample_specs

    sources = load_images(paths, args.source_size)
    kept = [i for i, s in enumerate(sources) if not isinstance(s, Exception)]
    for i in sorted(set(range(len(paths))) - set(kept)):
        print(f"skipping {paths[i]}: {sources[i]}")
    sources = np.stack([sources[i] for i in kept])
    rng = np.random.default_rng(args.seed)
    specs = sample_specs(len(sources), args.views, ViewPolicy(min_area=args.min_area), rng)
    image_index = np.repeat(np.arange(len(sources)), args.views)
    student = np.empty((len(specs), args.input_size, args.input_size, 3), np.uint8)
    targets = [np.empty((len(specs), t.dim), np.float32) for t in teachers]
    seconds = np.zeros(len(teachers))
    for start in tqdm(range(0, len(specs), 64), desc="teacher targets", unit="batch"):
        sl = slice(start, start + 64)
        student[sl] = render_batch(sources, image_index[sl], specs[sl], args.input_size)
        seen_at = {}  # teachers of one input size see one rendering
        for k, teacher in enumerate(teachers):
            if teacher.input_size not in seen_at:
                seen_at[teacher.input_size] = render_batch(sources, image_index[sl], specs[sl], teacher.input_size)
            seen = seen_at[teacher.input_size]
            t0 = time.perf_counter()
            targets[k][sl] = teacher.features(seen)
            seconds[k] += time.perf_counter() - t0
    # Standardized per dimension, so that no few high-variance channels dominate the cosine.
    stats = [(t.mean(0), t.std(0) + 1e-6) for t in targets]
    y = np.concatenate([(t - m) / s for t, (m, s) in zip(targets, stats, strict=True)], axis=1)
    return dict(student=student, targets=y.astype(np.float16), specs=specs, image_index=image_index,
                target_mean=np.concatenate([m for m, _ in stats]), target_std=np.concatenate([s for _, s in stats]),
                paths=np.asarray([str(paths[i]) for i in kept]), teacher_seconds=seconds,
                teacher_sha256=np.asarray([t.sha256 for t in teachers]))


def load_or_build_views(run: Path, paths: list[Path], teachers: list, args: argparse.Namespace) -> dict:
    cache = run / "views.npz"
    if cache.exists():
        views = dict(np.load(cache))
        if list(views["teacher_sha256"]) != [t.sha256 for t in teachers] or \
                views["student"].shape[1] != args.input_size:
            sys.exit(f"{cache} was made with other teachers or another input size: use a new --out")
        return views
    views = build_views(paths, teachers, args)
    np.savez(run / "views.tmp.npz", **views)
    os.replace(run / "views.tmp.npz", cache)  # a killed run never leaves half a cache behind
    return views


def teachers_and_views(run: Path, args: argparse.Namespace) -> tuple[list, dict]:
    """The teachers (--teacher) and the cached views of every image under --data with the teachers' features."""
    from train.teachers import load_teacher

    teachers = [load_teacher(t, args.threads) for t in args.teacher]
    paths = list_images(args.data)
    print(f"{len(paths)} images, {args.views} views each; teachers: "
          + ", ".join(f"{t.name} ({t.dim}-d)" for t in teachers))
    return teachers, load_or_build_views(run, paths, teachers, args)
