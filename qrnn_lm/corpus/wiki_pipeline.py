"""Wikipedia extraction in worker processes: one pass over the dump.

The main process cuts the dump into tasks -- batches of articles read from
a plain dump, or streams of a multistream dump (which the workers read and
decompress themselves) -- and keeps at most a few tasks per worker in
flight.  A worker renders each article's wikitext to normalised prose and,
when a tokenizer is given, tokenizes the lines of the train split too, so
``prepare`` needs no second pass over the text.  Results are taken in task
order, so the output is the same for any number of workers.
"""
from __future__ import annotations

import collections
import itertools
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass

from ..errors import QrnnLmError
from ..tokenizers import TokenChunk, _stop_pool_now, _tokenize_chunk, tokenizer_from_dict
from .textio import SplitWriter, TextNormalizer, split_of
from .wiki_markup import _WikiRenderer
from .wiki_read import (DROP_NAMESPACE_KEYS, DumpReader, header_namespaces, in_main_namespace,
                        iter_pages, iter_streams, read_stream, stream_pages)

#: a task of a plain dump: this many articles, or this many characters of wikitext
TASK_PAGES, TASK_CHARS = 64, 1 << 18
#: tasks in flight per worker
READ_AHEAD = 2


@dataclass
class WikiJob:
    """What every worker needs (picklable)."""
    path: str
    drop_namespaces: tuple
    valid_fraction: float
    test_fraction: float
    normalizer: dict                  # TextNormalizer.to_dict() of the extracted prose
    tokenizer: dict | None = None     # to_dict() of the train split's tokenizer
    token_normalizer: dict | None = None


@dataclass
class Task:
    """Articles as (title, wikitext), or a stream (offset, length) of a
    multistream dump with the page ids to take from it (None: every article)."""
    pages: list | None = None
    offset: int = 0
    length: int | None = None
    wanted: frozenset | None = None


@dataclass
class Done:
    """A task's result: (split, lines) per article with text, in order."""
    articles: list
    failed: int
    chunk: TokenChunk | None
    xml_bytes: int
    end: int


class Worker:
    """Renders (and tokenizes) tasks; one per worker process."""

    def __init__(self, job: WikiJob, tokenizer=None):
        self.job = job
        self.renderer = _WikiRenderer(job.drop_namespaces)
        self.normalizer = TextNormalizer.from_dict(job.normalizer)
        self.tok = tokenizer
        if self.tok is None and job.tokenizer is not None:
            self.tok = tokenizer_from_dict(job.tokenizer)
        self.tok_norm = TextNormalizer.from_dict(job.token_normalizer or {})

    def _pages(self, task: Task) -> tuple[list, int]:
        if task.pages is not None:
            return task.pages, 0
        data = read_stream(self.job.path, task.offset, task.length)
        pages = [(p.title, p.text) for p in stream_pages(data, self.job.path, task.offset)
                 if p.is_article and (task.wanted is None or p.id in task.wanted)]
        return pages, len(data)

    def run(self, task: Task) -> Done:
        pages, xml_bytes = self._pages(task)
        job, articles, train, failed = self.job, [], [], 0
        for title, text in pages:
            try:
                lines = list(self.normalizer.lines(self.renderer.lines(text)))
            except (QrnnLmError, KeyboardInterrupt):
                raise
            except Exception:  # a page mwparserfromhell cannot parse: skip it, count it
                failed += 1
                continue
            if lines:
                split = split_of(title, job.valid_fraction, job.test_fraction)
                articles.append((split, lines))
                if split == "train" and self.tok is not None:
                    train.extend(self.tok_norm.lines(lines))
        chunk = _tokenize_chunk(train, self.tok) if train else None
        return Done(articles, failed, chunk, xml_bytes, task.offset + (task.length or 0))


_WORKER: Worker | None = None


def _init_worker(job: WikiJob) -> None:
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent stops the pool on Ctrl-C
    _WORKER = Worker(job)


def _run_task(task: Task) -> Done:
    return _WORKER.run(task)


def run_tasks(tasks, job: WikiJob, workers: int, tokenizer=None):
    """Yield the :class:`Done` of every task, in task order; ``workers``
    processes (1: in this process) with a bounded read-ahead."""
    if workers <= 1:
        worker = Worker(job, tokenizer)
        for task in tasks:
            yield worker.run(task)
        return
    ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    pool = ctx.Pool(workers, initializer=_init_worker, initargs=(job,))
    try:
        # not pool.imap: it drains the task iterator (the whole dump) as fast as it can
        pending = collections.deque()
        for task in tasks:
            pending.append(pool.apply_async(_run_task, (task,)))
            if len(pending) >= READ_AHEAD * workers + 1:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
    except BaseException:   # Ctrl-C, a damaged dump, the consumer stopping
        _stop_pool_now(pool)
        raise
    pool.close()
    pool.join()


class Progress:
    """Log lines every ``every`` seconds: articles/s, MB/s of XML, ETA."""

    def __init__(self, log, fraction, every: float = 10.0):
        self.log, self.fraction, self.every = log, fraction, every
        self.t0 = self.last = time.time()
        self.articles = self.xml_bytes = 0

    def update(self, articles: int, xml_bytes: int) -> None:
        self.articles += articles
        self.xml_bytes += xml_bytes
        now = time.time()
        if self.log is None or now - self.last < self.every:
            return
        self.last, dt, frac = now, max(now - self.t0, 1e-9), self.fraction()
        eta = ""
        if frac > 0:
            left = int(dt * (1 - frac) / frac)
            eta = f", ETA {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"
        self.log(f"wikipedia: {self.articles} articles, {self.articles / dt:.0f} articles/s, "
                 f"{self.xml_bytes / 1e6 / dt:.2f} MB/s of XML, {100 * frac:.1f}% of the dump "
                 f"read{eta}")


def _plain_tasks(reader: DumpReader, sample: int, namespaces: dict):
    batch, chars, index = [], 0, 0
    for page in iter_pages(reader, namespaces):
        if not page.is_article:
            continue
        if index % sample == 0:
            batch.append((page.title, page.text))
            chars += len(page.text)
            if len(batch) >= TASK_PAGES or chars >= TASK_CHARS:
                yield Task(pages=batch)
                batch, chars = [], 0
        index += 1
    if batch:
        yield Task(pages=batch)


def _stream_tasks(streams, sample: int, prefixes: set, counts: dict):
    """Tasks of the streams that hold sampled pages: every ``sample``-th
    page of the main namespace in index order (redirects among them are
    counted, then skipped when read)."""
    k = 0
    for st in streams:
        wanted = None
        if sample > 1:
            wanted = []
            for pid, title in st.entries:
                if in_main_namespace(title, prefixes):
                    if k % sample == 0:
                        wanted.append(pid)
                    k += 1
            if not wanted:
                continue
            wanted = frozenset(wanted)
        counts["streams"] += 1
        yield Task(offset=st.offset, length=st.length, wanted=wanted)


@dataclass
class Tokens:
    """Tokenize the train split during extraction: each task's TokenChunk
    goes to ``consume`` in order."""
    tokenizer: object
    normalizer: TextNormalizer
    consume: object


def extract(path: str, out_dir: str, *, sample: int, index: str | None, workers: int,
            fractions: tuple, normalizer: TextNormalizer, tokens: Tokens | None = None,
            log=None, progress: bool = False) -> tuple[dict, SplitWriter, dict]:
    """Extract the dump into ``out_dir/{split}.txt``; returns (paths, the
    writer, counts: articles, chars, unparsable, streams)."""
    counts = dict(articles=0, chars=0, unparsable=0, streams=0)
    reader, results, meter_end = None, None, [0]
    if index is not None:
        streams = iter_streams(index, os.path.getsize(path))
        first = next(streams)
        namespaces = header_namespaces(path, first.offset)
        tasks = _stream_tasks(itertools.chain([first], streams), sample,
                              {v for k, v in namespaces.items() if k != "0" and v}, counts)
        size = max(1, os.path.getsize(path))
        meter = Progress(log if progress else None, lambda: meter_end[0] / size)
    else:
        namespaces = {}
        reader = DumpReader(path)
        tasks = _plain_tasks(reader, sample, namespaces)
        meter = Progress(log if progress else None, reader.fraction)
    w = SplitWriter(out_dir)
    try:
        first_task = next(tasks, None)   # the namespaces are known from here on
        job = WikiJob(path, tuple(namespaces[k] for k in DROP_NAMESPACE_KEYS if k in namespaces),
                      fractions[0], fractions[1], normalizer.to_dict(),
                      tokens.tokenizer.to_dict() if tokens else None,
                      tokens.normalizer.to_dict() if tokens else None)
        tasks = itertools.chain([first_task] if first_task else [], tasks)
        results = run_tasks(tasks, job, workers, tokens.tokenizer if tokens else None)
        for done in results:
            for split, lines in done.articles:
                w.write(split, lines)
                counts["chars"] += sum(len(x) + 1 for x in lines)
            counts["articles"] += len(done.articles)
            counts["unparsable"] += done.failed
            if done.chunk is not None:
                tokens.consume(done.chunk)
            meter_end[0] = done.end
            meter.update(len(done.articles),
                         done.xml_bytes if reader is None else reader.xml_bytes - meter.xml_bytes)
    finally:
        if results is not None:
            results.close()   # stops the workers now if this loop failed
        paths = w.close()
        if reader is not None:
            reader.close()
    return paths, w, counts
