"""Build the shipped corpora src/flowroutes/data/corpora/<domain>.jsonl.gz from pinned Debian bookworm packages.

A maintainer step (`make corpora`), never run by the tests or at run time: it fetches the pinned .debs with
`apt-get download PKG=VERSION` into a cache folder, unpacks them with `dpkg-deb -x` (no root install), renders the
man pages with the groff of the pinned `groff-base` package run from its unpacked folder, and writes one gzipped
JSON Lines file per domain, each record {"text", "source": "<package> <version> <path in package>"}. The output is
byte-identical on every rebuild (fixed package versions, sorted inputs, a fixed shuffle seed, gzip mtime 0).

Domains and what is taken (see src/flowroutes/data/SOURCES.md):
  english                    the Linux man-pages project's English pages (manpages, manpages-dev) and the Debian
                             Reference (debian-reference-en)
  russian, italian, spanish  their human translations (manpages-l10n: manpages-XX, manpages-XX-dev), and the
                             translated Debian Reference (it, es), Debian FAQ and Developer's Reference (it, ru)
  general                    prose paragraphs of the Python 3.11 documentation (python3.11-doc, reST sources)
  code                       whole small functions and classes of Python's standard library (libpython3.11-stdlib)
  addition, subtraction      generated, as in the paper: the shipped samples src/flowroutes/data/{addition,
                             subtraction}.txt keep their first 300 problems and are extended to ARITHMETIC_TEXTS
                             with the same five templates (seed SEED), so that `--size paper` reads 1000+ per domain

Prose texts are runs of consecutive sentences of one section (at least three sentences, within a character
window per language so that the texts have similar SmolLM2 token counts); paragraphs that are not prose (option
lists, tables, command lines, code, untranslated English) are dropped.

    python scripts/build_corpora.py [--cache build/corpora-debs] [--out src/flowroutes/data/corpora]

(--out is the corpora's folder; the arithmetic samples are always rewritten in place, identical on every run.)
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: every package read, at the exact version (Debian bookworm and bookworm-security)
PACKAGES = {
    "manpages": "6.03-2",
    "manpages-dev": "6.03-2",
    "manpages-ru": "4.18.1-1",
    "manpages-ru-dev": "4.18.1-1",
    "manpages-it": "4.18.1-1",
    "manpages-it-dev": "4.18.1-1",
    "manpages-es": "4.18.1-1",
    "manpages-es-dev": "4.18.1-1",
    "python3.11-doc": "3.11.2-6+deb12u9",
    "libpython3.11-stdlib": "3.11.2-6+deb12u9",
    "groff-base": "1.22.4-10",
    "debian-reference-en": "2.100",
    "debian-reference-it": "2.100",
    "debian-reference-es": "2.100",
    "debian-faq-it": "11.1",
    "developers-reference-it": "12.18",
    "debian-faq-ru": "11.1",
    "developers-reference-ru": "12.18",
}

#: books in their plain-text edition per prose domain (the man pages alone give too few Italian texts, and
#: Russian ones only at ~170 tokens a text; the English reference keeps english comparable)
BOOKS = {
    "english": (("debian-reference-en", "usr/share/debian-reference/debian-reference.en.txt.gz", 4),),
    "italian": (("debian-reference-it", "usr/share/debian-reference/debian-reference.it.txt.gz", 4),
                ("debian-faq-it", "usr/share/doc/debian/FAQ/debian-faq.it.txt.gz", 4),
                ("developers-reference-it", "usr/share/developers-reference/it/developers-reference.txt.gz", 0)),
    "spanish": (("debian-reference-es", "usr/share/debian-reference/debian-reference.es.txt.gz", 4),),
    "russian": (("debian-faq-ru", "usr/share/doc/debian/FAQ/debian-faq.ru.txt.gz", 4),
                ("developers-reference-ru", "usr/share/developers-reference/ru/developers-reference.txt.gz", 0)),
}  # (package, file, base indent of its paragraphs)

SEED = 19
MAX_TEXTS = 1500
MIN_TEXTS = 1000

#: man-page folders and packages per prose domain
MAN_DOMAINS = {
    "english": (("manpages", "usr/share/man"), ("manpages-dev", "usr/share/man")),
    "russian": (("manpages-ru", "usr/share/man/ru"), ("manpages-ru-dev", "usr/share/man/ru")),
    "italian": (("manpages-it", "usr/share/man/it"), ("manpages-it-dev", "usr/share/man/it")),
    "spanish": (("manpages-es", "usr/share/man/es"), ("manpages-es-dev", "usr/share/man/es")),
}

#: (min, max) characters of a prose text; SmolLM2's tokenizer spends about 4.5 characters a token on English,
#: 3 on Italian and Spanish and 1.4 on Russian, so these windows give roughly 40-160 tokens a text
CHAR_WINDOW = {"english": (200, 560), "general": (200, 560), "italian": (150, 500), "spanish": (150, 500),
               "russian": (100, 280)}

#: sections never taken (name, synopsis, authors, bug reporting, copyright, see also, translators, colophon)
SKIP_SECTIONS = re.compile(
    r"^(NAME|NOME|NOMBRE|ИМЯ|НАЗВАНИЕ|SYNOPSIS|SINTASSI|SINOSSI|SINOPSIS|ОБЗОР|СИНТАКСИС|AUTHORS?|AUTORE|AUTORI|"
    r"AUTOR|AUTORES|АВТОРЫ?|REPORTING BUGS|SEGNALAZIONE.*|INFORMAR DE ERRORES|ОБ ОШИБКАХ|СООБЩЕНИЕ ОБ ОШИБКАХ|"
    r"COPYRIGHT|АВТОРСКИЕ ПРАВА|SEE ALSO|VEDERE ANCHE|VEDI ANCHE|VÉASE TAMBIÉN|СМОТРИТЕ ТАКЖЕ|СМ\. ТАКЖЕ|"
    r"TRADUZIONE|TRADUCCIÓN|ПЕРЕВОД|COLOPHON)$"
)

#: a sentence ends at . ! ? (and closing quotes/brackets) before whitespace and an upper-case letter, digit or
#: opening quote, or at the end of the text. tests/unit/test_corpora.py counts sentences with the same rule.
SENTENCE_END = re.compile(r"[.!?][\"'»”)\]]*(?=\s+[\"'«“(¿¡]?[A-ZÀ-ÖØ-ÞА-ЯЁ0-9]|\s*$)")
#: words whose period does not end a sentence (checked before splitting)
ABBREVIATIONS = {"e.g.", "i.e.", "etc.", "p.es.", "es.", "ej.", "p.ej.", "vs.", "cfr.", "ecc.", "т.е.", "т.д.",
                 "т.п.", "напр.", "см.", "Dr.", "Mr.", "no.", "No.", "approx.", "ca.", "cap.", "vol.", "ver.", "p.",
                 "Sr.", "St.", "Ing.", "seg.", "Fig.", "fig."}

#: a line that is not prose: an option (-x, --long), a prompt, a table (runs of spaces), code punctuation
NOT_PROSE = re.compile(r"^\s*(-{1,2}[\w\[]|\$ |# |>>>|\.\.\. )|\s{3,}\S|[{};]\s*$|==|!=|->|::|\w\(\)\s*\{|/\*|\*/")

STOPWORDS = {
    "english": {"the", "is", "of", "and", "to", "in", "that", "this", "are", "be", "with", "for", "it", "by", "not",
                "which", "can", "an", "as", "on", "or", "if", "when", "from"},
    "italian": {"il", "di", "che", "è", "la", "le", "per", "un", "una", "non", "del", "della", "dei", "con", "sono",
                "gli", "si", "nel", "nella", "da", "questo", "questa", "viene", "quando", "anche"},
    "spanish": {"el", "de", "que", "es", "la", "los", "las", "para", "un", "una", "no", "del", "con", "se", "por",
                "en", "este", "esta", "cuando", "también", "si", "son", "al", "su", "lo"},
}


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def fetch(cache: Path) -> dict[str, Path]:
    """Each pinned package unpacked under cache/x/<name> (downloaded once into cache)."""
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, version in PACKAGES.items():
        debs = sorted(cache.glob(f"{name}_*.deb"))
        want = [d for d in debs if d.name.startswith(f"{name}_{version.replace(':', '%3a')}_")]
        if not want:
            run(["apt-get", "download", f"{name}={version}"], cwd=cache, stdout=subprocess.DEVNULL)
            want = sorted(cache.glob(f"{name}_{version}_*.deb"))
        dest = cache / "x" / name
        if not dest.exists():
            run(["dpkg-deb", "-x", str(want[0]), str(dest)])
        out[name] = dest
    return out


# ---------------------------------------------------------------- prose helpers

def split_sentences(text: str) -> list[str]:
    out, start = [], 0
    for m in SENTENCE_END.finditer(text):
        piece = text[start:m.end()].strip()
        last = piece.rsplit(" ", 1)[-1]
        if piece and (last in ABBREVIATIONS or re.fullmatch(r"(\w\.)+", last) and len(last) <= 4):
            continue  # an abbreviation or an initial: the sentence goes on
        if piece:
            out.append(piece)
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)  # no final period: kept only as part of a run that ends elsewhere (see chunks)
    return out


def language_ok(domain: str, paragraph: str) -> bool:
    letters = [c for c in paragraph if c.isalpha()]
    if len(letters) < 0.7 * len(paragraph.replace(" ", "")):
        return False  # numbers, paths, symbols
    if domain == "russian":
        return sum("\u0400" <= c <= "\u04ff" for c in letters) >= 0.75 * len(letters)
    if any("\u0400" <= c <= "\u04ff" for c in letters):
        return False
    words = re.findall(r"[^\W\d_]+", paragraph.lower())
    own = sum(w in STOPWORDS[domain] for w in words)
    if domain == "english":
        return own >= 0.12 * len(words)
    return own >= 0.12 * len(words) and own > 2 * sum(w in STOPWORDS["english"] for w in words)


def prose_ok(domain: str, paragraph: str) -> bool:
    return (not NOT_PROSE.search(paragraph) and "\\" not in paragraph and paragraph[-1] in ".!?"
            and paragraph[0].isupper() and language_ok(domain, paragraph))


def chunks(sentences: list[str], lo: int, hi: int) -> list[str]:
    """Runs of at least three consecutive complete sentences, lo..hi characters, not overlapping."""
    out, i = [], 0
    while i < len(sentences):
        j, text = i, ""
        while j < len(sentences):
            text = f"{text} {sentences[j]}".strip()
            j += 1
            if j - i >= 3 and len(text) >= lo:
                break
        if j - i >= 3 and lo <= len(text) <= hi and text[-1] in ".!?" and count_sentences(text) >= 3:
            out.append(text)
            i = j
        else:
            i += 1
    return out


def count_sentences(text: str) -> int:
    return len(split_sentences(text))


# ---------------------------------------------------------------- man pages

def groff_env(groff: Path) -> dict[str, str]:
    share = groff / "usr/share/groff/1.22.4"
    return {"PATH": f"{groff / 'usr/bin'}:/usr/bin:/bin", "GROFF_BIN_PATH": str(groff / "usr/bin"),
            "GROFF_FONT_PATH": str(share / "font"), "GROFF_TMAC_PATH": str(share / "tmac"), "LC_ALL": "C.UTF-8"}


def render(page: bytes, env: dict[str, str]) -> str:
    """A man page as text: no hyphenation, no bold/underline, one line per paragraph (line length 3000)."""
    groff = str(Path(env["GROFF_BIN_PATH"]) / "groff")
    proc = subprocess.run([groff, "-k", "-Kutf8", "-t", "-Tutf8", "-man", "-P-cbou", "-rLL=3000n", "-rHY=0"],
                          input=page, capture_output=True, env=env, check=False)
    return proc.stdout.decode("utf-8", "replace")


PLAIN_WORD = re.compile(r"[A-ZÀ-ÞА-ЯЁ]?[a-zß-ÿа-яё]+[,;]?")


def man_sections(rendered: str) -> list[tuple[str, list[str | None]]]:
    """(heading, paragraphs) per section; a paragraph is a line at the base indent (7 spaces) or the body of a
    tagged paragraph (14); None marks a break (a change of indent, a tag, an example, a table) so that runs never
    join across it."""
    sections: list[tuple[str, list[str | None]]] = []
    prev = 0
    lines = rendered.splitlines()[1:-1]  # header and footer lines
    for line in lines:
        if not line.strip():
            continue
        if not line.startswith(" "):
            sections.append((line.strip(), []))
        elif sections:
            body = sections[-1][1]
            indent = len(line) - len(line.lstrip(" "))
            tagged = False
            short = re.match(r" {7}(\S{1,6}) +(?=\S)", line)  # a tag shorter than the indent, body on its line
            name = re.match(r" *([A-Z][A-Z0-9_]+|\S*_\S*|-\S+) +(?=[A-ZА-ЯЁ])", line)  # a constant or option tag
            if indent == 7 and short and short.end() == 14 and not re.fullmatch(PLAIN_WORD, short.group(1)):
                line, indent, tagged = line[short.end():], 14, True
            elif indent in (7, 14) and name:
                line, indent, tagged = line[name.end():], 14, True
            if indent in (7, 14):  # a paragraph, or the body of a tagged paragraph (.TP/.IP)
                if body and body[-1] is not None and (indent != prev or tagged):
                    body.append(None)  # each tagged body stands alone
                body.append(re.sub(r"\s+", " ", line.strip()))
            elif body and body[-1] is not None:
                body.append(None)
            prev = indent
    return sections


def man_texts(domain: str, pkgs: dict[str, Path], env: dict[str, str]) -> list[dict]:
    lo, hi = CHAR_WINDOW[domain]
    records = []
    for pkg, folder in MAN_DOMAINS[domain]:
        base = pkgs[pkg]
        for path in sorted((base / folder).glob("man*/*.gz")):
            if path.is_symlink():
                continue
            page = gzip.decompress(path.read_bytes())
            if page.lstrip().startswith(b".so "):
                continue  # a link to another page
            source = f"{pkg} {PACKAGES[pkg]} /{path.relative_to(base)}"
            for heading, body in man_sections(render(page, env)):
                if not SKIP_SECTIONS.match(heading):
                    records.extend(prose_runs(body, domain, source, lo, hi))
    return records


def prose_runs(paras: list[str | None], domain: str, source: str, lo: int, hi: int) -> list[dict]:
    """The texts of a section: runs of consecutive prose paragraphs (a None or a paragraph that is not prose ends a
    run), their sentences cut into texts of lo..hi characters (`chunks`), each record naming `source`."""
    records: list[dict] = []
    run_: list[str] = []
    for para in [*paras, None]:
        if para is not None and prose_ok(domain, para):
            run_.extend(split_sentences(para))
            continue
        records.extend({"text": t, "source": source} for t in chunks(run_, lo, hi))
        run_ = []
    return records


def reference_paragraphs(text: str, indent: int) -> list[str | None]:
    """Paragraphs of a DocBook book's plain-text edition: blank-line separated blocks whose lines all sit at
    the base indent (`indent` to `indent`+3 spaces); None for anything else (headings end without a period and
    fail prose_ok later)."""
    out: list[str | None] = []
    text = text.replace("\u00a0", " ")  # the edition indents some lines with no-break spaces
    for block in re.split(r"\n[ \t]*\n", text):
        lines = [ln for ln in block.split("\n") if ln.strip()]
        if lines and all(indent <= len(ln) - len(ln.lstrip(" ")) <= indent + 3 for ln in lines):
            out.append(re.sub(r"\s+", " ", " ".join(ln.strip() for ln in lines)).replace(" ,", ","))
        elif lines:
            out.append(None)
    return out


def book_texts(domain: str, pkgs: dict[str, Path]) -> list[dict]:
    lo, hi = CHAR_WINDOW[domain]
    records = []
    for pkg, rel, indent in BOOKS.get(domain, ()):
        path = pkgs[pkg] / rel
        source = f"{pkg} {PACKAGES[pkg]} /{rel}"
        paras = reference_paragraphs(gzip.decompress(path.read_bytes()).decode("utf-8"), indent)
        records.extend(prose_runs(paras, domain, source, lo, hi))
    return records


# ---------------------------------------------------------------- Python documentation (reST)

ROLE = re.compile(r":[\w:+-]+:`(?:~|!)?([^`<]*?)\s*(?:<[^`>]*>)?`")
LINK = re.compile(r"`([^`<]+?)\s*<[^`>]*>`_{1,2}")
GENERAL_FOLDERS = ("tutorial", "howto", "faq", "whatsnew", "library", "reference", "using", "extending")


def rst_inline(text: str) -> str:
    text = ROLE.sub(lambda m: m.group(1).strip(), text)
    text = LINK.sub(r"\1", text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = re.sub(r"`([^`]+)`_{0,2}", r"\1", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\1", text)
    text = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"\1", text)
    text = re.sub(r"\s*\[#\w*\]_", "", text)
    text = text.replace("\\ ", "").replace("|", "")
    return re.sub(r"\s+", " ", text).strip()


def rst_paragraphs(source: str) -> list[str | None]:
    """Top-level prose paragraphs of a reST file in order; None at a heading, directive, list, or code block."""
    out: list[str | None] = []
    blocks = re.split(r"\n\s*\n", source)
    for block in blocks:
        lines = block.split("\n")
        lines = [ln for ln in lines if ln.strip()]
        if not lines:
            continue
        if (lines[0][0].isspace() or lines[0].startswith(("..", "*", "-", "#", "+", "=", "|", ">>>", ":"))
                or re.match(r"\d+\.\s", lines[0]) or any(re.fullmatch(r"([=\-~^\"'*#+`])\1{2,}", ln.strip())
                                                         for ln in lines)
                or any(ln[0].isspace() for ln in lines)):
            out.append(None)
            continue
        text = " ".join(ln.strip() for ln in lines)
        if text.endswith("::"):
            out.append(None)  # introduces a code block
            continue
        out.append(rst_inline(text))
    return out


def general_texts(pkgs: dict[str, Path]) -> list[dict]:
    lo, hi = CHAR_WINDOW["general"]
    base = pkgs["python3.11-doc"]
    root = base / "usr/share/doc/python3.11/html/_sources"
    records = []
    for folder in GENERAL_FOLDERS:
        for path in sorted((root / folder).rglob("*.rst.txt")):
            source = f"python3.11-doc {PACKAGES['python3.11-doc']} /{path.relative_to(base)}"
            run_: list[str] = []
            for para in [*rst_paragraphs(path.read_text("utf-8")), None]:
                if para is not None and prose_ok("english", para) and "`" not in para:
                    run_.extend(split_sentences(para))
                    continue
                records.extend({"text": t, "source": source} for t in chunks(run_, lo, hi))
                run_ = []
    return records


# ---------------------------------------------------------------- code

def code_texts(pkgs: dict[str, Path]) -> list[dict]:
    """Whole functions and classes (decorators included) of 4-25 lines and at most 700 characters, dedented;
    each parses on its own."""
    base = pkgs["libpython3.11-stdlib"]
    records = []
    for path in sorted((base / "usr/lib/python3.11").rglob("*.py")):
        if "/test/" in str(path) or path.is_symlink():
            continue
        try:
            src = path.read_text("utf-8")
            tree = ast.parse(src)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = src.splitlines()
        source = f"libpython3.11-stdlib {PACKAGES['libpython3.11-stdlib']} /{path.relative_to(base)}"
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            n = node.end_lineno - first + 1
            if not 4 <= n <= 25:
                continue
            text = textwrap.dedent("\n".join(lines[first - 1:node.end_lineno])).rstrip()
            if len(text) > 700 or "\t" in text:
                continue
            try:
                ast.parse(text)
            except SyntaxError:
                continue
            records.append({"text": text, "source": source})
    return records


# ---------------------------------------------------------------- arithmetic (generated)

ARITHMETIC_TEXTS = 1200
ARITHMETIC_KEPT = 300  # the samples' original problems, kept as they are (--size quick reads the first 48)
NAMES = {"Anna": "She", "Emma": "She", "Lisa": "She", "Mary": "She", "Sara": "She", "Jack": "He", "John": "He",
         "Mike": "He", "Paul": "He", "Tom": "He"}
OBJECTS = ("apples", "books", "cards", "coins", "cookies", "marbles", "pencils", "shells", "stamps", "stickers")
TEMPLATES = {
    "addition": ("{n} had {a} {o}. {p} got {b} more {o}. How many {o} does {n} have now? Answer: {c}",
                 "There are {a} {o} in a box and {b} {o} on the table. How many {o} are there in total? Answer: {c}",
                 "{n} collected {a} {o} on Monday and {b} {o} on Tuesday. How many {o} did {n} collect? Answer: {c}",
                 "Question: What is {a} plus {b}? Answer: {c}",
                 "{a} + {b} = {c}"),
    "subtraction": ("{n} had {a} {o}. {p} gave away {b} {o}. How many {o} does {n} have now? Answer: {c}",
                    "There were {a} {o} in a box. {b} {o} were taken out. How many {o} are left? Answer: {c}",
                    "{n} needs {a} {o} and already has {b}. How many more {o} does {n} need? Answer: {c}",
                    "Question: What is {a} minus {b}? Answer: {c}",
                    "{a} - {b} = {c}"),
}


def arithmetic(name: str, path: Path) -> bytes:
    """The sample's first ARITHMETIC_KEPT lines, then new problems (operands 2..99; subtraction never below 0)
    cycling through the five templates in the samples' order until ARITHMETIC_TEXTS distinct lines."""
    lines = path.read_text("utf-8").splitlines()[:ARITHMETIC_KEPT]
    seen = set(lines)
    rng = random.Random(f"{SEED}-{name}")
    while len(lines) < ARITHMETIC_TEXTS:
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        if name == "subtraction" and a < b:
            a, b = b, a
        person = rng.choice(sorted(NAMES))
        line = TEMPLATES[name][len(lines) % 5].format(n=person, p=NAMES[person], o=rng.choice(OBJECTS), a=a, b=b,
                                                      c=a + b if name == "addition" else a - b)
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return ("\n".join(lines) + "\n").encode("utf-8")


# ---------------------------------------------------------------- output

def finish(domain: str, records: list[dict]) -> list[dict]:
    """De-duplicated (first occurrence kept), prose texts checked again as a whole (a run of sentences can mix
    more foreign words than each of its paragraphs), texts whose sentences are boilerplate (in 3+ texts)
    dropped, shuffled with SEED, at most MAX_TEXTS."""
    if domain != "code":
        records = [r for r in records if prose_ok(domain if domain != "general" else "english", r["text"])]
    seen, unique = set(), []
    for r in records:
        if r["text"] not in seen:
            seen.add(r["text"])
            unique.append(r)
    counts = Counter(s for r in unique for s in set(split_sentences(r["text"])))
    unique = [r for r in unique if max(counts[s] for s in split_sentences(r["text"])) < 3]
    random.Random(SEED).shuffle(unique)
    return unique[:MAX_TEXTS]


def write(path: Path, records: list[dict]) -> bytes:
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(body)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=ROOT / "build" / "corpora-debs")
    ap.add_argument("--out", type=Path, default=ROOT / "src" / "flowroutes" / "data" / "corpora")
    ap.add_argument("--domains", nargs="*", default=["general", "english", "code", "russian", "italian", "spanish"])
    args = ap.parse_args(argv)
    pkgs = fetch(args.cache)
    env = groff_env(pkgs["groff-base"])
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        sys.path.insert(0, str(ROOT / "src"))
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from flowroutes.models.loading import tokenizer_only
        tok = tokenizer_only(None)
    except Exception:  # noqa: BLE001 - token counts are a report only
        tok = None
    status = 0
    samples = ROOT / "src" / "flowroutes" / "data"
    for name in ("addition", "subtraction"):
        data = arithmetic(name, samples / f"{name}.txt")
        (samples / f"{name}.txt").write_bytes(data)
        count = len(data.splitlines())
        print(f"{name:8s} texts={count:5d} (sample:{name}) sha256={hashlib.sha256(data).hexdigest()}")
    for domain in args.domains:
        if domain == "general":
            records = general_texts(pkgs)
        elif domain == "code":
            records = code_texts(pkgs)
        else:
            records = man_texts(domain, pkgs, env) + book_texts(domain, pkgs)
        records = finish(domain, records)
        data = write(args.out / f"{domain}.jsonl.gz", records)
        ntok = [len(tok(r["text"])["input_ids"]) for r in records] if tok is not None else []
        mean = f"{sum(ntok) / len(ntok):.1f}" if ntok else "n/a"
        first = f"{sum(ntok[:48]) / 48:.1f}" if len(ntok) >= 48 else "n/a"
        print(f"{domain:8s} texts={len(records):5d} mean_tokens={mean} first48_mean_tokens={first} "
              f"bytes={len(data)} sha256={hashlib.sha256(data).hexdigest()}")
        if len(records) < MIN_TEXTS:
            print(f"  {domain}: fewer than {MIN_TEXTS} texts", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
