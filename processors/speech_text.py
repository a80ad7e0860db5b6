"""Speech text shaping: turn what the LLM wrote into what a person would say.

These run as the TTS service's `text_transforms`, i.e. on whole aggregated
sentences, so "$" and "500" are never split across LLM tokens. No markdown,
emoji or URLs are read aloud; money, times, temperatures, fractions,
ordinals and common abbreviations are spoken the way a person says them.
Numbers become words with `num2words` (a pipecat dependency).
"""

from __future__ import annotations

import re

from num2words import num2words

_EMOJI = re.compile(
    "["
    "\U0001f000-\U0001faff"  # pictographs, emoticons, transport, supplemental symbols
    "\U00002600-\U000027bf"  # misc symbols, dingbats
    "\U0001f1e6-\U0001f1ff"  # flags
    "\U00002b00-\U00002bff"
    "\u200d\ufe0f\u20e3"  # joiners and variation selectors
    "]+"
)
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>()]+", re.IGNORECASE)
_CODE_BLOCK = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`]*)`")
_BOLD_ITALIC = re.compile(r"(\*{1,3}|_{2,3})(\S(?:.*?\S)?)\1")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s*", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+", re.MULTILINE)
_TABLE_RULE = re.compile(r"^\s*\|?[\s:|-]+\|[\s:|-]*$", re.MULTILINE)
_QUOTE = re.compile(r"^\s*>\s?", re.MULTILINE)

_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_MONEY = re.compile(
    rf"(?P<sign>-)?\$\s?(?P<num>{_NUM})(?:\s?(?P<scale>thousand|million|billion|trillion|[kKmMbB]n?)\b)?"
)
_TIME = re.compile(
    r"\b(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)(?:\s?(?P<ampm>[aApP])(?:\.\s?[mM]\.|\s?[mM])(?=\W|$))?"
)
_HOUR_AMPM = re.compile(
    r"\b(?P<h>1[0-2]|0?[1-9])\s?(?P<ampm>[aApP])(?:\.\s?[mM]\.|\s?[mM])(?=\W|$)"
)
_TEMP = re.compile(rf"(?P<sign>[-−])?(?P<num>{_NUM})\s?°\s?(?P<unit>[CF])?\b")
_PERCENT = re.compile(rf"(?P<sign>-)?(?P<num>{_NUM})\s?%")
_FRACTION = re.compile(r"(?<![\d/])(?P<n>\d)/(?P<d>[2-9]|10)(?![\d/])")
_ORDINAL = re.compile(r"\b(?P<num>\d+)(?:st|nd|rd|th)\b", re.IGNORECASE)
_NUMBER = re.compile(rf"(?<![\w.])(?P<sign>-)?(?P<num>{_NUM})(?![\w])")
_UNITS = {
    "km": "kilometers",
    "kms": "kilometers",
    "mi": "miles",
    "mph": "miles per hour",
    "km/h": "kilometers per hour",
    "kph": "kilometers per hour",
    "kg": "kilograms",
    "lb": "pounds",
    "lbs": "pounds",
    "oz": "ounces",
    "ft": "feet",
    "in": "inches",
    "cm": "centimeters",
    "mm": "millimeters",
    "m": "meters",
    "g": "grams",
    "mg": "milligrams",
    "ml": "milliliters",
    "l": "liters",
    "kwh": "kilowatt hours",
    "w": "watts",
    "kw": "kilowatts",
    "hrs": "hours",
    "hr": "hours",
    "mins": "minutes",
    "min": "minutes",
    "sec": "seconds",
    "secs": "seconds",
}
_UNIT = re.compile(
    rf"(?P<num>{_NUM})\s?(?P<unit>km/h|kwh|kms|km|mph|kph|kg|lbs|lb|oz|ft|cm|mm|mg|ml|mi|hrs|hr|mins|min|secs|sec|kw|w|g|l|m)\b",
    re.IGNORECASE,
)
_ABBREVIATIONS = [
    (re.compile(r"\bDr\.(?=\s+[A-Z])"), "Doctor"),
    (re.compile(r"\bDr\."), "Drive"),
    (re.compile(r"\bMr\."), "Mister"),
    (re.compile(r"\bMrs\."), "Missus"),
    (re.compile(r"\bMs\."), "Miz"),
    (re.compile(r"\bProf\."), "Professor"),
    (re.compile(r"\bSt\.(?=\s+[A-Z])"), "Saint"),
    (re.compile(r"\bSt\."), "Street"),
    (re.compile(r"\bAve\."), "Avenue"),
    (re.compile(r"\bJr\."), "Junior"),
    (re.compile(r"\bSr\."), "Senior"),
    (re.compile(r"\be\.g\.", re.IGNORECASE), "for example"),
    (re.compile(r"\bi\.e\.", re.IGNORECASE), "that is"),
    (re.compile(r"\betc\.", re.IGNORECASE), "et cetera"),
    (re.compile(r"\bvs\.?(?=\s)", re.IGNORECASE), "versus"),
    (re.compile(r"\bapprox\.", re.IGNORECASE), "approximately"),
    (re.compile(r"\bno\.(?=\s*\d)", re.IGNORECASE), "number"),
    (re.compile(r"\b24/7\b"), "twenty-four seven"),
    (re.compile(r"\s&\s"), " and "),
    (re.compile(r"\s\+\s"), " plus "),
    (re.compile(r"\s=\s"), " equals "),
]
_FRACTION_WORDS = {
    (1, 2): "one half",
    (1, 4): "one quarter",
    (3, 4): "three quarters",
}
_SCALE_WORDS = {
    "k": "thousand",
    "m": "million",
    "mn": "million",
    "b": "billion",
    "bn": "billion",
}


def _to_number(text: str) -> float | int:
    clean = text.replace(",", "")
    return float(clean) if "." in clean else int(clean)


def number_words(text: str) -> str:
    """'1,200' -> 'one thousand, two hundred'; '3.5' -> 'three point five'."""
    value = _to_number(text)
    if isinstance(value, float):
        whole, _, frac = text.replace(",", "").partition(".")
        return f"{num2words(int(whole))} point {' '.join(num2words(int(d)) for d in frac)}"
    return num2words(value)


def _money(m: re.Match) -> str:
    amount = m.group("num").replace(",", "")
    scale = (m.group("scale") or "").lower()
    scale = _SCALE_WORDS.get(scale, scale)
    sign = "minus " if m.group("sign") else ""
    if scale:
        return f"{sign}{number_words(amount)} {scale} dollars"
    dollars, _, cents = amount.partition(".")
    d = int(dollars)
    c = int((cents + "00")[:2]) if cents else 0
    parts = []
    if d or not c:
        parts.append(f"{num2words(d)} dollar{'s' if d != 1 else ''}")
    if c:
        parts.append(f"{num2words(c)} cent{'s' if c != 1 else ''}")
    return sign + " and ".join(parts)


def _clock_words(h: int, minute: int, ampm: str | None) -> str:
    if ampm:
        hour = num2words(h)
        suffix = " a m" if ampm.lower() == "a" else " p m"
    else:
        hour = num2words(h)
        suffix = ""
    if minute == 0:
        return f"{hour}{suffix}" if ampm else f"{hour} o'clock"
    mins = f"oh {num2words(minute)}" if minute < 10 else num2words(minute)
    return f"{hour} {mins}{suffix}"


def _time(m: re.Match) -> str:
    return _clock_words(int(m.group("h")), int(m.group("m")), m.group("ampm"))


def _hour_ampm(m: re.Match) -> str:
    return _clock_words(int(m.group("h")), 0, m.group("ampm"))


def _temperature(m: re.Match) -> str:
    sign = "minus " if m.group("sign") else ""
    value = m.group("num")
    unit = {"C": " Celsius", "F": " Fahrenheit"}.get(m.group("unit") or "", "")
    plural = "degree" if value in ("1", "1.0") and not sign else "degrees"
    return f"{sign}{number_words(value)} {plural}{unit}"


def _percent(m: re.Match) -> str:
    sign = "minus " if m.group("sign") else ""
    return f"{sign}{number_words(m.group('num'))} percent"


def _fraction(m: re.Match) -> str:
    n, d = int(m.group("n")), int(m.group("d"))
    if n == 0 or n >= d:
        return m.group(0)
    if (n, d) in _FRACTION_WORDS:
        return _FRACTION_WORDS[(n, d)]
    denom = num2words(d, to="ordinal")
    return f"{num2words(n)} {denom}{'s' if n > 1 else ''}"


def _ordinal(m: re.Match) -> str:
    return num2words(int(m.group("num")), to="ordinal")


def _unit(m: re.Match) -> str:
    unit = m.group("unit").lower()
    words = _UNITS.get(unit, unit)
    if m.group("num") in ("1", "1.0") and words.endswith("s") and words != "miles per hour":
        words = {"feet": "foot", "inches": "inch"}.get(words, words[:-1])
    return f"{number_words(m.group('num'))} {words}"


def _number(m: re.Match) -> str:
    text = m.group("num")
    sign = "minus " if m.group("sign") else ""
    if re.fullmatch(r"1[1-9]\d\d|20\d\d", text):  # a bare four-digit number is usually a year
        return sign + num2words(int(text), to="year")
    return sign + number_words(text)


def _url(m: re.Match) -> str:
    """Say a web address as its site name ("example dot com"), never the whole path."""
    host = re.sub(r"^(?:https?://)?(?:www\.)?", "", m.group(0), flags=re.IGNORECASE)
    host = re.split(r"[/?#:]", host, maxsplit=1)[0].rstrip(".,;")
    return host.replace(".", " dot ") if host else ""


def strip_markup(text: str) -> str:
    """Markdown, emoji and links out; their words stay."""
    text = _CODE_BLOCK.sub(" ", text)
    text = _MD_LINK.sub(r"\1", text)
    text = _URL.sub(_url, text)
    text = _INLINE_CODE.sub(r"\1", text)
    text = _TABLE_RULE.sub(" ", text)
    text = _HEADING.sub("", text)
    text = _BULLET.sub("", text)
    text = _QUOTE.sub("", text)
    for _ in range(2):
        text = _BOLD_ITALIC.sub(r"\2", text)
    text = text.replace("|", ", ").replace("*", "").replace("#", "").replace("_", " ")
    text = _EMOJI.sub("", text)
    return text


def spell_out(text: str) -> str:
    """Money, times, temperatures, percents, fractions, ordinals, units and numbers as words."""
    for pattern, replacement in _ABBREVIATIONS:
        text = pattern.sub(replacement, text)
    text = _MONEY.sub(_money, text)
    text = _TIME.sub(_time, text)
    text = _HOUR_AMPM.sub(_hour_ampm, text)
    text = _TEMP.sub(_temperature, text)
    text = _PERCENT.sub(_percent, text)
    text = _FRACTION.sub(_fraction, text)
    text = _ORDINAL.sub(_ordinal, text)
    text = _UNIT.sub(_unit, text)
    text = _NUMBER.sub(_number, text)
    return text


def shape_text(text: str) -> str:
    """What Piper should say for one aggregated sentence."""
    shaped = spell_out(strip_markup(text))
    shaped = re.sub(r"[ \t]+", " ", shaped)
    shaped = re.sub(r"\s+([,.;:!?])", r"\1", shaped)
    shaped = re.sub(r"(?<=[^\s.,;:!?])\s*\n+\s*", ". ", shaped)
    shaped = re.sub(r"\s*\n+\s*", " ", shaped)
    return shaped.strip() if shaped.strip() else ""


async def shape_for_speech(text: str, _type: str = "sentence") -> str:
    """The TTS `text_transforms` entry (pipecat awaits transforms)."""
    return shape_text(text)
