"""When a spoken reminder is due: "at nine every morning", "in ten minutes", "tomorrow at 3".

The phrase matcher recognises the request ("remind me to {request}", "set a
timer for {duration}"); this module splits the request's words into what to be
reminded of and when, in Warren's time zone. No English time-expression library
on PyPI is both maintained and small (dateparser parses dates, not "every
morning"; ctparse and recurrent are unmaintained), so this is careful code for the
phrasings people actually use, with tests. Recurrence is an RFC 5545 rule for
python-dateutil's rrule, applied to local wall-clock times and then placed in his
zone with zoneinfo, so "nine every morning" stays at nine across daylight-saving
changes.

What it cannot place, it says so in a sentence Nabu can speak; it never guesses
a time Warren did not say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, tzinfo

from dateutil.rrule import rrulestr

_UNITS = {
    "zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
    "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
    "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60}
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_RRULE_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_UNIT_S = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_PART_OF_DAY = {"morning": "am", "afternoon": "pm", "evening": "pm", "night": "pm"}
# "every morning" with no hour: the usual times, read back so he can correct them.
_DEFAULT_HOUR = {"morning": 8, "afternoon": 14, "evening": 18, "night": 21}

NEED_TIME = (
    "When should I remind you? Say it with the time, for example: "
    "remind me to take my pills at nine every morning."
)
NEED_DURATION = "How long should the timer be? For example: set a timer for ten minutes."


class ReminderTimeError(ValueError):
    """The request names no time Nabu can place; the message is spoken to Warren."""


@dataclass(frozen=True)
class ReminderPlan:
    """A reminder as understood, before Warren confirms it."""

    task: str
    """What to remind him of, in Nabu's words ("take your pills"); empty for a timer."""
    first_due: datetime
    """The first time it is due (aware, in his zone)."""
    rule: str = ""
    """RFC 5545 recurrence ("FREQ=DAILY"), empty for once."""
    kind: str = "reminder"
    """reminder or timer."""
    duration_s: float = 0.0
    """A timer's length."""
    relative_s: float | None = None
    """"In ten minutes": counted from when he says yes, not from the question."""

    def confirmed_at(self, now: datetime) -> ReminderPlan:
        """The plan as saved at `now`: a timer or an "in ten minutes" starts from the yes."""
        if self.relative_s is None:
            return self
        due = (now + timedelta(seconds=self.relative_s)).replace(microsecond=0)
        return replace(self, first_due=due)

    @property
    def dtstart_local(self) -> str:
        """The wall-clock start the rule counts from (naive ISO), for storage."""
        return self.first_due.replace(tzinfo=None).isoformat(timespec="seconds")


def words_to_digits(text: str) -> str:
    """ "twenty five" -> "25", "nine" -> "9" (number words Whisper sometimes writes out)."""

    def tens(m: re.Match) -> str:
        value = _TENS[m.group(1)]
        return str(value + (_UNITS[m.group(2)] if m.group(2) else 0))

    units = "|".join(k for k in _UNITS if k != "oh")
    text = re.sub(rf"\b({'|'.join(_TENS)})(?:[ -]({units}))?\b", tens, text)
    text = re.sub(rf"\b({units})\b", lambda m: str(_UNITS[m.group(1)]), text)
    # "nine oh five" -> "9 05"
    return re.sub(r"\b(\d{1,2}) oh (\d)\b", r"\1 0\2", text)


def _clean(text: str) -> str:
    text = text.lower().replace("’", "'")
    text = re.sub(r"\b([ap])\.\s?m\.?", r"\1m", text)  # a.m. / p.m. -> am / pm
    text = re.sub(r"[^\w:'\s-]|(?<!\d)[.](?!\d)", " ", text)
    text = re.sub(r"(\d)\.(\d\d)\b", r"\1:\2", text)  # Whisper's "9.30"
    text = words_to_digits(text)
    text = re.sub(r"\bhalf an? hour\b", "30 minute", text)
    text = re.sub(r"\b(?:a )?quarter of an hour\b", "15 minute", text)
    text = re.sub(r"\ban? (hour|minute|second|day)\b", r"1 \1", text)
    text = re.sub(r"\b(\d+) ?(?:mins?)\b", r"\1 minute", text)
    text = re.sub(r"\b(\d+) ?(?:hrs?)\b", r"\1 hour", text)
    text = re.sub(r"\b(\d+) ?(?:secs?)\b", r"\1 second", text)
    return re.sub(r"\s+", " ", text).strip()


def parse_duration(text: str) -> float | None:
    """Seconds in "10 minutes", "an hour and a half", "1 hour 20 minutes"; None if none."""
    t = _clean(text)
    total = 0.0
    found = False
    for m in re.finditer(r"(\d+(?:\.\d+)?) (?:and a half )?(second|minute|hour|day)s?", t):
        value = float(m.group(1))
        if "and a half" in m.group(0):
            value += 0.5
        total += value * _UNIT_S[m.group(2)]
        found = True
    if re.search(r"\b(hour|minute)s? and a half\b", t) and found and "and a half " not in t:
        unit = re.search(r"\b(hour|minute)s? and a half\b", t).group(1)
        total += 0.5 * _UNIT_S[unit]
    return total if found and total > 0 else None


@dataclass
class _Found:
    hour: int | None = None
    minute: int = 0
    meridiem: str = ""
    part_of_day: str = ""
    day_offset: int | None = None
    weekday: int | None = None
    rule: str = ""
    relative_s: float | None = None


_TIME_PATTERNS = (
    # at half past 10 / quarter past 9 / quarter to 9
    (r"\b(?:at )?(half|quarter|\d{1,2}) (?:minutes? )?(past|after|to) (\d{1,2})\b", "fraction"),
    # at 9:30 pm / at 9 30 / at 9 o'clock / at 9
    (r"\bat (\d{1,2})(?::| )?(\d{2})? ?(am|pm|o'clock|oclock)?\b", "at"),
    # 9:30 / 9 pm / 9 o'clock without "at"
    (r"\b(\d{1,2})(?::(\d{2}))? ?(am|pm|o'clock|oclock)\b", "bare"),
    (r"\b(\d{1,2}):(\d{2})\b", "bare"),
    (r"\b(?:at )?(noon|midday|midnight)\b", "named"),
)


def _take(pattern: str, text: str) -> tuple[re.Match | None, str]:
    m = re.search(pattern, text)
    if m is None:
        return None, text
    return m, (text[: m.start()] + " " + text[m.end() :]).strip()


def _find(text: str) -> tuple[_Found, str]:
    """Pull every time expression out of `text`; what is left is the task."""
    f = _Found()
    t = f" {text} "
    m, t = _take(r"\bin (\d+(?:\.\d+)?) (second|minute|hour|day)s?(?: and a half)?\b", t)
    if m:
        value = float(m.group(1)) + (0.5 if "and a half" in m.group(0) else 0)
        f.relative_s = value * _UNIT_S[m.group(2)]
        m2, t = _take(r"^\s*and (\d+) (minute|second)s?\b", t.strip())
        if m2:
            f.relative_s += float(m2.group(1)) * _UNIT_S[m2.group(2)]
    m, t = _take(r"\b(?:every|each) (\d+) (minute|hour)s?\b", t)
    if m:
        f.rule = f"FREQ={'HOURLY' if m.group(2) == 'hour' else 'MINUTELY'};INTERVAL={m.group(1)}"
    m, t = _take(r"\b(?:every|each) (minute|hour)\b|\bhourly\b", t)
    if m and not f.rule:
        f.rule = "FREQ=MINUTELY" if m.group(1) == "minute" else "FREQ=HOURLY"
    m, t = _take(r"\b(?:every|each|on) ?(?:week ?days?|weekdays)\b", t)
    if m:
        f.rule = "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"
    days = "|".join(_DAYS)
    m, t = _take(rf"\b(?:every|each|on) ({days})s?\b|\b({days})s\b", t)
    if m:
        day = _DAYS.index(m.group(1) or m.group(2))
        if m.group(0).startswith(("every", "each")) or m.group(2):
            f.rule = f"FREQ=WEEKLY;BYDAY={_RRULE_DAYS[day]}"
        else:
            f.weekday = day
    m, t = _take(rf"\b(?:next |this )?({days})\b", t)
    if m and f.weekday is None and not f.rule:
        f.weekday = _DAYS.index(m.group(1))
    m, t = _take(r"\b(?:every|each) (day|morning|afternoon|evening|night)\b|\bdaily\b", t)
    if m:
        f.rule = f.rule or "FREQ=DAILY"
        if m.group(1) in _PART_OF_DAY:
            f.part_of_day = m.group(1)
    m, t = _take(r"\bevery week\b|\bweekly\b", t)
    if m and not f.rule:
        f.rule = "FREQ=WEEKLY"
    m, t = _take(r"\btonight\b", t)
    if m:
        f.day_offset, f.part_of_day = 0, f.part_of_day or "night"
    m, t = _take(r"\b(today|tomorrow|the day after tomorrow)\b", t)
    if m:
        f.day_offset = {"today": 0, "tomorrow": 1}.get(m.group(1), 2)
    m, t = _take(r"\b(?:in the|this|at|tomorrow) (morning|afternoon|evening|night)\b", t)
    if m:
        f.part_of_day = m.group(1)
    for pattern, kind in _TIME_PATTERNS:
        m, t2 = _take(pattern, t)
        if m is None:
            continue
        if kind == "fraction":
            hour = int(m.group(3))
            minutes = {"half": 30, "quarter": 15}.get(m.group(1)) or int(m.group(1))
            if m.group(2) == "to":
                f.hour, f.minute = (hour - 1) % 24, 60 - minutes
            else:
                f.hour, f.minute = hour, minutes
        elif kind == "named":
            f.hour, f.minute = (0, 0) if m.group(1) == "midnight" else (12, 0)
            f.meridiem = "am" if m.group(1) == "midnight" else "pm"
        else:
            hour, minute = int(m.group(1)), int(m.group(2) or 0)
            if hour > 24 or minute > 59:
                continue
            f.hour, f.minute = hour, minute
            if m.group(3) in ("am", "pm"):
                f.meridiem = m.group(3)
        t = t2
        break
    return f, re.sub(r"\s+", " ", t).strip()


def _hour_24(f: _Found, recurring: bool) -> list[int]:
    """Candidate 24-hour values for what he said, most likely first."""
    h = f.hour
    if h is None:
        return []
    if h >= 13 or h == 0:
        return [h % 24]
    mer = f.meridiem or _PART_OF_DAY.get(f.part_of_day, "")
    if f.part_of_day == "night" and h <= 4:
        mer = "am"
    if mer == "am":
        return [0 if h == 12 else h]
    if mer == "pm":
        return [12 if h == 12 else h + 12]
    if recurring:  # "at 9 every day": breakfast pills, not 9 at night; 1-6 are afternoon
        return [h + 12 if 1 <= h <= 6 else h]
    return [0 if h == 12 else h, 12 if h == 12 else h + 12]  # the next one to come


_PRONOUNS = {
    "my": "your", "me": "you", "i": "you", "i'm": "you're", "i've": "you've", "mine": "yours",
    "myself": "yourself", "am": "are", "i'll": "you'll",
}  # fmt: skip


def spoken_task(words: str) -> str:
    """His words as Nabu says them back: "take my pills" -> "take your pills"."""
    words = re.sub(r"^(?:to|that|about|for|i need to|i have to|i should)\s+", "", words.strip())
    words = re.sub(r"\s+(?:to|please|ok|okay)$", "", words)
    words = re.sub(r"^(?:please\s+)?(?:to\s+)?", "", words)
    return " ".join(_PRONOUNS.get(w, w) for w in words.split()).strip(" ,")


def _keep_names(task: str, said: str) -> str:
    """Names keep their capitals ("call Mary"); the rest was lower-cased for parsing."""
    names = {w.lower(): w for w in re.findall(r"[A-Za-z']+", said)[1:] if w[:1].isupper()}
    names.pop("i", None)
    return " ".join(names.get(w, w) for w in task.split())


def plan_reminder(request: str, now: datetime) -> ReminderPlan:
    """The reminder in "take my pills at nine every morning" (`now` is aware, his zone)."""
    f, rest = _find(_clean(request))
    task = _keep_names(spoken_task(rest), request)
    if not task:
        raise ReminderTimeError("What should I remind you about?")
    if f.relative_s is not None and f.hour is None:
        due = now + timedelta(seconds=f.relative_s)
        return ReminderPlan(
            task=task, first_due=due.replace(microsecond=0), rule=f.rule, relative_s=f.relative_s
        )
    if f.hour is None and f.rule.startswith(("FREQ=HOURLY", "FREQ=MINUTELY")):
        # "every 2 hours": from now on
        parts = dict(p.split("=") for p in f.rule.split(";"))
        step = int(parts.get("INTERVAL", "1")) * (3600 if "HOURLY" in f.rule else 60)
        due = (now + timedelta(seconds=step)).replace(microsecond=0)
        return ReminderPlan(task=task, first_due=due, rule=f.rule)
    if f.hour is None and f.part_of_day and (f.rule or f.day_offset is not None):
        f.hour = _DEFAULT_HOUR[f.part_of_day]
    if f.hour is None:
        raise ReminderTimeError(NEED_TIME)
    return ReminderPlan(task=task, first_due=_first_due(f, now), rule=f.rule)


def _first_due(f: _Found, now: datetime) -> datetime:
    zone = now.tzinfo
    local_now = now.replace(tzinfo=None)
    recurring = bool(f.rule)
    candidates = []
    for hour in _hour_24(f, recurring):
        base = local_now.replace(hour=hour, minute=f.minute, second=0, microsecond=0)
        if f.day_offset is not None:
            base += timedelta(days=f.day_offset)
        elif f.weekday is not None:
            ahead = (f.weekday - local_now.weekday()) % 7
            base += timedelta(days=ahead)
            if base <= local_now:
                base += timedelta(days=7)
        if recurring:
            rule = rrulestr(f.rule, dtstart=base)
            nxt = rule.after(local_now, inc=False)
            # The rule starts from today's wall-clock time; earlier today means tomorrow.
            if nxt is None:
                continue
            base = nxt
        elif base <= local_now:
            if f.day_offset is not None or f.weekday is not None:
                continue
            base += timedelta(days=1)
        candidates.append(base)
    if not candidates:
        raise ReminderTimeError("That time has already passed. When should I remind you?")
    return min(candidates).replace(tzinfo=zone)


def plan_timer(duration: str, now: datetime) -> ReminderPlan:
    seconds = parse_duration(duration)
    if seconds is None:
        raise ReminderTimeError(NEED_DURATION)
    due = (now + timedelta(seconds=seconds)).replace(microsecond=0)
    return ReminderPlan(
        task="", first_due=due, kind="timer", duration_s=seconds, relative_s=seconds
    )


def next_due(rule: str, dtstart_local: str, zone: tzinfo, after: datetime) -> datetime | None:
    """The next time a recurring reminder is due after `after`, in `zone` (DST-correct).

    The rule runs over naive wall-clock times and each result is then placed in the
    zone: "9 every morning" is 9:00 on both sides of a daylight-saving change.
    """
    if not rule:
        return None
    start = datetime.fromisoformat(dtstart_local)
    local_after = after.astimezone(zone).replace(tzinfo=None)
    nxt = rrulestr(rule, dtstart=start).after(local_after, inc=False)
    return None if nxt is None else nxt.replace(tzinfo=zone)


# --- how Nabu says it ---------------------------------------------------------------------


def spoken_clock(dt: datetime, clock: str = "12h") -> str:
    """ "9 in the morning", "3:05 in the afternoon", "noon" (24h: "21:00")."""
    if clock == "24h":
        return dt.strftime("%H:%M")
    h, m = dt.hour, dt.minute
    if (h, m) == (12, 0):
        return "noon"
    if (h, m) == (0, 0):
        return "midnight"
    part = "in the morning" if h < 12 else "in the afternoon" if h < 17 else "in the evening"
    if h >= 21 or h < 4:
        part = "at night"
    shown = h % 12 or 12
    return f"{shown} {part}" if m == 0 else f"{shown}:{m:02d} {part}"


def spoken_repeat(rule: str) -> str:
    """ "every day", "every Monday", "on weekdays", "every 2 hours"; empty for once."""
    if not rule:
        return ""
    parts = dict(p.split("=") for p in rule.split(";"))
    freq, interval = parts.get("FREQ"), int(parts.get("INTERVAL", "1"))
    if freq == "DAILY":
        return "every day"
    if freq == "WEEKLY" and parts.get("BYDAY") == "MO,TU,WE,TH,FR":
        return "on weekdays"
    if freq == "WEEKLY" and "BYDAY" in parts:
        days = [_DAYS[_RRULE_DAYS.index(d)].capitalize() for d in parts["BYDAY"].split(",")]
        return "every " + " and ".join(days)
    if freq == "WEEKLY":
        return "every week"
    unit = {"HOURLY": "hour", "MINUTELY": "minute"}.get(freq or "", "time")
    return f"every {interval} {unit}s" if interval > 1 else f"every {unit}"


def spoken_when(due: datetime, now: datetime, rule: str = "", clock: str = "12h") -> str:
    """ "at 9 in the morning, every day", "tomorrow at 3 in the afternoon", "today at noon"."""
    at = f"at {spoken_clock(due, clock)}"
    repeat = spoken_repeat(rule)
    if repeat and rule.startswith("FREQ=DAILY"):
        return f"{at}, {repeat}"
    if repeat and rule.startswith("FREQ=WEEKLY"):
        return f"{repeat}, {at}"
    days = (due.date() - now.date()).days
    day = (
        "today"
        if days == 0
        else "tomorrow"
        if days == 1
        else f"on {due.strftime('%A')}"
        if days < 7
        else f"on {due.strftime('%A, %B')} {due.day}"
    )
    text = f"{day} {at}"
    return f"{text}, then {repeat}" if repeat else text


def spoken_duration(seconds: float, *, adjective: bool = False) -> str:
    """ "10 minutes", "1 hour and 30 minutes"; as an adjective "10 minute" (a 10 minute timer)."""
    seconds = round(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    parts = [
        f"{v} {u}{'s' if v != 1 and not adjective else ''}"
        for v, u in ((h, "hour"), (m, "minute"), (s, "second"))
        if v
    ]
    return " and ".join(parts) if parts else "0 seconds"
