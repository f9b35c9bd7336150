"""ListOps (LRA, Tay et al. 2021, §3.1): the value of a nested list-operator expression.

An expression is a tree: an operator node ``[OP a1 … ak ]`` applies MIN, MAX, MED (the median,
rounded down) or SM (sum mod 10) to its ``2 … 10`` arguments, each a digit ``0 … 9`` or another
expression; the label is the value of the whole expression, one of ten classes. LRA writes
the released files ``basic_{train,val,test}.tsv`` with a parenthesis around every application
(``( ( ( [MAX 2 ) 9 ) ] )``); S4's tokenisation, used here, drops the parentheses and appends
an end-of-sequence token, so the model reads ``[MAX 2 9 ] <eos>``.

Vocabulary (17 ids; S4's has one more, an ``<unk>`` that ListOps never produces):

    0 <pad>   1 <eos>   2 … 11 the digits 0 … 9   12 [MIN   13 [MAX   14 [MED   15 [SM   16 ]

The generator samples trees as LRA's ``listops.py`` does and keeps those whose token count
(without parentheses or ``<eos>``) lies strictly between 500 and 2000, each distinct tree once.
Every draw is ``random.Random(seed).random()``, the one stream Python guarantees to repeat
across versions, so a seed gives the same data on every machine.
"""

from __future__ import annotations

import dataclasses
import pathlib
import random
from typing import ClassVar, Iterator

import numpy as np

from ssmjax.data.lra.tasks import FileTask, SequenceField, missing_files

PAD, EOS = 0, 1
FIRST_DIGIT = 2
MIN, MAX, MED, SUM_MOD = 12, 13, 14, 15
CLOSE = 16
VOCAB_SIZE = 17
OPERATORS = (MIN, MAX, MED, SUM_MOD)
NUM_CLASSES = 10

# The released files' spelling of every token the model reads; parentheses carry no token.
TOKEN_IDS = {str(digit): FIRST_DIGIT + digit for digit in range(10)}
TOKEN_IDS.update({"[MIN": MIN, "[MAX": MAX, "[MED": MED, "[SM": SUM_MOD, "]": CLOSE})
PARENTHESES = ("(", ")")

# LRA's generator and its defaults. Its constant VALUE_P
# = 0.25 is the probability of an *operator*: a node above the depth limit becomes a digit when
# its uniform draw exceeds 0.25, an operator otherwise.
OPERATOR_PROBABILITY = 0.25
MAX_DEPTH = 10
MAX_ARGUMENTS = 10
MIN_TOKENS, MAX_TOKENS = 500, 2000  # kept when MIN_TOKENS < length < MAX_TOKENS


class _TooLong(Exception):
    """A tree outgrew MAX_TOKENS while being drawn; it would be rejected anyway."""


def _apply(operator: int, arguments: list[int]) -> int:
    if operator == MIN:
        return min(arguments)
    if operator == MAX:
        return max(arguments)
    if operator == SUM_MOD:
        return sum(arguments) % 10
    ordered = sorted(arguments)  # MED: LRA takes int(np.median), the mean of the middle two
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) // 2


def sample_expression(rng: random.Random, max_tokens: int = MAX_TOKENS) -> tuple[list[int], int] | None:
    """One tree of LRA's distribution: its token ids in reading order and its value, or None
    when it reaches ``max_tokens`` tokens (drawing stops there: it could only be rejected).

    A node at depth ``d`` (the root is at depth 1) is an operator with probability
    :data:`OPERATOR_PROBABILITY` if ``d < MAX_DEPTH`` and a digit otherwise; an operator has
    ``2 … MAX_ARGUMENTS`` arguments, all uniform.
    """
    tokens: list[int] = []

    def node(depth: int) -> int:
        if depth >= MAX_DEPTH or rng.random() > OPERATOR_PROBABILITY:
            digit = int(rng.random() * 10)
            tokens.append(FIRST_DIGIT + digit)
            return digit
        if len(tokens) >= max_tokens:
            raise _TooLong
        arity = 2 + int(rng.random() * (MAX_ARGUMENTS - 1))
        operator = OPERATORS[int(rng.random() * len(OPERATORS))]
        tokens.append(operator)
        arguments = [node(depth + 1) for _ in range(arity)]
        tokens.append(CLOSE)
        return _apply(operator, arguments)

    try:
        value = node(1)
    except _TooLong:
        return None
    return (tokens, value) if len(tokens) < max_tokens else None


def generate(examples: int, seed: int) -> Iterator[tuple[np.ndarray, int]]:
    """``examples`` distinct expressions with MIN_TOKENS < length < MAX_TOKENS, drawn in order
    from one seeded stream: ``(tokens (length,) uint8, value)``. The first ``n`` of a larger
    request are the ``n`` of a smaller one."""
    rng = random.Random(seed)
    seen: set[bytes] = set()
    while len(seen) < examples:
        drawn = sample_expression(rng)
        if drawn is None or len(drawn[0]) <= MIN_TOKENS:
            continue
        tokens = np.asarray(drawn[0], dtype=np.uint8)
        key = tokens.tobytes()
        if key not in seen:
            seen.add(key)
            yield tokens, drawn[1]


def tokenize(source: str) -> np.ndarray:
    """``(length,) uint8`` token ids of a released ``Source`` string (parentheses dropped);
    a token outside the vocabulary is a ValueError naming it."""
    try:
        return np.asarray([TOKEN_IDS[token] for token in source.split() if token not in PARENTHESES],
                          dtype=np.uint8)
    except KeyError as error:
        raise ValueError(f"token {error.args[0]!r} is not ListOps'; expected one of "
                         f"{sorted(TOKEN_IDS)} or a parenthesis") from None


RELEASE_FILES = {"train": "basic_train.tsv", "validation": "basic_val.tsv", "test": "basic_test.tsv"}
RELEASE_HEADER = "Source\tTarget"
DIGITS = frozenset("0123456789")


def read_release(path: pathlib.Path) -> Iterator[dict[str, np.ndarray | int]]:
    """Examples ``{"tokens": (length,) uint8, "label": int}`` of one released TSV, in file order."""
    with open(path, encoding="utf-8") as lines:
        header = lines.readline().rstrip("\r\n")
        if header != RELEASE_HEADER:
            raise ValueError(f"{path} begins with {header[:40]!r}, expected the header "
                             f"{RELEASE_HEADER!r}")
        for number, line in enumerate(lines, start=2):
            if not line.strip():
                continue
            source, separator, target = line.rstrip("\r\n").rpartition("\t")
            if not separator or target not in DIGITS:
                raise ValueError(f"{path}, line {number}: expected 'Source<TAB>Target' with a "
                                 f"target 0-9, got {line[:60]!r}")
            try:
                tokens = tokenize(source)
            except ValueError as error:
                raise ValueError(f"{path}, line {number}: {error}") from None
            yield {"tokens": tokens, "label": int(target)}


@dataclasses.dataclass(frozen=True)
class ListOps(FileTask):
    """LRA ListOps as S4 reads it: ``inputs (b, max_length)`` token ids (the vocabulary of the
    module docstring; the expression, ``<eos>``, then padding), ``mask``, ``label (b,)`` 0-9.

    Args:
        data_dir: where tensorflow-datasets keeps the prepared data (None: its default,
            ``~/tensorflow_datasets``).
        manual_dir: a directory holding LRA's released ``basic_train.tsv``, ``basic_val.tsv``
            and ``basic_test.tsv`` (``lra_release/listops-1000/``); None generates the data.
        max_length: padded length; an expression longer than ``max_length − 1`` is cut there
            (the released and generated ones are shorter than 2000).
        generation_seed: seed of the generated data.
        train_examples, validation_examples, test_examples: sizes of the generated splits
            (LRA's 96,000 / 2,000 / 2,000).
    """

    max_length: int = 2048
    generation_seed: int = 0
    train_examples: int = 96_000
    validation_examples: int = 2_000
    test_examples: int = 2_000

    builder_name: ClassVar[str] = "lra_listops"
    fields: ClassVar[tuple[SequenceField, ...]] = (SequenceField("tokens", "inputs", "mask"),)
    token_offset: ClassVar[int] = 0
    end_token: ClassVar[int | None] = EOS
    vocab_size: ClassVar[int] = VOCAB_SIZE
    num_classes: ClassVar[int] = NUM_CLASSES

    def __post_init__(self):
        super().__post_init__()
        if self.max_length < 2:
            raise ValueError(f"max_length is {self.max_length}, expected >= 2 (a token and <eos>)")
        for name in ("train_examples", "validation_examples", "test_examples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} is {getattr(self, name)}, expected a positive integer")

    @property
    def builder_config_name(self) -> str:
        if self.manual_dir is not None:
            return "lra_release"
        return (f"generated_seed{self.generation_seed}_{self.train_examples}"
                f"_{self.validation_examples}_{self.test_examples}")

    def check_files(self) -> None:
        if self.manual_dir is None:
            return
        paths = [pathlib.Path(self.manual_dir) / name for name in RELEASE_FILES.values()]
        expected = {str(path): path.is_file() for path in paths}
        if not all(expected.values()):
            raise missing_files(
                "ListOps", expected,
                "LRA's release (lra_release.gz) holds them in lra_release/listops-1000/; pass "
                "that folder as ListOps(manual_dir=...), or manual_dir=None to generate the data")

    def split_examples(self, download) -> dict[str, Iterator[dict]]:
        if self.manual_dir is not None:
            root = pathlib.Path(self.manual_dir)
            return {split: read_release(root / name) for split, name in RELEASE_FILES.items()}
        sizes = {"train": self.train_examples, "validation": self.validation_examples,
                 "test": self.test_examples}
        # Consecutive draws of one stream, split after split, as LRA slices its one set.
        expressions = [{"tokens": tokens, "label": value}
                       for tokens, value in generate(sum(sizes.values()), self.generation_seed)]
        starts = np.cumsum([0, *sizes.values()])
        return {split: iter(expressions[start:start + count])
                for (split, count), start in zip(sizes.items(), starts)}
