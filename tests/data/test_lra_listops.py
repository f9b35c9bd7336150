"""ListOps generator and tokeniser: every label is the value an evaluator written here computes
from the token string; trees obey LRA's limits; one seed, one data set."""

import random

import numpy as np
import pytest

from ssmjax.data.lra import listops
from ssmjax.data.lra.listops import EOS, PAD, TOKEN_IDS, generate, sample_expression, tokenize

WORDS = {index: word for word, index in TOKEN_IDS.items()}
OPERATIONS = {"[MIN": min, "[MAX": max, "[MED": lambda values: int(np.median(values)),
              "[SM": lambda values: sum(values) % 10}


def evaluate(words):
    """Value, deepest digit (root = depth 1) and the arities of a ListOps token string."""
    stack, arities, deepest, value = [], [], 0, None
    for word in words:
        if word in OPERATIONS:
            stack.append((word, []))
            continue
        if word == "]":
            operator, arguments = stack.pop()
            arities.append(len(arguments))
            result = OPERATIONS[operator](arguments)
        else:
            result = int(word)
            deepest = max(deepest, len(stack) + 1)
        if stack:
            stack[-1][1].append(result)
        else:
            assert value is None, "two expressions in one string"
            value = result
    assert not stack, "unclosed operator"
    return value, deepest, arities


def release_source(words):
    """The LRA release's spelling of an expression: a parenthesis around every application."""
    def tree(position):
        word = words[position]
        if word not in OPERATIONS:
            return word, position + 1
        children, position = [], position + 1
        while words[position] != "]":
            child, position = tree(position)
            children.append(child)
        text = "( " * (len(children) + 1) + word + " " + " ".join(f"{c} )" for c in children)
        return text + " ] )", position + 1

    text, end = tree(0)
    assert end == len(words)
    return text


@pytest.fixture(scope="module")
def expressions():
    return list(generate(300, seed=0))


def test_labels_are_the_values_of_the_expressions_within_lra_limits(expressions):
    labels = []
    for tokens, label in expressions:
        assert tokens.dtype == np.uint8
        words = [WORDS[int(token)] for token in tokens]
        value, deepest, arities = evaluate(words)
        assert label == value
        assert listops.MIN_TOKENS < len(tokens) < listops.MAX_TOKENS
        assert deepest <= listops.MAX_DEPTH
        assert min(arities) >= 2 and max(arities) <= listops.MAX_ARGUMENTS
        labels.append(label)
    assert sorted(set(labels)) == list(range(10))
    assert len({tokens.tobytes() for tokens, _ in expressions}) == len(expressions)


def test_same_seed_same_data_and_a_longer_request_extends_a_shorter(expressions):
    again = list(generate(120, seed=0))
    for (tokens, label), (first, first_label) in zip(again, expressions):
        np.testing.assert_array_equal(tokens, first)
        assert label == first_label
    other = list(generate(5, seed=1))
    assert not any(np.array_equal(a, b) for (a, _), (b, _) in zip(other, expressions))


def test_median_of_an_even_count_rounds_down_like_lra():
    # [MED 1 2 ] = int(median(1, 2)) = int(1.5) = 1; [MED 3 0 0 8 ] = int(1.5) = 1.
    assert listops._apply(listops.MED, [1, 2]) == 1
    assert listops._apply(listops.MED, [3, 0, 0, 8]) == 1
    assert listops._apply(listops.SUM_MOD, [9, 9, 3]) == 1


def test_draws_stop_once_a_tree_is_too_long():
    rng = random.Random(3)
    drawn = [sample_expression(rng, max_tokens=40) for _ in range(400)]
    kept = [tokens for tokens in (d[0] for d in drawn if d is not None)]
    assert kept and all(len(tokens) < 40 for tokens in kept)
    assert any(d is None for d in drawn)


def test_release_strings_tokenise_to_the_generated_ids(expressions):
    for tokens, label in expressions[:20]:
        words = [WORDS[int(token)] for token in tokens]
        np.testing.assert_array_equal(tokenize(release_source(words)), tokens)
    assert PAD not in TOKEN_IDS.values() and EOS not in TOKEN_IDS.values()
    with pytest.raises(ValueError, match="token '\\[FIRST' is not ListOps'"):
        tokenize("( ( [FIRST 1 ) 2 ) ] )")
