"""What a reader sees of a report page, and the checks that it reads as words and short numbers."""

import html
import re


def visible_text(page: str, quotes: bool = True) -> str:
    """The page without its style sheet and tags (embedded images are attributes, so they go too); without the
    paper's quoted words (its notation has braces: e^{l,h}) unless `quotes`."""
    page = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    if not quotes:
        page = re.sub(r"<blockquote>.*?</blockquote>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def long_decimals(text: str) -> list[str]:
    """Decimal numbers with more than 4 significant digits (0.16594171936692717, 90.686)."""
    out = []
    for number in re.findall(r"\d[\d,]*\.\d+", text):
        digits = number.replace(",", "").replace(".", "").lstrip("0")
        if len(digits) > 4:
            out.append(number)
    return out


def assert_readable(page: str) -> None:
    """No raw dict or JSON ('{', "'key': 1", '"key": ['), no 'nan', no decimals with more than 4 significant
    digits in what the page shows (the paper's quoted words and ^{...} / _{...} notation aside)."""
    text = re.sub(r"[\^_]\{[^{}]*\}", "", visible_text(page, quotes=False))  # notation: W_V^{kv(h)}, e^{l,h}
    assert "{" not in text and "}" not in text, re.findall(r".{0,40}[{}].{0,40}", text)[:3]
    raw = r"['\"]\w+['\"]: (?:[-\d\[\"'{]|true|false|null|None|True|False)"  # "'n': 48", '"ci95": [' ...
    assert not re.search(raw, text), re.findall(r".{0,40}" + raw + ".{0,20}", text)[:3]
    assert not re.search(r"\bnan\b", text, flags=re.I), re.findall(r".{0,40}\bnan\b.{0,20}", text, flags=re.I)[:3]
    assert long_decimals(text) == []
