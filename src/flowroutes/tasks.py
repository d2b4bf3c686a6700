"""The paper's task data (sec. 3: IOI, greater-than) and each task's metric, shared by analyses and patching.

Pure Python, deterministic for a seed; a tokenizer may be passed in to fit the data to it, but this module never
loads a model or a tokenizer and never runs a model.

Fitting a tokenizer. IOI keeps only the names, places and objects that are one token after a space (`ioi_vocabulary`),
so the answer " Mary" is a single token. Greater-than has two forms (`greater_than_form`):
- "two-digit" (the paper's, GPT-2-like tokenizers): "... to the year 17" is followed by one two-digit token "YY";
  YY in 02..98, answer YY+1, wrong YY-1, metric p(> YY) - p(<= YY) summed over the tokens "00".."99". Only years
  XXYY that the tokenizer splits as [.. XX][YY] are used (Hanna et al. 2023 filter their years the same way).
- "digit" (tokenizers that split numbers into digits, e.g. SmolLM2: " 1732" -> " ", "1", "7", "3", "2"): the next
  token is the first digit d1 of the end year; YY in 10..89, answer d1+1, wrong d1-1, metric
  p(digit > d1) - p(digit < d1), the digit-level version of the paper's metric. It is the form without a tokenizer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from .errors import FlowroutesError

#: candidate fillers; with a tokenizer, `ioi` keeps those that are one token after a space (all are, for SmolLM2)
NAMES: tuple[str, ...] = (
    "Mary", "John", "Tom", "James", "Michael", "David", "Robert", "William", "Richard", "Joseph", "Thomas",
    "Charles", "Daniel", "Matthew", "Anthony", "Mark", "Paul", "Steven", "Andrew", "Kevin", "Brian", "George",
    "Edward", "Ronald", "Timothy", "Jason", "Jeffrey", "Ryan", "Jacob", "Gary", "Nicholas", "Eric", "Jonathan",
    "Stephen", "Larry", "Justin", "Scott", "Frank", "Benjamin", "Gregory", "Samuel", "Raymond", "Patrick",
    "Alexander", "Jack", "Dennis", "Jerry", "Tyler", "Aaron", "Henry", "Adam", "Peter", "Nathan", "Walter",
    "Harold", "Carl", "Arthur", "Gerald", "Roger", "Keith", "Jeremy", "Terry", "Lawrence", "Sean", "Albert",
    "Joe", "Ethan", "Austin", "Jesse", "Billy", "Bruce", "Bryan", "Ralph", "Roy", "Eugene", "Wayne", "Louis",
    "Alan", "Juan", "Noah", "Russell", "Harry", "Philip", "Vincent", "Gabriel", "Bobby", "Johnny", "Howard",
    "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah", "Karen", "Nancy",
    "Lisa", "Betty", "Margaret", "Sandra", "Ashley", "Emily", "Michelle", "Dorothy", "Carol", "Amanda", "Melissa",
    "Deborah", "Stephanie", "Rebecca", "Laura", "Sharon", "Kathleen", "Amy", "Shirley", "Angela", "Helen",
    "Anna", "Nicole", "Emma", "Samantha", "Katherine", "Christine", "Rachel", "Catherine", "Janet", "Ruth",
    "Maria", "Heather", "Diane", "Virginia", "Julie", "Joyce", "Victoria", "Olivia", "Kelly", "Christina",
    "Lauren", "Joan", "Judith", "Andrea", "Hannah", "Martha", "Frances", "Ann", "Teresa", "Sara", "Jean",
    "Alice", "Julia", "Judy", "Grace", "Sophia", "Marie", "Diana", "Isabella", "Charlotte", "Lucy", "Max",
    "Ben", "Sam", "Dan", "Tim", "Kate", "Jane", "Bob", "Bill", "Jim", "Mike", "Alex", "Chris", "Nick", "Tony",
    "Ted", "Ian", "Leo", "Luke", "Eve", "Omar", "Hugo", "Oscar", "Felix", "Victor", "Martin", "Simon",
    "Carlos", "Pedro", "Anne", "Ella", "Lily", "Mia", "Sophie",
)
PLACES: tuple[str, ...] = (
    "store", "garden", "school", "park", "station", "house", "office", "market", "beach", "restaurant",
    "library", "hospital", "church", "museum", "bank", "airport", "theater", "kitchen", "river", "hotel", "zoo",
    "farm", "lake", "gym", "mall",
)
OBJECTS: tuple[str, ...] = (
    "drink", "book", "ball", "bone", "kiss", "gift", "letter", "pen", "key", "bag", "cake", "apple", "ring",
    "phone", "flower", "card", "coin", "hat", "toy", "map", "basket", "necklace", "snack", "ticket", "note",
)
#: nouns of the greater-than template (single tokens for SmolLM2; their token count never matters to the metric)
GT_NOUNS: tuple[str, ...] = (
    "war", "trip", "meeting", "project", "reign", "drought", "strike", "empire", "dynasty", "campaign",
    "journey", "expedition", "tour", "festival", "contract", "occupation", "construction", "period", "famine",
    "pilgrimage", "crusade", "treaty", "voyage",
)

#: IOI templates; {A} is the indirect object (the answer), {B} the subject repeated in the second clause.
#: "ABBA": A first; the BABA order is made by swapping the two names of the first clause.
IOI_TEMPLATES: tuple[str, ...] = (
    "When {A} and {B} went to the {place}, {S} gave a {obj} to",
    "When {A} and {B} got a {obj} at the {place}, {S} decided to give it to",
    "After {A} and {B} went to the {place}, {S} gave a {obj} to",
    "Then, {A} and {B} went to the {place}. {S} gave a {obj} to",
    "While {A} and {B} were working at the {place}, {S} gave a {obj} to",
    "Friends {A} and {B} found a {obj} at the {place}. {S} gave it to",
    "The {place} {A} and {B} went to had a {obj}. {S} gave it to",
    "Afterwards, {A} and {B} went to the {place}. {S} gave a {obj} to",
)

TASKS: tuple[str, ...] = ("ioi", "greater-than", "greater-than-00")
FORMS: tuple[str, ...] = ("two-digit", "digit")
#: the text whose continuation decides the greater-than form (the year's century, then the two-digit rest)
GT_FORM_PREFIX = "The war lasted from the year 1732 to the year 17"
_GT_YEAR_PREFIX = "The war lasted from the year "
_CENTURIES = range(11, 18)  # XX in 11..17 (the paper's / Hanna et al.'s)


@dataclass
class TaskExample:
    """One prediction of a task, with the prompt of its contrastive version.

    answer: the correct next token text (with its leading space for IOI, e.g. " Mary"); wrong: the distractor
    (e.g. the subject " John"); contrastive: the same example in the paper's contrastive template.
    """

    prompt: str
    answer: str
    wrong: str
    contrastive: str
    meta: dict = field(default_factory=dict)


# --- IOI -----------------------------------------------------------------------------------------------------------


def _one_token_after_space(tokenizer: Any, word: str) -> bool:
    """Whether " word" is one token (an unknown-word token counts: the accuracy check of patching catches it)."""
    return len(tokenizer.encode(" " + word, add_special_tokens=False)) == 1


def ioi_vocabulary(tokenizer: Any = None) -> dict:
    """The IOI fillers kept for `tokenizer` (those that are one token after a space; all without a tokenizer).

    Returns {"names": [...], "places": [...], "objects": [...], "kept": {"names": k, ...}, "total": {"names": t,
    ...}}; the lists keep the order of NAMES, PLACES and OBJECTS.
    """
    out: dict = {"kept": {}, "total": {}}
    for key, words in (("names", NAMES), ("places", PLACES), ("objects", OBJECTS)):
        kept = [w for w in words if tokenizer is None or _one_token_after_space(tokenizer, w)]
        out[key] = kept
        out["kept"][key] = len(kept)
        out["total"][key] = len(words)
    return out


def ioi(n: int, seed: int = 0, tokenizer: Any = None) -> list[TaskExample]:
    """`n` IOI examples, half ABBA and half BABA order, over many names, places, objects and templates.

    The contrastive prompt replaces the repeated subject with a third name ("... Tom gave a drink to"),
    so that nothing in it identifies the indirect object (the paper's contrastive template). With a tokenizer,
    only names, places and objects that are one token after a space are used (see `ioi_vocabulary`).
    """
    _check_n(n)
    vocab = ioi_vocabulary(tokenizer)
    names, places, objects = tuple(vocab["names"]), tuple(vocab["places"]), tuple(vocab["objects"])
    if len(names) < 3 or not places or not objects:
        kept, total = vocab["kept"], vocab["total"]
        raise FlowroutesError(
            f"this tokenizer keeps too few IOI fillers as single tokens (names {kept['names']}/{total['names']}, "
            f"places {kept['places']}/{total['places']}, objects {kept['objects']}/{total['objects']}; "
            "need 3 names, 1 place, 1 object): use a model whose tokenizer has whole-word tokens"
        )
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b, c = rng.sample(names, 3)
        place, obj = rng.choice(places), rng.choice(objects)
        t = rng.randrange(len(IOI_TEMPLATES))
        template = IOI_TEMPLATES[t]
        order = "ABBA" if i % 2 == 0 else "BABA"
        first, second = (a, b) if order == "ABBA" else (b, a)
        prompt = template.format(A=first, B=second, S=b, place=place, obj=obj)
        contrastive = template.format(A=first, B=second, S=c, place=place, obj=obj)
        out.append(TaskExample(
            prompt=prompt, answer=" " + a, wrong=" " + b, contrastive=contrastive,
            meta={"task": "ioi", "order": order, "template": t, "io": a, "subject": b, "third": c,
                  "place": place, "object": obj},
        ))
    return out


# --- greater-than --------------------------------------------------------------------------------------------------


def _splits_as_two_digits(tokenizer: Any, prefix: str, yy: str) -> bool:
    """Whether `prefix + yy` is the tokens of `prefix` plus exactly one token that decodes to `yy`."""
    head = tokenizer.encode(prefix, add_special_tokens=False)
    full = tokenizer.encode(prefix + yy, add_special_tokens=False)
    return len(full) == len(head) + 1 and full[:-1] == head and tokenizer.decode(full[-1:]) == yy


def greater_than_form(tokenizer: Any = None) -> str:
    """"two-digit" or "digit": the form of greater-than that fits `tokenizer` ("digit" without one).

    "two-digit" when (i) every YY in 00..99 is, on its own, one token that decodes to YY (the metric sums their
    probabilities) and (ii) for at least half of them, `GT_FORM_PREFIX + YY` tokenizes as the tokens of the prefix
    plus that one token. (ii) asks for most YY, not all: a BPE vocabulary may hold some whole years (a token
    " 1700" say), and `greater_than` then leaves those years out instead of dropping the paper's form.
    """
    if tokenizer is None:
        return "digit"
    years = [f"{yy:02d}" for yy in range(100)]
    for yy in years:
        ids = tokenizer.encode(yy, add_special_tokens=False)
        if len(ids) != 1 or tokenizer.decode(ids) != yy:
            return "digit"
    split = sum(_splits_as_two_digits(tokenizer, GT_FORM_PREFIX, yy) for yy in years)
    return "two-digit" if 2 * split >= len(years) else "digit"


def _two_digit_years(tokenizer: Any, contrastive_yy: str) -> list[tuple[int, int]]:
    """(XX, YY) pairs, XX in 11..17 and YY in 02..98, whose years XXYY and XX`contrastive_yy` the tokenizer splits
    as [.. XX][YY] (all pairs without a tokenizer)."""
    pairs = []
    for xx in _CENTURIES:
        prefix = f"{_GT_YEAR_PREFIX}{xx}"
        if tokenizer is not None and not _splits_as_two_digits(tokenizer, prefix, contrastive_yy):
            continue
        pairs += [(xx, yy) for yy in range(2, 99)
                  if tokenizer is None or _splits_as_two_digits(tokenizer, prefix, f"{yy:02d}")]
    return pairs


def greater_than(n: int, seed: int = 0, contrastive_yy: str = "01", tokenizer: Any = None,
                 form: str | None = None) -> list[TaskExample]:
    """`n` greater-than examples "The <noun> lasted from the year XXYY to the year XX", XX in 11..17.

    form: "two-digit" or "digit" (see the module docstring); None picks it with `greater_than_form(tokenizer)`.
    two-digit: YY in 02..98, answer = f"{YY+1:02d}", wrong = f"{YY-1:02d}"; with a tokenizer, only years it splits
    as [.. XX][YY] (and whose contrastive year XX`contrastive_yy` splits so too) are drawn.
    digit: YY in 10..89 (so that the first digit d1 of YY has a strictly greater and a strictly smaller digit),
    answer = str(d1 + 1), wrong = str(d1 - 1).
    The contrastive prompt uses YY = `contrastive_yy` ("01" or "00"), for which every continuation is (almost)
    correct. meta["form"] records the form.
    """
    _check_n(n)
    if contrastive_yy not in ("01", "00"):
        raise FlowroutesError(f"contrastive_yy must be '01' or '00', not {contrastive_yy!r}")
    if form is None:
        form = greater_than_form(tokenizer)
    if form not in FORMS:
        raise FlowroutesError(f"unknown greater-than form {form!r}: choose one of {', '.join(FORMS)}")
    rng = random.Random(seed)
    pairs = _two_digit_years(tokenizer, contrastive_yy) if form == "two-digit" else []
    if form == "two-digit" and not pairs:
        raise FlowroutesError(
            f"this tokenizer splits no year XXYY (XX in 11..17, YY in 02..98, with XX{contrastive_yy}) as XX then YY: "
            "the two-digit greater-than form cannot be built for it; use form='digit'"
        )
    out = []
    for _ in range(n):
        noun = rng.choice(GT_NOUNS)
        if form == "two-digit":
            xx, yy = rng.choice(pairs)
            answer, wrong = f"{yy + 1:02d}", f"{yy - 1:02d}"
        else:
            xx, yy = rng.randint(11, 17), rng.randint(10, 89)
            answer, wrong = str(yy // 10 + 1), str(yy // 10 - 1)
        prompt = f"The {noun} lasted from the year {xx}{yy:02d} to the year {xx}"
        contrastive = f"The {noun} lasted from the year {xx}{contrastive_yy} to the year {xx}"
        meta = {"task": "greater-than", "form": form, "noun": noun, "xx": f"{xx}", "yy": f"{yy:02d}",
                "contrastive_yy": contrastive_yy}
        if form == "digit":
            meta["first_digit"] = yy // 10
        out.append(TaskExample(prompt=prompt, answer=answer, wrong=wrong, contrastive=contrastive, meta=meta))
    return out


# --- each task's metric --------------------------------------------------------------------------------------------


def _gt_form(example: TaskExample) -> str | None:
    """The greater-than form of `example`, or None for other tasks (examples made before forms existed: "digit")."""
    if example.meta.get("task") != "greater-than":
        return None
    return example.meta.get("form", "digit")


def metric_tokens(example: TaskExample) -> tuple[list[str], list[str]]:
    """(token texts whose probabilities count positively, those counting negatively) in the example's metric.

    IOI and any other task: ([answer], [wrong]). Greater-than, two-digit form: (YY+1..99, 00..YY) as two-character
    strings. Digit form: (digits > d1, digits < d1); the digit d1 itself is ambiguous there and in neither list.
    """
    form = _gt_form(example)
    if form == "two-digit":
        yy = int(example.meta["yy"])
        return [f"{y:02d}" for y in range(yy + 1, 100)], [f"{y:02d}" for y in range(0, yy + 1)]
    if form == "digit":
        d1 = int(example.meta["first_digit"])
        return [str(d) for d in range(d1 + 1, 10)], [str(d) for d in range(0, d1)]
    return [example.answer], [example.wrong]


def metric_kind(example: TaskExample) -> str:
    """"prob_diff" for greater-than (probability difference), "logit_diff" otherwise (IOI's logit difference)."""
    return "prob_diff" if _gt_form(example) is not None else "logit_diff"


def task_metric(example: TaskExample, probs: dict[str, float]) -> float:
    """sum of probs of `metric_tokens` plus - sum of minus; tokens missing from `probs` count 0."""
    plus, minus = metric_tokens(example)
    return float(sum(probs.get(t, 0.0) for t in plus) - sum(probs.get(t, 0.0) for t in minus))


def top_valid(example: TaskExample, top_token: str) -> bool:
    """Whether the model's top prediction is a right answer.

    IOI: top == answer. Greater-than two-digit: a two-digit token greater than YY. Digit form: a first digit
    some valid year starts with (greater than d1, or d1 itself).
    """
    form = _gt_form(example)
    if form == "two-digit":
        return len(top_token) == 2 and top_token.isdigit() and int(top_token) > int(example.meta["yy"])
    if form == "digit":
        return top_token in metric_tokens(example)[0] or top_token == str(example.meta["first_digit"])
    return top_token == example.answer


#: how `describe_form` names the digit form (the claims read it to know the form a run used)
DIGIT_FORM = "greater-than, digit form: p(first digit > d1) - p(first digit < d1) over single digits"


def describe_form(examples: list[TaskExample]) -> str:
    """One line naming the task, its form and its metric (the distinct ones, joined, if `examples` mix them)."""
    lines: list[str] = []
    for ex in examples:
        form, task = _gt_form(ex), ex.meta.get("task")
        if form == "two-digit":
            line = "greater-than, two-digit form: p(> YY) - p(<= YY) over two-digit tokens"
        elif form == "digit":
            line = DIGIT_FORM
        elif task == "ioi":
            line = "ioi: logit(indirect object) - logit(subject), single-token names"
        else:
            line = f"{task or 'custom'}: logit(answer) - logit(wrong)"
        if line not in lines:
            lines.append(line)
    return "; ".join(lines) if lines else "no examples"


def task_examples(name: str, n: int, seed: int = 0, tokenizer: Any = None) -> list[TaskExample]:
    """Dispatch on the task name: "ioi", "greater-than" (contrastive YY = 01) or "greater-than-00"; `tokenizer`
    fits the data to a model (see `ioi` and `greater_than`)."""
    if name == "ioi":
        return ioi(n, seed, tokenizer=tokenizer)
    if name == "greater-than":
        return greater_than(n, seed, "01", tokenizer=tokenizer)
    if name == "greater-than-00":
        return greater_than(n, seed, "00", tokenizer=tokenizer)
    raise FlowroutesError(f"unknown task '{name}': choose one of {', '.join(TASKS)}")


def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise FlowroutesError(f"the number of examples must be a positive integer, not {n!r}")
