"""Gemini quotas on the free tier: a plan printed before the first call, and a daily usage ledger.

Free-tier limits are per Google Cloud project and per model: about 10 requests a minute and, since
the December 2025 cut, somewhere between 20 and 500 requests a day depending on the model and the
month (Flash-Lite higher), reset at midnight Pacific time. ``helpers.config`` holds the limits this
project *assumes* (``FREE_TIER_REQUESTS_PER_MINUTE``, ``FREE_TIER_REQUESTS_PER_DAY``); they are not
read from your account: check https://aistudio.google.com/rate-limit and set the config fields.

* ``quota_plan(...)`` turns the calls a run needs (after what the cache already holds) and the limits
  into minutes today and the number of days, and says which fields change the limits. The teacher
  build and the Gemini judge print it before any call.
* ``UsageLedger`` counts the requests sent per Pacific day and model in a small JSON file (default
  ``<output root>/gemini_usage.json``, shared by notebooks 01 and 03 like the real quota), so the
  client stops at the day's budget even across reruns and restarts of the runtime.

This module imports nothing heavy and nothing from ``helpers`` but the config.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from helpers.config import output_root

__all__ = [
    "RATE_LIMIT_PAGE",
    "QuotaPlan",
    "UsageLedger",
    "default_usage_path",
    "pacific_day",
    "quota_plan",
    "rerun_hint",
    "until_pacific_midnight",
]

RATE_LIMIT_PAGE = "https://aistudio.google.com/rate-limit"
PACIFIC = "America/Los_Angeles"


def _pacific_now() -> _dt.datetime:
    try:
        from zoneinfo import ZoneInfo

        return _dt.datetime.now(ZoneInfo(PACIFIC))
    except Exception:  # noqa: BLE001 - no tz database: Pacific standard time is close enough
        return _dt.datetime.now(_dt.timezone(_dt.timedelta(hours=-8)))


def pacific_day() -> str:
    """Today's date in Pacific time (``YYYY-MM-DD``): the day Google's daily quotas count in.

    Tests replace this function (``monkeypatch.setattr(helpers.quota, "pacific_day", ...)``) to move
    the client to the next day together with the fake server.
    """
    return _pacific_now().date().isoformat()


def until_pacific_midnight() -> str:
    """Time left until the daily quotas reset, e.g. ``"7h 12m"``."""
    now = _pacific_now()
    midnight = _dt.datetime.combine(now.date() + _dt.timedelta(days=1), _dt.time(), tzinfo=now.tzinfo)
    minutes = max(1, int((midnight - now).total_seconds() // 60))
    return f"{minutes // 60}h {minutes % 60:02d}m"


def rerun_hint() -> str:
    """The one sentence every daily stop ends with."""
    return (f"rerun after midnight Pacific time (in about {until_pacific_midnight()}): finished calls are "
            f"cached, so the rerun repeats none of them")


def default_usage_path() -> Path:
    """``<output root>/gemini_usage.json`` (mount Drive as the output root on Colab to keep it)."""
    return output_root() / "gemini_usage.json"


class UsageLedger:
    """Requests sent per Pacific day and model, in a JSON file rewritten atomically on every change.

    ``{"day": "2026-11-20", "models": {"gemini-3.5-flash": {"requests": 17, "exhausted": false}}}``:
    only today's counts are kept; a new Pacific day starts from zero.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_usage_path()
        self._lock = threading.Lock()

    def _read(self) -> dict[str, Any]:
        today = pacific_day()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict) or data.get("day") != today or not isinstance(data.get("models"), dict):
            data = {"day": today, "models": {}}
        return data

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    @staticmethod
    def _entry(data: dict[str, Any], model: str) -> dict[str, Any]:
        return data["models"].setdefault(model, {"requests": 0, "exhausted": False})

    def used(self, model: str) -> int:
        """Requests counted today for ``model``."""
        with self._lock:
            return int(self._read()["models"].get(model, {}).get("requests", 0))

    def exhausted(self, model: str) -> bool:
        """True when the API itself answered today that the daily quota of ``model`` is spent."""
        with self._lock:
            return bool(self._read()["models"].get(model, {}).get("exhausted", False))

    def left(self, model: str, budget: int) -> int:
        """Requests still allowed today under ``budget`` (0 once the API said the quota is spent)."""
        with self._lock:
            entry = self._read()["models"].get(model, {})
        return 0 if entry.get("exhausted") else max(0, budget - int(entry.get("requests", 0)))

    def try_reserve(self, model: str, budget: int) -> bool:
        """Count one request if today's ``budget`` allows it; False (nothing counted) otherwise."""
        with self._lock:
            data = self._read()
            entry = self._entry(data, model)
            if entry["exhausted"] or entry["requests"] >= budget:
                return False
            entry["requests"] += 1
            self._write(data)
            return True

    def add(self, model: str, n: int = 1) -> None:
        """Count ``n`` more requests (the SDK's retries of a call also reach Google)."""
        with self._lock:
            data = self._read()
            self._entry(data, model)["requests"] += n
            self._write(data)

    def mark_exhausted(self, model: str) -> None:
        """The API said 429 per-day: no request of ``model`` can succeed until midnight Pacific."""
        with self._lock:
            data = self._read()
            self._entry(data, model)["exhausted"] = True
            self._write(data)


@dataclass
class QuotaPlan:
    """How a run's Gemini calls fit the limits. See ``quota_plan`` for the arithmetic."""

    what: str
    model: str
    total: int  # distinct prompts the run needs answered
    cached: int  # of those, already on disk (0 calls)
    calls_needed: int  # total - cached
    requests_per_minute: int
    requests_per_day: int
    used_today: int  # requests already counted today for this model (ledger)
    left_today: int  # requests_per_day - used_today (0 after a per-day 429 today)
    calls_today: int  # min(calls_needed, left_today)
    minutes_today: float  # calls_today / requests_per_minute (a lower bound: the limiter's pace)
    days: int  # Pacific days until done, today counted as day 1 (0 when nothing is needed)
    limit_fields: str = ""  # which config fields set the limits
    fewer_calls: str = ""  # which config field makes the run smaller
    day: str = ""

    @property
    def fits_today(self) -> bool:
        """True when every needed call fits today's remaining budget."""
        return self.calls_needed <= self.left_today

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers for reports."""
        return asdict(self)

    def text(self) -> str:
        """The printed plan."""
        lines = [f"Gemini quota plan: {self.what} ({self.model})",
                 f"  calls needed: {self.calls_needed} of {self.total} ({self.cached} already cached, "
                 f"never sent again)",
                 f"  limits assumed: {self.requests_per_minute} requests/minute, {self.requests_per_day} "
                 f"requests/day per model (free-tier guesses, not read from your account: check "
                 f"{RATE_LIMIT_PAGE}); daily quotas reset at midnight Pacific",
                 f"  used today ({self.day} Pacific): {self.used_today} requests, {self.left_today} left"]
        if self.calls_needed == 0:
            lines.append("  nothing to send: every answer is in the cache")
        else:
            later = self.calls_needed - self.calls_today
            lines.append(f"  today: {self.calls_today} calls, at least {self.minutes_today:.1f} minutes"
                         + (f"; {later} left for later days" if later else ""))
            if self.days == 1:
                lines.append("  days: 1 (finishes today)")
            else:
                lines.append(f"  days: {self.days} (today is day 1): the run stops cleanly when the day's "
                             f"budget is spent; rerun the same cell after each midnight Pacific to continue")
        if self.limit_fields:
            lines.append(f"  change the limits: {self.limit_fields}" + (f"; fewer calls: {self.fewer_calls}"
                                                                        if self.fewer_calls else ""))
        lines.append("  paid key: set the limits of your tier; for big builds the Gemini Batch API (issue #17) "
                     "is the cheaper option")
        return "\n".join(lines)

    def print(self) -> QuotaPlan:
        """Print the plan (returns itself, for one-line notebook use)."""
        print(self.text(), flush=True)
        return self


def quota_plan(what: str, model: str, total: int, cached: int, *, requests_per_minute: int,
               requests_per_day: int, ledger: UsageLedger | None = None, used_today: int | None = None,
               limit_fields: str = "", fewer_calls: str = "") -> QuotaPlan:
    """How ``total - cached`` calls fit ``requests_per_minute`` and ``requests_per_day``.

    Arithmetic (all integers but the minutes)::

        calls_needed = total - cached
        left_today   = max(0, requests_per_day - used_today)      (0 after a per-day 429 today)
        calls_today  = min(calls_needed, left_today)
        minutes      = calls_today / requests_per_minute
        days         = 0 if calls_needed == 0 else 1 + ceil((calls_needed - calls_today) / requests_per_day)

    Args:
        what: the run, e.g. "teacher build (notebook 01)".
        ledger: today's usage (default: none counted); ``used_today`` overrides it.
        limit_fields / fewer_calls: the config fields to name in the printed plan.
    """
    if requests_per_minute <= 0 or requests_per_day <= 0:
        raise ValueError(f"quota_plan: limits must be > 0, got {requests_per_minute}/min, {requests_per_day}/day")
    if not 0 <= cached <= total:
        raise ValueError(f"quota_plan: cached ({cached}) must be between 0 and total ({total})")
    exhausted = bool(ledger is not None and ledger.exhausted(model))
    if used_today is None:
        used_today = ledger.used(model) if ledger is not None else 0
    needed = total - cached
    left = 0 if exhausted else max(0, requests_per_day - used_today)
    today = min(needed, left)
    days = 0 if needed == 0 else 1 + math.ceil((needed - today) / requests_per_day)
    return QuotaPlan(what=what, model=model, total=total, cached=cached, calls_needed=needed,
                     requests_per_minute=requests_per_minute, requests_per_day=requests_per_day,
                     used_today=used_today, left_today=left, calls_today=today,
                     minutes_today=round(today / requests_per_minute, 1), days=days,
                     limit_fields=limit_fields, fewer_calls=fewer_calls, day=pacific_day())
