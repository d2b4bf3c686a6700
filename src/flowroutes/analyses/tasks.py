"""Generators of the paper's task data (sec. 3): indirect object identification and greater-than.

Pure Python, deterministic for a seed; never loads a model or a tokenizer.

Tokenisation facts these generators rely on (checked once with SmolLM2-135M-Instruct's tokenizer):
every name in `NAMES` (and every place, object and noun below) is a single token when preceded by a space,
so the IOI answer " Mary" is exactly one token. SmolLM2 splits numbers into single digits and a space
(" 1732" -> " ", "1", "7", "3", "2"), so after "... to the year 17" the model predicts only the *first digit* of
the end year. The greater-than examples therefore use YY in 10..89 and set `answer` = first digit of YY + 1
(every year starting with it is > YY) and `wrong` = first digit of YY - 1 (every year starting with it is < YY);
the metric used for them is the first-digit probability difference `P(d > d1) - P(d < d1)` (see
`greater_than_digit_sets`), the digit-level version of the paper's `p(> YY) - p(<= YY)`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..errors import FlowroutesError

#: single tokens (with a leading space) for SmolLM2's tokenizer, verified with the real tokenizer
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
#: nouns of the greater-than template (single tokens for SmolLM2)
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


def ioi(n: int, seed: int = 0) -> list[TaskExample]:
    """`n` IOI examples, half ABBA and half BABA order, over many names, places, objects and templates.

    The contrastive prompt replaces the repeated subject with a third name ("... Tom gave a drink to"),
    so that nothing in it identifies the indirect object (the paper's contrastive template).
    """
    _check_n(n)
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b, c = rng.sample(NAMES, 3)
        place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
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


def greater_than(n: int, seed: int = 0, contrastive_yy: str = "01") -> list[TaskExample]:
    """`n` greater-than examples "The <noun> lasted from the year XXYY to the year XX".

    XX in 11..17, YY in 10..89 (so that the first digit d1 of YY has a strictly greater and a strictly smaller
    digit). answer = str(d1 + 1), wrong = str(d1 - 1): the next token is the first digit of the end year
    (SmolLM2 tokenises digits one by one). The contrastive prompt uses YY = `contrastive_yy` ("01" or "00"),
    for which every continuation is (almost) correct.
    """
    _check_n(n)
    if contrastive_yy not in ("01", "00"):
        raise FlowroutesError(f"contrastive_yy must be '01' or '00', not {contrastive_yy!r}")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        noun = rng.choice(GT_NOUNS)
        xx = rng.randint(11, 17)
        yy = rng.randint(10, 89)
        d1 = yy // 10
        prompt = f"The {noun} lasted from the year {xx}{yy:02d} to the year {xx}"
        contrastive = f"The {noun} lasted from the year {xx}{contrastive_yy} to the year {xx}"
        out.append(TaskExample(
            prompt=prompt, answer=str(d1 + 1), wrong=str(d1 - 1), contrastive=contrastive,
            meta={"task": "greater-than", "noun": noun, "xx": f"{xx}", "yy": f"{yy:02d}", "first_digit": d1,
                  "contrastive_yy": contrastive_yy},
        ))
    return out


def greater_than_digit_sets(example: TaskExample) -> tuple[list[str], list[str]]:
    """(digits that make the year greater, digits that make it smaller) for the first digit of the end year.

    The first-digit probability difference is `sum P(greater) - sum P(smaller)`; the digit equal to d1 is
    ambiguous at this position and belongs to neither set.
    """
    d1 = int(example.meta["first_digit"])
    return [str(d) for d in range(d1 + 1, 10)], [str(d) for d in range(0, d1)]


def task_examples(name: str, n: int, seed: int = 0) -> list[TaskExample]:
    """Dispatch on the task name: "ioi", "greater-than" (contrastive YY = 01) or "greater-than-00"."""
    if name == "ioi":
        return ioi(n, seed)
    if name == "greater-than":
        return greater_than(n, seed, "01")
    if name == "greater-than-00":
        return greater_than(n, seed, "00")
    raise FlowroutesError(f"unknown task '{name}': choose one of {', '.join(TASKS)}")


def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise FlowroutesError(f"the number of examples must be a positive integer, not {n!r}")
