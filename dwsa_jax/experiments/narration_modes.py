"""Tasks re-narrated from subtitles in each narration mode, for the narration ablation.

For mode m, every video of a task with a subtitle file <subtitles>/<task>/<vid>.srt (or .vtt)
is narrated by `dwsa_jax.narration` in mode m, its kept phrases embedded with the given text
encoder and written, with a link to the task's video features, under
<out>/narration/<m>/<task>/ in the released layout. `data.load_task` reads it back with
concreteness threshold 0, because the mode has already filtered the phrases. Videos without a
subtitle file keep no phrases and are localized but not trained on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dwsa_jax import data

logger = logging.getLogger(__name__)


class NarrationTasks:
    """Callable (task, mode) -> the task with phrases from that mode, cached on disk and in memory.

    Attributes:
      processed_dir: the processed folder the tasks were loaded from (for video features).
      data_dir: the annotation folder.
      subtitles_dir: folder with one subfolder of subtitle files per task.
      embedder_name: text encoder spec for `dwsa_jax.narration.load_embedder`.
      out_dir: where the re-narrated layouts are written.
    """

    def __init__(self, processed_dir, data_dir, subtitles_dir, embedder_name, out_dir):
        self.processed_dir = Path(processed_dir)
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.subtitles_dir = Path(subtitles_dir)
        self.embedder_name = embedder_name
        self.out_dir = Path(out_dir)
        self._nlp = None
        self._embedder = None
        self._tasks: dict[tuple[str, str], data.Task] = {}

    def _tools(self):
        from dwsa_jax.narration import load_embedder, load_spacy

        if self._nlp is None:
            self._nlp = load_spacy()
            self._embedder = load_embedder(self.embedder_name)
        return self._nlp, self._embedder

    def __call__(self, task: data.Task, mode: str) -> data.Task:
        key = (task.name, mode)
        if key not in self._tasks:
            self._tasks[key] = self._build(task, mode)
        return self._tasks[key]

    def _build(self, task: data.Task, mode: str) -> data.Task:
        from dwsa_jax.narration import (NarrationConfig, narrate_file, write_narration,
                                        write_vocabulary)
        from dwsa_jax.narration.subtitles import SUBTITLE_SUFFIXES

        root = self.out_dir / "narration" / mode
        task_dir = root / task.name
        done_marker = task_dir / ".complete"
        if not done_marker.is_file():
            nlp, embedder = self._tools()
            config = NarrationConfig(mode=mode)
            task_dir.mkdir(parents=True, exist_ok=True)
            link = task_dir / data.VIDEO_DIR
            if not link.exists():
                os.symlink((self.processed_dir / task.name / data.VIDEO_DIR).absolute(), link)
            narrations = []
            for video in task.videos:
                files = [self.subtitles_dir / task.name / f"{video.vid}{suffix}"
                         for suffix in SUBTITLE_SUFFIXES]
                found = [f for f in files if f.is_file()]
                if not found:
                    logger.warning("video %s has no subtitle file in %s; it gets no phrases",
                                   video.vid, self.subtitles_dir / task.name)
                    continue
                narration = narrate_file(found[0], nlp, config)
                write_narration(task_dir, narration, embedder)
                narrations.append(narration)
            write_vocabulary(task_dir, narrations)
            done_marker.write_text("")
        return data.load_task(root, task.name, data_dir=self.data_dir, concreteness_threshold=0.0)
