"""The results JSON of the experiments, rewritten after every step."""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import threading


def log(msg: str) -> None:
    print(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {msg}", flush=True)


class Store:
    """The results JSON, rewritten atomically after every step.

    Safe for several threads and several runner processes at once: every
    write takes a lock file (``PATH.lock``, never committed), reads what the
    others stored, lays this process's sections over it and replaces the
    file."""

    def __init__(self, path: str):
        self.path = path
        self.d = json.load(open(path, encoding="utf-8")) if os.path.exists(path) else {}
        self._lock = threading.RLock()

    def get(self, section: str, key: str):
        return self.d.get(section, {}).get(key)

    def put(self, section: str, key: str, value) -> None:
        with self._lock:
            self.d.setdefault(section, {})[key] = value
            self.save(touched={(section, key)})

    def drop(self, section: str, key: str) -> None:
        with self._lock:
            if self.d.get(section, {}).pop(key, None) is not None:
                self.save(dropped={(section, key)})

    def save(self, touched=(), dropped=(), sections=()) -> None:
        """Write the JSON: the file's keys, with this process's keys that the
        file lacks, the (section, key) pairs in ``touched`` and every key of
        the ``sections`` laid over them."""
        with self._lock:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path + ".lock", "w") as lk:
                fcntl.flock(lk, fcntl.LOCK_EX)
                disk = json.load(open(self.path, encoding="utf-8")) if os.path.exists(self.path) else {}
                self._merge(disk, touched, dropped, sections)
                tmp = self.path + ".tmp"
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(disk, f, ensure_ascii=False, indent=1)
                    f.write("\n")
                os.replace(tmp, self.path)
                for section, v in disk.items():  # in place: callers may hold a section's dict
                    cur = self.d.get(section)
                    if isinstance(cur, dict) and isinstance(v, dict):
                        cur.clear()
                        cur.update(v)
                    else:
                        self.d[section] = v

    def _merge(self, disk: dict, touched, dropped, sections) -> None:
        for section, keys in self.d.items():
            sec = disk.setdefault(section, {})
            if not isinstance(keys, dict) or not isinstance(sec, dict):
                disk[section] = keys
                continue
            for k, v in keys.items():
                if section in sections or (section, k) in touched or k not in sec:
                    sec[k] = v
        for section, k in dropped:
            disk.get(section, {}).pop(k, None)


def attempt(store: Store, key: str, fn):
    """Run one step; on failure log it, record it under ``failed`` and return
    None so the other steps still run; on success clear an old failure."""
    try:
        out = fn()
    except (RuntimeError, OSError, ValueError, KeyError, ImportError) as e:
        log(f"  {key} failed: {e}")
        store.put("failed", key, str(e))
        return None
    store.drop("failed", key)
    return out
