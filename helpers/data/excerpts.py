"""Fit long documents into the token budget: split into passages, keep the ones relevant to the request.

FACTS documents average about 2.5k tokens; training and evaluation use ``max_length`` = 512 for
prompt + answer. A document that does not fit is split into passages of about ``passage_words``
words, ranked with BM25 against the request (passages holding the reference answer are kept
first), and the best ones that fit are joined in document order with a visible gap marker.
Token counts come from whatever tokenizer (or counting callable) the caller passes in: this module
never loads a model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rank_bm25 import BM25Okapi

from helpers.prompts import build_user_turn

__all__ = [
    "GAP",
    "PROMPT_OVERHEAD_TOKENS",
    "Excerpt",
    "TokenCounter",
    "approx_token_count",
    "content_words",
    "document_budget",
    "normalize",
    "quote_in_text",
    "rank_texts",
    "round_robin",
    "select_excerpt",
    "sentence_spans",
    "split_passages",
    "split_sentences",
    "token_counter",
]

TokenCounter = Callable[[str], int]
#: Marks text left out between two kept passages, so the model never reads them as adjacent.
GAP = "\n[...]\n"
#: Tokens a rendering adds around the user turn (BOS, turn markers or the ``ANSWER:`` cue, EOS).
PROMPT_OVERHEAD_TOKENS = 12
#: Smallest passage size tried when reference answers do not fit at the configured size.
MIN_PASSAGE_WORDS = 15

_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")
_SENT_END_RE = re.compile(r"(?<=[.!?])[\"”')\]]*\s+(?=[\"“'(\[]?[A-Z0-9$€£])")
_BULLET_RE = re.compile(r"^(?:[-*•●▪–]|\d+[.)]|[a-z][.)]|\(?[ivx]+[.)])\s")
STOPWORDS = frozenset(
    "a an and are as at be been being but by can could did do does for from had has have how i if in into is it "
    "its me my of on or our should so than that the their them then there these they this those to was we were "
    "what when where which who whom why will with would you your about according document text provided please "
    "tell give list describe explain based".split())


@dataclass
class Excerpt:
    """The part of a document placed in the prompt and how it was chosen."""

    text: str
    passages: list[int] = field(default_factory=list)  # indices of kept passages, document order
    total_passages: int = 1
    whole: bool = True  # the full document fitted
    truncated: bool = False  # even the best passage had to be cut by words
    tokens: int = 0


def token_counter(tokenizer: Any) -> TokenCounter:
    """A ``text -> token count`` function from a Hugging Face tokenizer (no special tokens) or a callable."""
    if tokenizer is None:
        return approx_token_count
    if hasattr(tokenizer, "encode"):
        return lambda text: len(tokenizer.encode(text, add_special_tokens=False))
    if callable(tokenizer):
        return tokenizer
    raise TypeError(f"tokenizer must be a tokenizer with .encode or a callable, got {type(tokenizer).__name__}")


def approx_token_count(text: str) -> int:
    """Rough count (4 tokens per 3 words and punctuation marks) for when no tokenizer is at hand."""
    return math.ceil(len(re.findall(r"\w+|[^\w\s]", text)) * 4 / 3)


def normalize(text: str) -> str:
    """Lower-case, single-spaced text for containment checks."""
    return " ".join(text.lower().split())


def quote_in_text(quote: str, text: str) -> bool:
    """True when ``quote`` (whitespace/case/outer quotes ignored) occurs in ``text``: the one check that a
    teacher's or request writer's quote is really in the document."""
    needle = normalize(quote).strip(" \"'“”‘’")
    return len(needle.split()) >= 2 and needle.rstrip(".") in normalize(text)


def content_words(text: str) -> list[str]:
    """Lower-cased words without stopwords (BM25 terms)."""
    return [w.lower() for w in _WORD_RE.findall(text) if w.lower() not in STOPWORDS]


def _line_blocks(text: str) -> list[tuple[int, int]]:
    """Runs of lines that form one paragraph: hard-wrapped prose is joined, bullets and headings are not."""
    blocks: list[list[int]] = []
    previous = ""
    for line in re.finditer(r"[^\n]+", text):
        body = line.group().strip()
        if not body:
            continue
        gap = text[blocks[-1][1]:line.start()].count("\n") if blocks else 0
        continues = (blocks and gap == 1 and not _BULLET_RE.match(body)
                     and not previous.rstrip().endswith((".", "!", "?", ":", ";")) and len(previous.split()) >= 8)
        if continues:
            blocks[-1][1] = line.end()
        else:
            blocks.append([line.start(), line.end()])
        previous = body
    return [(a, b) for a, b in blocks]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence in ``text``; paragraphs, bullets and headings always end a unit."""
    spans = []
    for block_start, block_end in _line_blocks(text):
        start = block_start
        for cut in _SENT_END_RE.finditer(text, block_start, block_end):
            if len(text[start:cut.start()].strip()) <= 3:  # "1." of a numbered item, "No." etc.
                continue
            spans.append((start, cut.start()))
            start = cut.end()
        if text[start:block_end].strip():
            spans.append((start, block_end))
    return spans


def split_sentences(text: str) -> list[str]:
    """Sentences and lines of ``text``, stripped."""
    return [text[a:b].strip() for a, b in sentence_spans(text)]


def split_passages(document: str, passage_words: int) -> list[str]:
    """Consecutive sentences packed into passages of at most ``passage_words`` words (original formatting kept)."""
    passages: list[str] = []
    start: int | None = None
    end = words = 0
    for a, b in sentence_spans(document):
        n = len(document[a:b].split())
        if start is not None and words + n > passage_words:
            passages.append(document[start:end].strip())
            start, words = None, 0
        if n > passage_words:  # one very long sentence: cut by words
            tokens = document[a:b].split()
            passages += [" ".join(tokens[i:i + passage_words]) for i in range(0, len(tokens), passage_words)]
            continue
        start = a if start is None else start
        end, words = b, words + n
    if start is not None:
        passages.append(document[start:end].strip())
    return [p for p in passages if p] or [document.strip()]


def rank_texts(texts: Sequence[str], query: str) -> list[int]:
    """Indices of ``texts`` by BM25 relevance to ``query`` (ties keep document order)."""
    if not texts:
        return []
    corpus = [content_words(t) or ["_"] for t in texts]
    scores = BM25Okapi(corpus).get_scores(content_words(query) or ["_"])
    overlap = [len(set(content_words(query)) & set(words)) for words in corpus]
    return sorted(range(len(texts)), key=lambda i: (-scores[i], -overlap[i], i))


def document_budget(count_tokens: TokenCounter, request: str, system_instruction: str, max_length: int,
                    answer_budget: int) -> int:
    """Tokens left for the document once instruction, request, answer and template overhead are counted."""
    scaffold = count_tokens(build_user_turn("", request, system_instruction))
    return max_length - answer_budget - scaffold - PROMPT_OVERHEAD_TOKENS


def _cut_to_budget(text: str, budget: int, count_tokens: TokenCounter) -> str:
    words = text.split()
    lo, hi = 0, len(words)
    while lo < hi:  # the most words whose join still fits
        mid = (lo + hi + 1) // 2
        if count_tokens(" ".join(words[:mid])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def _join(passages: Sequence[str], kept: Sequence[int]) -> str:
    """Kept passages in document order: adjacent ones on a new line, a ``GAP`` where text was left out."""
    parts = []
    for n, i in enumerate(kept):
        if n:
            parts.append("\n" if i == kept[n - 1] + 1 else GAP)
        parts.append(passages[i])
    return "".join(parts)


def select_excerpt(document: str, request: str, *, count_tokens: TokenCounter, budget_tokens: int,
                   passage_words: int, must_include: Sequence[str] = ()) -> Excerpt:
    """The whole document if it fits, else the most relevant passages that fit (in document order).

    When the passages holding ``must_include`` snippets do not all fit, passages are made smaller
    (halved down to ``MIN_PASSAGE_WORDS``) so that every reference answer keeps its context.

    Args:
        must_include: snippets (e.g. reference answer sentences, most important first) whose passages
            are kept before any other.
    Returns:
        An ``Excerpt``; its ``text`` may be empty only when ``budget_tokens`` is not positive.
    """
    whole_tokens = count_tokens(document)
    if whole_tokens <= budget_tokens:
        return Excerpt(document.strip(), [0], 1, True, False, whole_tokens)
    wanted = [normalize(s) for s in must_include if s and s.strip()]
    sizes = [passage_words]
    while sizes[-1] > MIN_PASSAGE_WORDS:
        sizes.append(max(MIN_PASSAGE_WORDS, sizes[-1] // 2))
    best: tuple[int, Excerpt] | None = None
    for size in sizes:
        excerpt, forced_kept = _select_passages(split_passages(document, size), request, wanted, count_tokens,
                                                budget_tokens)
        if best is None or forced_kept > best[0]:
            best = (forced_kept, excerpt)
        if forced_kept == len(wanted):
            break
    return best[1]  # type: ignore[index]


def _select_passages(passages: list[str], request: str, wanted: list[str], count_tokens: TokenCounter,
                     budget_tokens: int) -> tuple[Excerpt, int]:
    """Greedy fill: passages holding wanted snippets first (in snippet order), then by BM25 rank."""
    forced: list[int] = []
    for snippet in wanted:
        hit = next((i for i, p in enumerate(passages) if snippet in normalize(p)), None)
        if hit is not None and hit not in forced:
            forced.append(hit)
    order = forced + [i for i in rank_texts(passages, request) if i not in forced]
    gap_tokens = count_tokens(GAP)
    kept: list[int] = []
    used = 0
    for i in order:
        cost = count_tokens(passages[i]) + (gap_tokens if kept else 0)
        if used + cost <= budget_tokens:
            kept.append(i)
            used += cost
    if not kept:
        best = order[0]
        text = _cut_to_budget(passages[best], max(budget_tokens, 0), count_tokens)
        return Excerpt(text, [best], len(passages), False, True, count_tokens(text)), 0
    kept.sort()
    text = _join(passages, kept)
    while len(kept) > 1 and count_tokens(text) > budget_tokens:  # tokenizers are not exactly additive
        kept.remove(order[max(order.index(k) for k in kept)])
        text = _join(passages, kept)
    forced_kept = sum(1 for s in wanted if s in normalize(text))
    return Excerpt(text, kept, len(passages), False, False, count_tokens(text)), forced_kept


def round_robin(lists: Sequence[Sequence[Any]], n: int) -> list[Any]:
    """First item of each list, then the second of each, … up to ``n`` items (every kind represented: the pair
    mix, the bare-document request writer and the evaluation's per-side cap all take kinds in turn)."""
    out: list[Any] = []
    depth = 0
    while len(out) < n and any(depth < len(x) for x in lists):
        out += [x[depth] for x in lists if depth < len(x)][: n - len(out)]
        depth += 1
    return out
