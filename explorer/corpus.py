"""Texts and their categories: the corpora a store is built from.

This module owns the `Corpus` value (a table of texts, each with one category and optional
finer labels such as `op:addition` or `num:100`) and every way of getting one: the bundled
hand-written labelled set (`explorer/data/labelled_texts.jsonl`), the generated
chain-of-thought arithmetic set, user files (CSV, JSON Lines, Parquet), regex rule
labellers, and the CLI spec string that chooses between them. Every malformed input raises
`CorpusError` naming the file, row and column. It does not tokenize, truncate to a model
context or touch the store; texts are kept verbatim apart from stripping surrounding
whitespace.
"""

import json
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Self

import pandas as pd
import pyarrow as pa

from explorer.errors import CorpusError, markdown_escaped, quoted

COLUMNS = ("text_id", "category", "source", "text", "labels")
MAX_TEXT_CHARS = 20_000
SUPPORTED_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
LABELS_COLUMN = "labels"
BUNDLED_PATH = Path(__file__).parent / "data" / "labelled_texts.jsonl"
DEMO_CORPUS = "bundled+arithmetic"  # what the demo store is built from (the app and the CLI)
SPEC_FORMS = (
    "'bundled' (the labelled texts shipped with the explorer), "
    "'arithmetic' or 'arithmetic:N' (N generated chain-of-thought sums), "
    "several of these joined with '+' (e.g. 'bundled+arithmetic'), "
    "a path to a .csv, .jsonl, .json or .parquet file with 'text' and 'category' columns, "
    "or 'PATH?rules=RULES.json' (texts from PATH, categories from regex rules)"
)

Operation = Literal["addition", "subtraction", "multiplication", "division"]
OPERATIONS: tuple[Operation, ...] = ("addition", "subtraction", "multiplication", "division")
OPERATION_SYMBOLS: dict[Operation, str] = {
    "addition": "+",
    "subtraction": "-",
    "multiplication": "*",
    "division": "/",
}
ROUND_NUMBERS = (100, 50, 10, 20, 25, 5)
ROUND_WEIGHTS = (5, 4, 3, 2, 2, 2)
MAX_ARITHMETIC_TEXTS = 100_000
MAX_PRODUCT = 10_000


@dataclass(frozen=True)
class Corpus:
    """A named table of texts with the columns `COLUMNS`, in that order.

    `text_id` runs 0..n-1, `category` is the one label a specialist score compares against,
    `source` says which set a text came from, and `labels` holds finer labels (possibly
    none) such as `op:addition` or `num:100`.
    """

    name: str
    texts: pd.DataFrame

    def __post_init__(self) -> None:
        assert tuple(self.texts.columns) == COLUMNS, list(self.texts.columns)
        assert self.texts["text_id"].tolist() == list(range(len(self.texts)))

    def categories(self) -> list[str]:
        return sorted(self.texts["category"].unique().tolist())

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, n: int) -> Self:
        """The first `n` texts (all of them when there are fewer), for `--max-texts`."""
        if n < 1:
            raise CorpusError(
                f"Cannot keep {n} texts of corpus '{markdown_escaped(self.name)}': keep at least 1."
            )
        return replace(self, texts=self.texts.head(n).reset_index(drop=True))


def _make_corpus(
    name: str,
    categories: Sequence[str],
    texts: Sequence[str],
    source: str,
    labels: Sequence[list[str]] | None = None,
) -> Corpus:
    n_texts = len(texts)
    frame = pd.DataFrame(
        {
            "text_id": pd.Series(range(n_texts), dtype="int64"),
            "category": pd.Series(categories, dtype="str"),
            "source": pd.Series([source] * n_texts, dtype="str"),
            "text": pd.Series(texts, dtype="str"),
            "labels": pd.Series(
                list(labels) if labels is not None else [[] for _ in range(n_texts)],
                dtype=object,
            ),
        }
    )
    return Corpus(name, frame)


def _concat(corpora: Sequence[Corpus], name: str) -> Corpus:
    frame = pd.concat([corpus.texts for corpus in corpora], ignore_index=True)
    frame["text_id"] = pd.Series(range(len(frame)), dtype="int64")
    return Corpus(name, frame)


# --- validation of rows -------------------------------------------------------------------


@dataclass(frozen=True)
class _Origin:
    """Where values came from, so an error can say `file.csv, row 3, column 'text'`."""

    name: str
    unit: Literal["row", "line"]

    def at(self, number: int, column: str) -> str:
        return f"{self.name}, {self.unit} {number}, column '{column}'"


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _clean_texts(
    values: Iterable[object], numbers: Iterable[int], origin: _Origin, column: str
) -> list[str]:
    texts = []
    for number, value in zip(numbers, values, strict=True):
        where = origin.at(number, column)
        if _is_missing(value):
            raise CorpusError(f"{markdown_escaped(where)}: the text is missing.")
        if not isinstance(value, str):
            raise CorpusError(
                f"{markdown_escaped(where)}: the text must be a string, got {type(value).__name__} "
                f"{markdown_escaped(repr(value))}."
            )
        text = value.strip()
        if not text:
            raise CorpusError(f"{markdown_escaped(where)}: the text is empty.")
        if len(text) > MAX_TEXT_CHARS:
            raise CorpusError(
                f"{markdown_escaped(where)}: the text has {len(text):,} characters, more than the "
                "limit of "
                f"{MAX_TEXT_CHARS:,}. The app and extraction truncate every text to the "
                "model context anyway, so split long documents into passages."
            )
        texts.append(text)
    return texts


def _clean_categories(
    values: Iterable[object], numbers: Iterable[int], origin: _Origin, column: str
) -> list[str]:
    categories = []
    for number, value in zip(numbers, values, strict=True):
        where = origin.at(number, column)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if _is_missing(value) or (isinstance(value, str) and not value.strip()):
            raise CorpusError(f"{markdown_escaped(where)}: the category is empty.")
        if not isinstance(value, str):
            raise CorpusError(
                f"{markdown_escaped(where)}: the category must be a string, got "
                f"{type(value).__name__} {markdown_escaped(repr(value))}."
            )
        categories.append(visible_category(value.strip(), where))
    return categories


# Characters a category may not hold: controls (Cc: tab, newline, escape), formats (Cf:
# U+202E RIGHT-TO-LEFT OVERRIDE and the other bidirectional controls, U+200B ZERO WIDTH
# SPACE, soft hyphens) and line or paragraph separators (Zl, Zp). They are invisible or
# reorder the text around them, so '\u202eedoc' would show as 'code' beside the real 'code'
# in every table, chart and menu; refusing them once here keeps each category looking like
# itself everywhere it is shown.
INVISIBLE_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")


def visible_category(category: str, where: str) -> str:
    """`category`, or a CorpusError naming `where` and the first invisible character's code
    point and name."""
    for char in category:
        if unicodedata.category(char) in INVISIBLE_CATEGORIES:
            name = unicodedata.name(char, "a control character")
            raise CorpusError(
                f"{markdown_escaped(where)}: the category {quoted(category)} holds the invisible "
                f"character U+{ord(char):04X} ({markdown_escaped(name)}), which would make it "
                "look like another "
                "category; remove it."
            )
    return category


def _clean_labels(
    values: Iterable[object], numbers: Iterable[int], origin: _Origin
) -> list[list[str]]:
    """Labels are a list of strings (JSON Lines, Parquet) or one `;`-separated string (CSV)."""
    labels = []
    for number, value in zip(numbers, values, strict=True):
        if _is_missing(value):
            labels.append([])
        elif isinstance(value, str):
            labels.append([label.strip() for label in value.split(";") if label.strip()])
        elif hasattr(value, "__iter__") and all(isinstance(label, str) for label in value):
            labels.append(list(value))
        else:
            raise CorpusError(
                f"{markdown_escaped(origin.at(number, LABELS_COLUMN))}: labels must be a list of "
                "strings or "
                f"a ';'-separated string, got {markdown_escaped(repr(value))}."
            )
    return labels


# --- files --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """A corpus file read as-is: its rows, and the number a user would give each row."""

    frame: pd.DataFrame
    numbers: list[int]
    origin: _Origin


def _read_jsonl(path: Path) -> _Table:
    records, numbers = [], []
    # Split on "\n" only: str.splitlines would also split on U+2028 inside JSON strings.
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise CorpusError(
                f"{markdown_escaped(path)}, line {number}: invalid JSON "
                f"({markdown_escaped(error.msg)} at character {error.colno}). "
                "A JSON Lines file holds one JSON object per line."
            ) from error
        if not isinstance(record, dict):
            raise CorpusError(
                f"{markdown_escaped(path)}, line {number}: expected a JSON object such as "
                f'{{"text": "...", "category": "..."}}, got {type(record).__name__}.'
            )
        records.append(record)
        numbers.append(number)
    return _Table(pd.DataFrame.from_records(records), numbers, _Origin(str(path), "line"))


def _read_table(path: Path) -> _Table:
    if not path.is_file():
        raise CorpusError(f"Corpus file not found: {markdown_escaped(path)}")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise CorpusError(
            f"{markdown_escaped(path)}: unsupported file type '{markdown_escaped(path.suffix)}'. "
            f"Supported: {', '.join(SUPPORTED_SUFFIXES)} (.json is read as JSON Lines)."
        )
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
            return _Table(frame, list(range(1, len(frame) + 1)), _Origin(str(path), "row"))
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
            return _Table(frame, list(range(1, len(frame) + 1)), _Origin(str(path), "row"))
        return _read_jsonl(path)
    except UnicodeDecodeError as error:
        raise CorpusError(
            f"{markdown_escaped(path)}: not UTF-8 text ({markdown_escaped(error)})."
        ) from error
    except pd.errors.EmptyDataError as error:
        raise CorpusError(
            f"{markdown_escaped(path)}: the corpus is empty (no header and no rows)."
        ) from error
    except pd.errors.ParserError as error:
        raise CorpusError(
            f"{markdown_escaped(path)}: cannot parse the CSV file: "
            f"{markdown_escaped(str(error).strip())}"
        ) from error
    except (OSError, ValueError, pa.ArrowException) as error:
        raise CorpusError(
            f"{markdown_escaped(path)}: cannot read the {markdown_escaped(suffix)} "
            f"file: {markdown_escaped(error)}"
        ) from error


def _read_columns(path: Path, required: Sequence[str]) -> _Table:
    """Read a corpus file and check it has rows and the `required` columns."""
    table = _read_table(path)
    if table.frame.empty:
        raise CorpusError(f"{markdown_escaped(path)}: the corpus is empty (no rows).")
    found = [str(column) for column in table.frame.columns]
    missing = [column for column in required if column not in found]
    if missing:
        raise CorpusError(
            f"{markdown_escaped(path)}: missing column{'s' if len(missing) > 1 else ''} "
            f"{markdown_escaped(', '.join(repr(column) for column in missing))} "
            f"(columns found: {markdown_escaped(', '.join(repr(column) for column in found))}). "
            "Rename the columns or choose the text and category columns explicitly."
        )
    return table


def load_corpus_file(
    path: str | Path, text_column: str = "text", category_column: str = "category"
) -> Corpus:
    """Load texts and categories from a .csv, .jsonl/.json (JSON Lines) or .parquet file.

    An optional `labels` column holds finer labels: a list of strings, or in CSV one
    `;`-separated string. The corpus is named after the file stem.
    """
    path = Path(path)
    table = _read_columns(path, [text_column, category_column])
    frame, numbers, origin = table.frame, table.numbers, table.origin
    texts = _clean_texts(frame[text_column].tolist(), numbers, origin, text_column)
    categories = _clean_categories(
        frame[category_column].tolist(), numbers, origin, category_column
    )
    labels = (
        _clean_labels(frame[LABELS_COLUMN].tolist(), numbers, origin)
        if LABELS_COLUMN in frame.columns
        else None
    )
    return _make_corpus(path.stem, categories, texts, source=path.stem, labels=labels)


def bundled_corpus() -> Corpus:
    """The hand-written labelled texts: code, URLs/web, maths, non-English, social/emoji,
    formal and conversational writing."""
    corpus = load_corpus_file(BUNDLED_PATH)
    return replace(corpus, name="bundled", texts=corpus.texts.assign(source="bundled"))


# --- regex rule labelling -----------------------------------------------------------------


def _compile_rules(
    rules: Sequence[tuple[str, str]], origin: str
) -> list[tuple[str, re.Pattern[str]]]:
    if not rules:
        raise CorpusError(
            f"{markdown_escaped(origin)}: no rules; give at least one (category, regex) pair."
        )
    compiled = []
    for number, (category, pattern) in enumerate(rules, start=1):
        if not isinstance(category, str) or not category.strip():
            raise CorpusError(
                f"{markdown_escaped(origin)}: rule {number}: the category must be a "
                "non-empty string."
            )
        if not isinstance(pattern, str):
            raise CorpusError(
                f"{markdown_escaped(origin)}: rule {number} ('{markdown_escaped(category)}'): the "
                "regex must be a string, "
                f"got {markdown_escaped(repr(pattern))}."
            )
        try:
            rule = f"{origin}: rule {number}"
            compiled.append((visible_category(category.strip(), rule), re.compile(pattern)))
        except re.error as error:
            raise CorpusError(
                f"{markdown_escaped(origin)}: rule {number} ('{markdown_escaped(category)}'): "
                f"invalid regex {markdown_escaped(repr(pattern))}: {markdown_escaped(error)}."
            ) from error
    return compiled


def label_by_rules(
    texts: list[str] | pd.Series,
    rules: list[tuple[str, str]],
    default: str = "other",
    name: str = "rules",
) -> Corpus:
    """Categorise texts by regex: each text gets the category of the first rule whose regex
    matches anywhere in it (`re.search`), or `default` when none does."""
    compiled = _compile_rules(rules, origin=name)
    if not default.strip():
        raise CorpusError(
            f"{markdown_escaped(name)}: the default category must be a non-empty string."
        )
    visible_category(default, f"{name}: the default category")
    values = list(texts)
    if not values:
        raise CorpusError(f"{markdown_escaped(name)}: the corpus is empty (no texts to label).")
    clean = _clean_texts(values, range(1, len(values) + 1), _Origin(name, "row"), "text")
    categories = [
        next((category for category, regex in compiled if regex.search(text)), default)
        for text in clean
    ]
    return _make_corpus(name, categories, clean, source=name)


def load_rules_file(path: str | Path) -> list[tuple[str, str]]:
    """Read regex rules from JSON: an object `{category: regex}` or a list of
    `[category, regex]` pairs (use the list to repeat a category). Order is priority."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"Rules file not found: {markdown_escaped(path)}")
    shape = 'a JSON object {"category": "regex", ...} or a list of [category, regex] pairs'
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise CorpusError(
            f"{markdown_escaped(path)}: not UTF-8 text ({markdown_escaped(error)})."
        ) from error
    except json.JSONDecodeError as error:
        raise CorpusError(
            f"{markdown_escaped(path)}, line {error.lineno}: invalid JSON "
            f"({markdown_escaped(error.msg)}). A rules file is {markdown_escaped(shape)}."
        ) from error
    if isinstance(raw, dict):
        rules = list(raw.items())
    elif isinstance(raw, list):
        rules = []
        for number, entry in enumerate(raw, start=1):
            if not (isinstance(entry, list) and len(entry) == 2):
                raise CorpusError(
                    f"{markdown_escaped(path)}: rule {number}: expected a [category, regex] pair, "
                    f"got {markdown_escaped(repr(entry))}."
                )
            rules.append((entry[0], entry[1]))
    else:
        raise CorpusError(
            f"{markdown_escaped(path)}: a rules file is {markdown_escaped(shape)}, "
            f"got {type(raw).__name__}."
        )
    _compile_rules(rules, origin=str(path))
    return rules


def _rules_corpus(texts_path: Path, rules_path: Path) -> Corpus:
    rules = load_rules_file(rules_path)
    table = _read_columns(texts_path, ["text"])
    texts = _clean_texts(table.frame["text"].tolist(), table.numbers, table.origin, "text")
    return label_by_rules(texts, rules, name=texts_path.stem)


# --- generated chain-of-thought arithmetic ------------------------------------------------


@dataclass(frozen=True)
class _Step:
    left: int
    operation: Operation
    right: int
    result: int

    def __str__(self) -> str:
        return f"{self.left}{OPERATION_SYMBOLS[self.operation]}{self.right}={self.result}"


def _operand(rng: random.Random) -> int:
    """Half the time a round number (100 and 50 most often), so value specialists exist."""
    if rng.random() < 0.5:
        return rng.choices(ROUND_NUMBERS, weights=ROUND_WEIGHTS)[0]
    return rng.randint(2, 99)


def _step(rng: random.Random, left: int, operation: Operation) -> _Step | None:
    """One step applied to `left`, or None when `operation` cannot apply to it cleanly."""
    match operation:
        case "addition":
            right = _operand(rng)
            return _Step(left, operation, right, left + right)
        case "subtraction":
            if left < 2:
                return None
            right = _operand(rng)
            if right >= left:
                right = rng.randint(1, left - 1)
            return _Step(left, operation, right, left - right)
        case "multiplication":
            right = _operand(rng) if rng.random() < 0.5 else rng.randint(2, 12)
            if left * right > MAX_PRODUCT:
                return None
            return _Step(left, operation, right, left * right)
        case "division":
            divisors = [d for d in range(2, min(left, 101)) if left % d == 0]
            if not divisors:
                return None
            round_divisors = [d for d in divisors if d in ROUND_NUMBERS]
            use_round = round_divisors and rng.random() < 0.6
            right = rng.choice(round_divisors if use_round else divisors)
            return _Step(left, operation, right, left // right)


def _chain(rng: random.Random) -> list[_Step]:
    """2-4 steps, each starting from the previous result, leaning towards one operation."""
    theme = rng.choice(OPERATIONS)
    value = _operand(rng)
    steps = []
    for _ in range(rng.randint(2, 4)):
        preferred = theme if rng.random() < 0.6 else rng.choice(OPERATIONS)
        fallbacks = [operation for operation in OPERATIONS if operation != preferred]
        rng.shuffle(fallbacks)
        # Addition always applies, so some operation is always found.
        step = next(
            step
            for operation in (preferred, *fallbacks)
            if (step := _step(rng, value, operation)) is not None
        )
        steps.append(step)
        value = step.result
    return steps


def _dominant_operation(steps: Sequence[_Step]) -> Operation:
    """The operation of most steps; ties go to the one used first."""
    return Counter(step.operation for step in steps).most_common(1)[0][0]


def _chain_labels(steps: Sequence[_Step]) -> list[str]:
    used = {step.operation for step in steps}
    numbers = sorted({n for step in steps for n in (step.left, step.right, step.result)})
    return [f"op:{op}" for op in OPERATIONS if op in used] + [f"num:{n}" for n in numbers]


def arithmetic_corpus(n_texts: int = 400, seed: int = 0) -> Corpus:
    """Distinct chain-of-thought sums such as `20*3=60 | 60+5=65 | 65-15=50`, deterministic
    from `seed`. The category is the dominant operation; labels name every operation
    (`op:addition`) and every number (`num:100`) in the text."""
    if not 1 <= n_texts <= MAX_ARITHMETIC_TEXTS:
        raise CorpusError(
            f"The arithmetic corpus takes 1 to {MAX_ARITHMETIC_TEXTS:,} texts, got {n_texts}."
        )
    rng = random.Random(seed)
    chains: dict[str, list[_Step]] = {}
    while len(chains) < n_texts:
        steps = _chain(rng)
        chains.setdefault(" | ".join(str(step) for step in steps), steps)
    return _make_corpus(
        "arithmetic",
        categories=[_dominant_operation(steps) for steps in chains.values()],
        texts=list(chains),
        source="arithmetic",
        labels=[_chain_labels(steps) for steps in chains.values()],
    )


# --- CLI spec -----------------------------------------------------------------------------


def _resolve_one(spec: str) -> Corpus:
    if spec == "bundled":
        return bundled_corpus()
    if spec == "arithmetic":
        return arithmetic_corpus()
    if spec.startswith("arithmetic:"):
        count = spec.removeprefix("arithmetic:")
        if not count.isdecimal() or len(count) > 9:
            raise CorpusError(
                f"'{markdown_escaped(spec[:60])}': N in 'arithmetic:N' must be a whole number of "
                "at most 9 digits."
            )
        return arithmetic_corpus(int(count))
    if "?rules=" in spec:
        texts_path, _, rules_path = spec.partition("?rules=")
        return _rules_corpus(Path(texts_path), Path(rules_path))
    if Path(spec).exists():
        return load_corpus_file(spec)
    raise CorpusError(
        f"Unknown corpus '{markdown_escaped(spec)}': not a built-in corpus and no such file. "
        f"Valid forms: {SPEC_FORMS}."
    )


def resolve_corpus(spec: str) -> Corpus:
    """The corpus a CLI spec names; see `SPEC_FORMS`. Parts joined with '+' are
    concatenated in order and `text_id` is renumbered."""
    spec = spec.strip()
    parts = [spec] if Path(spec).is_file() else [part.strip() for part in spec.split("+")]
    if len(parts) == 1:
        return _resolve_one(parts[0])
    return _concat([_resolve_one(part) for part in parts], name=spec)
