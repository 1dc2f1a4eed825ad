"""A linear answerability head on the base model: does the document hold what the request asks?

Why it exists: on whole documents the DPO adapters of the local profile refuse at a rate that ignores
the document, while a logistic regression on the base model's middle-layer state at the last prompt
token separates answerable from unanswerable prompts (dev AUC 0.94 on Gemma 3 270M;
``experiments/answerability_probe.py``, ``docs/local_results.md``). The head is the strong no-training
baseline the recipe has to beat, and a gate a user can put in front of any model: where it says the
document lacks the answer, the answer is replaced by the refusal sentence.

How it is made (``gemma-facts select`` with ``TrainConfig.answerability_head``:
``helpers.select.answerability_fit``; the head lives here because evaluation applies it): the last
prompt token's hidden state at every layer, for each training prompt whose document is not a dev
document (the fit) and each dev prompt, from one forward pass of the base model (adapter off), the
prompt rendered exactly as evaluation renders it; beside it the share of the request's content words
found in the document, (``TrainConfig.answerability_surprisal``) how surprising the request's tokens are
given the document, against an empty one (``prompt_features``), and (``TrainConfig.answerability_lexical``) six
word-level summaries of which request words the document holds (``helpers.evaluate.answerability_lexical``). The dev
choice is the highest dev AUC over layers × L2 strength × (state | + overlap share | + request surprisal | + word
summaries); the threshold
(``TrainConfig.answerability_threshold``) is the largest dev refusal gap (unanswerable refused − answerable
refused), or the chosen family refitted on fit + dev and cut on out-of-fold scores over both (the largest gap,
or at most a budget of answerable prompts refused): hundreds of prompts set the cut instead of dev's few dozen
answerable ones. The head is saved as JSON beside the adapter (``<output
root>/answerability_head.json``) and evaluation reports the base model's answers gated by it beside
base and aligned (``metrics.json``, ``answerability_head``). The test split is never read here.

States and surprisals are cached per prompt on disk for the offline models (as the base answers are), so a stopped fit
resumes and the seeds of ``gemma-facts run --seeds`` share one fit's forward passes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "HEAD_FILE",
    "L2_STRENGTHS",
    "STACK_L2",
    "AnswerabilityHead",
    "auc",
    "budget_threshold",
    "candidate_kind",
    "choose_bagged",
    "choose_head",
    "choose_out_of_fold",
    "describe_head",
    "document_folds",
    "fit_logistic",
    "gate_answers",
    "head_features",
    "head_path",
    "label_auc",
    "layer_window_mean",
    "mean_columns",
    "out_of_fold_scores",
    "overlap",
    "overlap_shares",
    "prompt_features",
    "prompt_states",
    "refused_shares",
    "state_score_column",
    "request_token_logps",
    "surprisal_summary",
    "youden_threshold",
]

HEAD_FILE = "answerability_head.json"
L2_STRENGTHS = (1e-3, 1e-2, 1e-1)
SURPRISAL_NAMES = ("mean surprisal", "max surprisal", "top-3 surprisal", "mean PMI", "min PMI", "share PMI > 0")
OOF_FOLDS = 5
#: the L2 of the second fit of a stacked head (a handful of columns: the state's score, the shares, the summaries)
STACK_L2 = 1e-2


def candidate_kind(with_overlap: bool, with_surprisal: bool = False, with_lexical: bool = False) -> str:
    """What a candidate reads, as ``head.dev["dev_auc_by_candidate"]`` names it ("state+overlap+surprisal")."""
    return ("state" + ("+overlap" if with_overlap else "") + ("+surprisal" if with_surprisal else "")
            + ("+lexical" if with_lexical else ""))


def describe_head(head: dict[str, Any]) -> str:
    """"layer 10 + word-overlap share + …" from a head's ``summary()`` (or its entry in metrics.json)."""
    return (f"layer {head['layer']}" + (f" (mean of layers ±{head['layer_window']})" if head.get("layer_window") else "")
            + (" (as its own score)" if head.get("stacked") else "")
            + (" + word-overlap share" if head.get("with_overlap") else "")
            + (" + request surprisal" if head.get("with_surprisal") else "")
            + (" + word-level summaries" if head.get("with_lexical") else "")
            + (" + missing-name flag" if head.get("with_names") else "")
            + (f", averaged with the heads of {len(head['bagged_layers']) - 1} more dev splits (layers "
               f"{', '.join(map(str, head['bagged_layers'][1:]))})" if head.get("bagged_layers") else ""))


def head_path() -> Path:
    """Where the select stage writes the head and evaluation looks for it: beside the adapter."""
    from helpers.config import output_root

    return output_root() / HEAD_FILE


# -- features ---------------------------------------------------------------------------------------
def overlap(request: str, document: str) -> float:
    """Share of the request's content words (``helpers.data.excerpts.content_words``) present in the document."""
    from helpers.data.excerpts import content_words

    words = set(content_words(request))
    return len(words & set(content_words(document))) / max(1, len(words))


def request_token_logps(model: Any, tokenizer: Any, messages: list[dict], request: str, prompt_format: str,
                        hidden: bool) -> tuple[list[float], Any]:
    """Log-probabilities of the request's tokens in the rendered prompt, each given everything before it (and,
    if ``hidden``, the last prompt token's hidden state at every layer, the head's input): one forward pass.

    The request's tokens are every token whose characters overlap the request in the rendered text: its first
    token usually carries the space before it (" Which"), so the request tokenised alone would not match."""
    import torch

    from helpers.prompts import render_prompt

    text = render_prompt(messages, prompt_format, tokenizer)
    start = text.rindex(request.strip())
    end = start + len(request.strip())
    enc = tokenizer(text, add_special_tokens=(prompt_format == "plain"), return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    span = [i for i, (a, b) in enumerate(offsets) if a < end and b > start and b > a]
    if not span or span[0] == 0:
        raise ValueError(f"request tokens not found in the rendered prompt: {request[:60]!r}")
    keep = len(ids) - (span[0] - 1)  # logits from the position before the first request token to the end
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids], device=model.device), output_hidden_states=hidden,
                    logits_to_keep=keep)
    logp = out.logits[0].float().log_softmax(-1)
    first = len(ids) - keep
    values = [logp[i - 1 - first, ids[i]].item() for i in span]
    state = torch.stack([h[0, -1].float().cpu() for h in out.hidden_states]) if hidden else None
    return values, state


def surprisal_summary(with_doc: Sequence[float], without_doc: Sequence[float]) -> list[float]:
    """The six summaries of ``SURPRISAL_NAMES`` from the request tokens' log-probabilities with and without the
    document: surprisal ``-log p(token | document, earlier request tokens)`` (mean, max, mean of the three
    largest) and pointwise mutual information ``log p(token | document) - log p(token | no document)`` (mean,
    min, share > 0). A near miss's swapped subject is a token the document does not explain."""
    n = min(len(with_doc), len(without_doc))
    cond = [-v for v in with_doc[:n]]
    pmi = [a - b for a, b in zip(with_doc[:n], without_doc[:n], strict=True)]
    top = sorted(cond, reverse=True)[:3]
    return [sum(cond) / n, max(cond), sum(top) / len(top), sum(pmi) / n, min(pmi), sum(p > 0 for p in pmi) / n]


def _cache_folder(kind: str, model_cfg: Any) -> Path | None:
    from helpers.config import cache_root
    from helpers.models import offline_model_identity

    identity = offline_model_identity(model_cfg)  # offline models only, as for the base answers
    if not identity:
        return None
    key = json.dumps([*identity[0], *identity[1]])
    return cache_root() / kind / hashlib.sha256(key.encode()).hexdigest()[:16]


def _save_atomic(path: Path, value: Any) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(value, tmp)
    tmp.replace(path)


def prompt_features(model: Any, tokenizer: Any, items: Sequence[dict[str, Any]], model_cfg: Any, *,
                    surprisal: bool = False, desc: str = "prompt states", progress: bool = True) -> tuple[Any, Any]:
    """What the head reads, one prompt at a time: ``(states, surprisal)``.

    ``states``: the last prompt token's hidden state at every layer, a float32 tensor ``(prompts, layers + 1,
    hidden)`` (index 0 = the embeddings). The prompt is rendered and tokenised as generation renders it, so the
    state is the one the model holds when it writes the answer's first token. One prompt per pass (no padding)
    keeps a prompt's state independent of its neighbours.

    ``surprisal`` (if asked; else None): ``(prompts, 6)``, the request's ``surprisal_summary``. The request
    comes after the document in the prompt, so the same forward pass scores its tokens given the document; a
    second, short pass over the prompt with an empty document scores them alone. Items need ``request`` (and
    ``system_instruction`` when the prompt had one).

    Call it on the base model (adapter off: ``side_of(model, "base")``); the cache keys do not know about
    adapters. Both are cached per prompt for the offline models, so a stopped fit resumes."""
    import torch
    from tqdm.auto import tqdm

    from helpers.prompts import build_messages, render_prompt

    states_dir, surprisal_dir = _cache_folder("prompt_states", model_cfg), _cache_folder("request_surprisal", model_cfg)
    states, summaries = [], []
    for item in tqdm(items, desc=desc, disable=not progress or not items):
        text = render_prompt(item["prompt"], model_cfg.prompt_format, tokenizer)
        name = hashlib.sha256(text.encode()).hexdigest()[:24] + ".pt"
        state_path = states_dir / name if states_dir else None
        summary_path = surprisal_dir / name if surprisal_dir and surprisal else None
        state = torch.load(state_path) if state_path is not None and state_path.exists() else None
        summary = torch.load(summary_path) if summary_path is not None and summary_path.exists() else None
        if surprisal and summary is None:
            with_doc, fresh = request_token_logps(model, tokenizer, item["prompt"], item["request"],
                                                  model_cfg.prompt_format, hidden=state is None)
            empty = build_messages("", item["request"], item.get("system_instruction") or None)
            without_doc, _ = request_token_logps(model, tokenizer, empty, item["request"], model_cfg.prompt_format,
                                                 hidden=False)
            summary = torch.tensor(surprisal_summary(with_doc, without_doc))
            if summary_path is not None:
                _save_atomic(summary_path, summary)
            if state is None:
                state = fresh
                if state_path is not None:
                    _save_atomic(state_path, state)
        if state is None:
            ids = tokenizer(text, add_special_tokens=(model_cfg.prompt_format == "plain"),
                            return_tensors="pt")["input_ids"].to(model.device)
            with torch.inference_mode():
                out = model(input_ids=ids, output_hidden_states=True, logits_to_keep=1)
            state = torch.stack([h[0, -1].float().cpu() for h in out.hidden_states])
            if state_path is not None:
                _save_atomic(state_path, state)
        states.append(state)
        summaries.append(summary)
    if not states:
        return torch.zeros(0), (torch.zeros(0, len(SURPRISAL_NAMES)) if surprisal else None)
    return torch.stack(states), (torch.stack(summaries) if surprisal else None)


def prompt_states(model: Any, tokenizer: Any, items: Sequence[dict[str, Any]], model_cfg: Any, *,
                  desc: str = "prompt states", progress: bool = True) -> Any:
    """The states of ``prompt_features`` alone (no request surprisal)."""
    return prompt_features(model, tokenizer, items, model_cfg, desc=desc, progress=progress)[0]


# -- the head ---------------------------------------------------------------------------------------
def auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """P(random positive > random negative), ties counted half (Mann-Whitney)."""
    if not positive or not negative:
        return None
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in positive for q in negative)
    return round(wins / (len(positive) * len(negative)), 3)


@dataclasses.dataclass
class LinearScore:
    """A fitted logistic regression on standardised inputs: score = ((x - mean) / std) · weight + bias;
    high = answerable. Plain lists, so it is saved as JSON."""

    mean: list[float]
    std: list[float]
    weight: list[float]
    bias: float

    def __call__(self, x: Any) -> Any:
        import torch

        mean, std, weight = (torch.tensor(v) for v in (self.mean, self.std, self.weight))
        return ((x.float() - mean) / std) @ weight + self.bias


def fit_logistic(x: Any, y: Any, l2: float) -> LinearScore:
    """L2-regularised logistic regression (LBFGS, in torch: no new dependency), standardised inputs."""
    import torch

    x = x.float()
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    w = torch.zeros(z.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")
    target = y.float()

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, target) + l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    return LinearScore(mean.tolist(), std.tolist(), w.detach().tolist(), float(b.detach()))


def youden_threshold(scores: Sequence[float], answerable: Sequence[bool]) -> tuple[float, dict]:
    """The cut (refuse when score < cut) with the largest share of unanswerable refused minus answerable
    refused on these items; the midpoint between neighbouring scores, so no item sits on it."""
    values = sorted(set(scores))
    cuts = [values[0] - 1.0] + [(a + b) / 2 for a, b in zip(values, values[1:], strict=False)] + [values[-1] + 1.0]

    def gap(cut):
        over, caught = refused_shares(scores, answerable, cut)
        return caught - over

    cut = max(cuts, key=gap)
    return cut, _rates_at(scores, answerable, cut)


@dataclasses.dataclass
class AnswerabilityHead:
    """Refuse where ``score(state at layer, [overlap share], [request surprisal], [word-level summaries]) <
    threshold``. Saved as JSON (with the vocabulary the summaries read, ``lexical``)."""

    layer: int
    with_overlap: bool
    l2: float
    score: LinearScore
    threshold: float
    model_id: str
    dev: dict[str, Any] = dataclasses.field(default_factory=dict)
    with_surprisal: bool = False  # after the others: heads saved before it load unchanged
    # the word-level summaries (helpers.evaluate.answerability_lexical) and the fit vocabulary they are read with
    lexical: dict[str, Any] | None = None
    # a stacked head (choose_head(stacked=True)) reads the state through this fit of the state alone: one column
    state_score: LinearScore | None = None
    # the state at each layer averaged with this many layers on each side (choose_head(layer_window=...))
    layer_window: int = 0
    # a bagged head (choose_bagged): the heads chosen on the other dev splits; the score is the mean of all
    members: list[AnswerabilityHead] = dataclasses.field(default_factory=list)

    def design(self, states: Any, items: Sequence[dict[str, Any]], surprisal: Any = None) -> Any:
        if self.with_surprisal and surprisal is None:
            raise ValueError("this answerability head reads the request surprisal: compute the features with "
                             "prompt_features(..., surprisal=True)")
        if self.layer_window:
            states = layer_window_mean(states, self.layer_window)
        state = None if self.state_score is None else self.state_score(states[:, self.layer]).reshape(-1, 1)
        return head_features(states, items, self.layer, self.with_overlap,
                             surprisal=surprisal if self.with_surprisal else None,
                             lexical=self._lexical(items), state=state)

    def _lexical(self, items: Sequence[dict[str, Any]]) -> Any:
        if self.lexical is None:
            return None
        from helpers.evaluate.answerability_lexical import LexicalVocabulary, lexical_features

        return lexical_features(items, LexicalVocabulary(**self.lexical))

    def summary(self) -> dict[str, Any]:
        """The head as metrics.json and the figures show it: every field but the weights and the word vocabulary,
        and whether it reads the word summaries (with the missing-name flag) and the state through its own fit."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("score", "lexical", "state_score", "members")} | {
            "with_lexical": self.lexical is not None, "with_names": bool((self.lexical or {}).get("names")),
            "stacked": self.state_score is not None} | (
            {"bagged_layers": [self.layer, *(m.layer for m in self.members)]} if self.members else {})

    @property
    def reads_surprisal(self) -> bool:
        """Whether this head or one of its bagged members reads the request surprisal."""
        return self.with_surprisal or any(m.with_surprisal for m in self.members)

    def scores(self, states: Any, items: Sequence[dict[str, Any]], surprisal: Any = None) -> list[float]:
        """The head's scores, or with ``members`` the mean of its own and theirs (in that order)."""
        own = self.score(self.design(states, items, surprisal)).tolist()
        if not self.members:
            return own
        return mean_columns([own, *(m.scores(states, items, surprisal) for m in self.members)])

    def refuses(self, states: Any, items: Sequence[dict[str, Any]], surprisal: Any = None) -> list[bool]:
        return [s < self.threshold for s in self.scores(states, items, surprisal)]

    def refuses_on(self, model: Any, tokenizer: Any, items: Sequence[dict[str, Any]], model_cfg: Any, *,
                   desc: str = "head prompts", progress: bool = True) -> list[bool]:
        """``refuses`` on features computed (or read from the cache) for ``items``: what evaluation calls."""
        states, surprisal = prompt_features(model, tokenizer, items, model_cfg, surprisal=self.reads_surprisal,
                                            desc=desc, progress=progress)
        return self.refuses(states, items, surprisal)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=1), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> AnswerabilityHead:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnswerabilityHead:
        """A head from its saved form (``dataclasses.asdict``), its bagged members too."""
        state_score = data.get("state_score")
        return cls(**{**data, "score": LinearScore(**data["score"]),
                      "state_score": LinearScore(**state_score) if state_score else None,
                      "members": [cls.from_dict(m) for m in data.get("members", [])]})


def mean_columns(columns: Sequence[Sequence[float]]) -> list[float]:
    """Item by item, the mean of several heads' scores (a bagged head's score; its cut reads their out-of-fold ones)."""
    return [sum(col) / len(columns) for col in zip(*columns, strict=True)]


def layer_window_mean(states: Any, window: int) -> Any:
    """``(items, layers, hidden)`` states with each layer's replaced by the mean of the layers within ``window`` of
    it (fewer at the ends): a head that reads one layer then reads its neighbours too, so a dev choice between
    neighbouring layers matters less."""
    import torch

    layers = states.shape[1]
    return torch.stack([states[:, max(0, i - window):min(layers, i + window + 1)].mean(1) for i in range(layers)], 1)


def overlap_shares(items: Sequence[dict[str, Any]]) -> Any:
    """The overlap share of each item, as a ``(items, 1)`` column (``overlap``)."""
    import torch

    return torch.tensor([[overlap(it["request"], it["document"])] for it in items])


def head_features(states: Any, items: Sequence[dict[str, Any]], layer: int, with_overlap: bool,
                  shares: Any = None, surprisal: Any = None, lexical: Any = None, state: Any = None) -> Any:
    """What a head of this layer reads: the state at ``layer`` (or ``state`` in its place: a stacked head's one
    column), the overlap share beside it if asked, then the request surprisal (``prompt_features``) and the
    word-level summaries (``answerability_lexical``) if given. ``shares``: ``overlap_shares(items)`` computed once
    by a caller that reads many layers (it scans every document's words)."""
    import torch

    parts = [states[:, layer] if state is None else state]
    if with_overlap:
        parts.append(overlap_shares(items) if shares is None else shares)
    if surprisal is not None:
        parts.append(surprisal.float())
    if lexical is not None:
        parts.append(lexical.float())
    return torch.cat(parts, 1) if len(parts) > 1 else parts[0]


def label_auc(scores: Sequence[float], answerable: Sequence[bool]) -> float:
    """``auc`` of the scores with the answerable items as the positives (0.0 when a side is empty)."""
    return auc([s for s, a in zip(scores, answerable, strict=True) if a],
               [s for s, a in zip(scores, answerable, strict=True) if not a]) or 0.0


def refused_shares(scores: Sequence[float], answerable: Sequence[bool], cut: float) -> tuple[float, float]:
    """(share of the answerable items refused, share of the unanswerable refused) when refusing below ``cut``."""
    n_ans, n_una = sum(answerable), len(answerable) - sum(answerable)
    over = sum(s < cut for s, a in zip(scores, answerable, strict=True) if a) / max(1, n_ans)
    caught = sum(s < cut for s, a in zip(scores, answerable, strict=True) if not a) / max(1, n_una)
    return over, caught


def _rates_at(scores: Sequence[float], answerable: Sequence[bool], cut: float) -> dict[str, float]:
    over, caught = refused_shares(scores, answerable, cut)
    return {"dev_refusal_gap": round(caught - over, 3), "dev_answerable_refused": round(over, 3),
            "dev_unanswerable_refused": round(caught, 3)}


def document_folds(items: Sequence[dict[str, Any]], k: int = OOF_FOLDS, seed: int = 1) -> list[set[str]]:
    """``k`` disjoint sets of the items' documents (shuffled with ``seed``): a document's prompts stay together,
    so an out-of-fold score never comes from a fit that saw its document."""
    import random

    docs = sorted({str(it["doc_id"]) for it in items})
    random.Random(seed).shuffle(docs)
    return [set(docs[i::k]) for i in range(k)]


def budget_threshold(scores: Sequence[float], answerable: Sequence[bool], budget: float) -> tuple[float, dict]:
    """The highest cut (refuse when score < cut) that refuses at most ``budget`` of the answerable items: the
    midpoint below the first answerable score it must keep, so no item sits on it."""
    ans = sorted(s for s, a in zip(scores, answerable, strict=True) if a)
    k = int(budget * len(ans))  # answerable items that may be refused
    cut = (ans[k - 1] + ans[k]) / 2 if 0 < k < len(ans) else (ans[0] - 1e-6 if k == 0 else ans[-1] + 1e-6)
    return cut, _rates_at(scores, answerable, cut)


def out_of_fold_scores(x: Any, items: Sequence[dict[str, Any]], l2: float, k: int = OOF_FOLDS,
                       seed: int = 1) -> list[float]:
    """Each item's score from a head fitted on the other ``document_folds`` (the same family and L2)."""
    import torch

    y = torch.tensor([bool(it["answerable"]) for it in items])
    scores = [0.0] * len(items)
    for held in document_folds(items, k, seed):
        inside = [i for i, it in enumerate(items) if str(it["doc_id"]) not in held]
        out = [i for i, it in enumerate(items) if str(it["doc_id"]) in held]
        if not out:
            continue
        part = fit_logistic(x[inside], y[inside], l2)
        for i, v in zip(out, part(x[out]).tolist(), strict=True):
            scores[i] = v
    return scores


def state_score_column(x: Any, items: Sequence[dict[str, Any]], l2: float) -> tuple[LinearScore, Any]:
    """A stacked head's state: the fit of the state ``x`` (one layer's) alone on ``items``, and the ``(items, 1)``
    column a second fit learns from, each item's score out of fold (``out_of_fold_scores``): the in-sample scores of
    hundreds of dimensions separate their own prompts, noise or not."""
    import torch

    inner = fit_logistic(x, torch.tensor([bool(it["answerable"]) for it in items]), l2)
    return inner, torch.tensor(out_of_fold_scores(x, items, l2)).reshape(-1, 1)


def _candidate_name(layer: int, with_overlap: bool, with_surprisal: bool, with_lexical: bool, l2: float) -> str:
    return f"{layer}/{candidate_kind(with_overlap, with_surprisal, with_lexical)}/l2={l2}"


def _ties(layer: int, l2: float, with_overlap: bool, with_surprisal: bool, with_lexical: bool) -> tuple:
    """How a choice ranks candidates of equal merit: the lower layer, the smaller L2, then fewer features."""
    return (-layer, -l2, not with_overlap, not with_surprisal, not with_lexical)


def _spelled(with_overlap: bool, with_surprisal: bool, with_lexical: bool, lexical_names: bool) -> str:
    """A candidate kind as the rule text names it."""
    parts = ("state", "overlap share" if with_overlap else "", "request surprisal" if with_surprisal else "",
             ("word-level summaries" + (" with the missing-name flag" if lexical_names else "")) if with_lexical
             else "")
    return " + ".join(part for part in parts if part)


def _out_of_fold_cut(oof: Sequence[float], answerable: Sequence[bool], threshold_rule: str,
                     budget: float) -> tuple[float, dict[str, float], str]:
    """The cut an out-of-fold rule sets on the chosen family's out-of-fold scores over fit + dev, their rates at it
    (named ``out_of_fold_*``), and the rule's words."""
    if threshold_rule == "out_of_fold_largest_gap":
        threshold, rates = youden_threshold(oof, answerable)
        words = ("the chosen family refitted on fit + dev; refuse below the largest refusal gap of its "
                 f"out-of-fold scores over fit + dev ({OOF_FOLDS} document folds)")
    else:
        threshold, rates = budget_threshold(oof, answerable, budget)
        words = ("the chosen family refitted on fit + dev; refuse below the highest cut that refuses at most "
                 f"{budget:.0%} of the answerable prompts by their out-of-fold scores over fit + dev "
                 f"({OOF_FOLDS} document folds)")
    return threshold, {k.replace("dev_", "out_of_fold_"): v for k, v in rates.items()}, words


def choose_head(fit_items: Sequence[dict[str, Any]], fit_states: Any, dev_items: Sequence[dict[str, Any]],
                dev_states: Any, model_id: str, l2s: Sequence[float] = L2_STRENGTHS, *,
                fit_surprisal: Any = None, dev_surprisal: Any = None, threshold_rule: str = "dev_largest_gap",
                budget: float = 0.05, lexical: bool = False, lexical_only: bool = False,
                lexical_names: bool = False, stacked: bool = False, choice: str = "dev_auc",
                fold_seed: int = 1, layer_window: int = 0, names_after_choice: bool = False) -> AnswerabilityHead:
    """The dev choice: the highest dev AUC over layers × ``l2s`` × (state | state + overlap share | state +
    overlap share + request surprisal, when the surprisal is given | either of the last two + the word-level
    summaries, when ``lexical``, with the missing-name flag among them when ``lexical_names``; only the candidates
    with them, when ``lexical_only``), ties to the lower layer, the smaller L2, then fewer features. The summaries
    read a vocabulary fitted on the fit prompts (on fit + dev for the refit of the out-of-fold rules).

    ``stacked``: every candidate reads the state as one column, the score of a fit of the state alone (with the
    candidate's L2; out of fold on the prompts the second fit learns from, so their column is what an unseen
    prompt's would be), beside the other features in a second fit (``STACK_L2``). Why: in one fit, one L2 serves
    the state's hundreds of weights and a handful of summaries alike. On the thirteenth pass's pseudo-test it ranked
    better (AUC 0.984 against 0.977) but caught no more at the budget (docs/local_results.md).

    Its threshold (``threshold_rule``):

    * ``dev_largest_gap``: the largest refusal gap on the dev prompts (the head is the fit's);
    * ``out_of_fold_largest_gap`` / ``out_of_fold_budget``: the chosen family refitted on fit + dev, the cut
      set on out-of-fold scores over fit + dev (``document_folds``): the largest gap, or the highest cut that
      refuses at most ``budget`` of the answerable prompts. Hundreds of prompts set the cut instead of the dev
      split's few dozen answerable ones, and none of them is scored by a fit that saw its document.

    ``choice`` (``TrainConfig.answerability_choice``): "dev_auc" as above, or every candidate scored out of fold
    over fit + dev (``document_folds`` drawn with ``fold_seed``) and chosen by those scores' AUC
    ("out_of_fold_auc") or by the unanswerable share they refuse at ``budget`` ("out_of_fold_catch", AUC breaking
    ties): ``choose_out_of_fold``. Why: the dev choice hinges on one dev split's few dozen prompts (the eleventh
    pass's 15 pseudo-test cells chose layers 5 to 14, L2 0.001 to 0.1), and on the test split the three recorded
    runs' cuts spread 79-91% with their layers. On the fourteenth pass's pseudo-test its cells spread less (lowest
    85-88% of the unanswerable held prompts against 80%) but caught no more at the same share of answerable ones
    refused (docs/local_results.md).

    ``layer_window``: every candidate reads the state of its layer averaged with the ``layer_window`` layers on each
    side (``layer_window_mean``; the head keeps the window and averages the states it scores alike).

    ``names_after_choice`` (an out-of-fold threshold rule and the dev choice only): the family is chosen without the
    missing-name flag, and the refit on fit + dev reads it among the word summaries when the chosen family reads
    them. Why: with the flag in the dev choice, the summaries carry the dev AUC whatever layer sits beside them,
    and the choice drifts to shallow layers (the thirteenth and eighteenth passes' pseudo-tests).

    ``head.dev`` records every candidate's dev AUC and the rates at the threshold (out-of-fold for the
    out-of-fold rules)."""
    import torch

    from helpers.config import (
        ANSWERABILITY_THRESHOLD_RULES,
        check_answerability_choice,
        check_answerability_names_after_choice,
    )

    if threshold_rule not in ANSWERABILITY_THRESHOLD_RULES:
        raise ValueError(f"threshold_rule must be one of {ANSWERABILITY_THRESHOLD_RULES}, got {threshold_rule!r}")
    if layer_window < 0:
        raise ValueError(f"layer_window must be >= 0, got {layer_window}")
    if layer_window:
        head = choose_head(fit_items, layer_window_mean(fit_states, layer_window), dev_items,
                           layer_window_mean(dev_states, layer_window), model_id, l2s, fit_surprisal=fit_surprisal,
                           dev_surprisal=dev_surprisal, threshold_rule=threshold_rule, budget=budget, lexical=lexical,
                           lexical_only=lexical_only, lexical_names=lexical_names, stacked=stacked, choice=choice,
                           fold_seed=fold_seed, names_after_choice=names_after_choice)
        head.layer_window = layer_window
        head.dev["rule"] = (f"the state of each layer averaged with the {layer_window} layers on each side; "
                            + head.dev["rule"])
        return head
    y_fit = torch.tensor([bool(it["answerable"]) for it in fit_items])
    y_dev = [bool(it["answerable"]) for it in dev_items]
    if y_fit.all() or not y_fit.any() or all(y_dev) or not any(y_dev):
        raise ValueError("the answerability head needs answerable and unanswerable prompts in both the fit "
                         f"({int(y_fit.sum())} / {len(y_fit)} answerable) and the dev split "
                         f"({sum(y_dev)} / {len(y_dev)})")
    from helpers.evaluate.answerability_lexical import LexicalVocabulary, lexical_features

    check_answerability_names_after_choice(names_after_choice, threshold_rule, choice)
    lexical = lexical or lexical_only or lexical_names or names_after_choice
    surprisals = [False] + ([True] if fit_surprisal is not None else [])
    kinds = [(False, False, False), *[(True, s, False) for s in surprisals]]
    kinds += [(True, s, True) for s in surprisals] if lexical else []
    if lexical_only:
        kinds = [k for k in kinds if k[2]]
    check_answerability_choice(choice, threshold_rule, stacked)
    if choice != "dev_auc":
        return choose_out_of_fold(fit_items, fit_states, dev_items, dev_states, model_id, l2s, kinds,
                                  fit_surprisal=fit_surprisal, dev_surprisal=dev_surprisal,
                                  threshold_rule=threshold_rule, budget=budget, lexical_names=lexical_names,
                                  choice=choice, fold_seed=fold_seed)
    table: dict[str, float | None] = {}
    best: tuple | None = None
    fit_shares, dev_shares = overlap_shares(fit_items), overlap_shares(dev_items)
    vocab = LexicalVocabulary.fit(fit_items, names=lexical_names) if lexical else None
    fit_lex, dev_lex = (lexical_features(fit_items, vocab), lexical_features(dev_items, vocab)) if vocab else (None, None)

    def design(states, items, shares, sur, lex, layer, with_overlap, with_surprisal, with_lexical, state=None):
        return head_features(states, items, layer, with_overlap, shares, sur if with_surprisal else None,
                             lex if with_lexical else None, state=state)

    def outer_l2(l2):  # the L2 of the fit that reads the candidate's features (the state's own fit takes ``l2``)
        return STACK_L2 if stacked else l2

    for layer in range(fit_states.shape[1]):
        for l2 in l2s:
            inner, fit_col, dev_col = None, None, None
            if stacked:
                inner, fit_col = state_score_column(fit_states[:, layer], fit_items, l2)
                dev_col = inner(dev_states[:, layer]).reshape(-1, 1)
            for with_overlap, with_surprisal, with_lexical in kinds:
                score = fit_logistic(design(fit_states, fit_items, fit_shares, fit_surprisal, fit_lex, layer,
                                            with_overlap, with_surprisal, with_lexical, fit_col), y_fit, outer_l2(l2))
                dev_scores = score(design(dev_states, dev_items, dev_shares, dev_surprisal, dev_lex, layer,
                                          with_overlap, with_surprisal, with_lexical, dev_col)).tolist()
                value = label_auc(dev_scores, y_dev)
                table[_candidate_name(layer, with_overlap, with_surprisal, with_lexical, l2)] = value
                rank = (value, *_ties(layer, l2, with_overlap, with_surprisal, with_lexical))
                if best is None or rank > best[0]:
                    best = (rank, layer, with_overlap, with_surprisal, with_lexical, l2, score, dev_scores, inner)
    assert best is not None
    _, layer, with_overlap, with_surprisal, with_lexical, l2, score, dev_scores, inner = best
    offered = [_spelled(*kind, lexical_names) for kind in kinds]
    rule = f"highest dev AUC over layers x l2 x ({' | '.join(offered)}); "
    if stacked:
        rule += (f"the state read as the score of its own fit (with that l2; out of fold on the prompts of the "
                 f"second fit) beside the other features in a second fit (l2 {STACK_L2}); ")
    if threshold_rule == "dev_largest_gap":
        threshold, rates = youden_threshold(dev_scores, y_dev)
        rule += "refuse below the threshold with the largest dev refusal gap (unanswerable refused - answerable refused)"
    else:
        items = [*fit_items, *dev_items]
        if with_lexical:  # the refit reads the vocabulary of its own prompts, fit + dev (the out-of-fold scores
            # read it too: document frequencies, no labels, so a held fold's words weigh its own IDF a little)
            vocab = LexicalVocabulary.fit(items, names=lexical_names or names_after_choice)
            if names_after_choice:
                rule += "the missing-name flag added to the word-level summaries in the refit; "
            fit_lex, dev_lex = lexical_features(fit_items, vocab), lexical_features(dev_items, vocab)
        fit_col, dev_col, head_dev_col = None, None, None
        if stacked:  # the state fit again on fit + dev, its column out of fold over them
            inner, column = state_score_column(torch.cat([fit_states, dev_states])[:, layer], items, l2)
            fit_col, dev_col = column[:len(fit_items)], column[len(fit_items):]
            head_dev_col = inner(dev_states[:, layer]).reshape(-1, 1)
        dev_x = design(dev_states, dev_items, dev_shares, dev_surprisal, dev_lex, layer, with_overlap, with_surprisal,
                       with_lexical, dev_col)
        x = torch.cat([design(fit_states, fit_items, fit_shares, fit_surprisal, fit_lex, layer, with_overlap,
                              with_surprisal, with_lexical, fit_col), dev_x])
        y_all = [bool(it["answerable"]) for it in items]
        oof = out_of_fold_scores(x, items, outer_l2(l2))
        score = fit_logistic(x, torch.tensor(y_all), outer_l2(l2))
        if stacked:  # the dev rates below read dev as the head will: through the refitted state fit
            dev_x = design(dev_states, dev_items, dev_shares, dev_surprisal, dev_lex, layer, with_overlap,
                           with_surprisal, with_lexical, head_dev_col)
        threshold, oof_rates, words = _out_of_fold_cut(oof, y_all, threshold_rule, budget)
        rule += words
        # the dev split's rates under the refitted head (in sample now: dev is part of its fit), beside the
        # out-of-fold rates that set the cut
        rates = {**_rates_at(score(dev_x).tolist(), y_dev, threshold), **oof_rates}
    dev = {"rule": rule, "threshold_rule": threshold_rule,
           "dev_auc": table[_candidate_name(layer, with_overlap, with_surprisal, with_lexical, l2)],
           "fit": {"answerable": int(y_fit.sum()), "unanswerable": int((~y_fit).sum())},
           "dev": {"answerable": sum(y_dev), "unanswerable": len(y_dev) - sum(y_dev)},
           **rates, "dev_auc_by_candidate": table}
    return AnswerabilityHead(layer, with_overlap, l2, score, threshold, model_id, dev, with_surprisal,
                             dataclasses.asdict(vocab) if with_lexical and vocab is not None else None, inner)


def choose_out_of_fold(fit_items: Sequence[dict[str, Any]], fit_states: Any, dev_items: Sequence[dict[str, Any]],
                       dev_states: Any, model_id: str, l2s: Sequence[float], kinds: Sequence[tuple[bool, bool, bool]],
                       *, fit_surprisal: Any, dev_surprisal: Any, threshold_rule: str, budget: float,
                       lexical_names: bool, choice: str, fold_seed: int) -> AnswerabilityHead:
    """``choose_head``'s out-of-fold choice: every candidate (layer x ``l2s`` x ``kinds``, each kind a tuple
    (overlap, surprisal, summaries)) scored out of fold over fit + dev, the best by ``choice``; that candidate
    refitted on fit + dev and cut on its out-of-fold scores (``threshold_rule``). Ties go to the lower layer, the
    smaller L2, then fewer features, as in the dev choice. The summaries read a vocabulary fitted on fit + dev
    (document frequencies, no labels), as the refit of the out-of-fold rules does."""
    import torch

    from helpers.evaluate.answerability_lexical import LexicalVocabulary, lexical_features

    items = [*fit_items, *dev_items]
    states = torch.cat([fit_states, dev_states])
    surprisal = torch.cat([fit_surprisal, dev_surprisal]) if fit_surprisal is not None else None
    y = [bool(it["answerable"]) for it in items]
    y_fit, y_dev = y[:len(fit_items)], y[len(fit_items):]
    shares = overlap_shares(items)
    vocab = LexicalVocabulary.fit(items, names=lexical_names) if any(k[2] for k in kinds) else None
    lex = lexical_features(items, vocab) if vocab is not None else None
    table: dict[str, float | None] = {}
    best: tuple | None = None
    for layer in range(states.shape[1]):
        for l2 in l2s:
            for with_overlap, with_surprisal, with_lexical in kinds:
                x = head_features(states, items, layer, with_overlap, shares, surprisal if with_surprisal else None,
                                  lex if with_lexical else None)
                oof = out_of_fold_scores(x, items, l2, seed=fold_seed)
                value = label_auc(oof, y)
                table[_candidate_name(layer, with_overlap, with_surprisal, with_lexical, l2)] = value
                merit = (refused_shares(oof, y, budget_threshold(oof, y, budget)[0])[1], value) \
                    if choice == "out_of_fold_catch" else (value,)
                rank = (*merit, *_ties(layer, l2, with_overlap, with_surprisal, with_lexical))
                if best is None or rank > best[0]:
                    best = (rank, layer, with_overlap, with_surprisal, with_lexical, l2, x, oof, value)
    assert best is not None
    _, layer, with_overlap, with_surprisal, with_lexical, l2, x, oof, value = best
    score = fit_logistic(x, torch.tensor(y), l2)
    offered = " | ".join(_spelled(*kind, lexical_names) for kind in kinds)
    merit_text = ("AUC" if choice == "out_of_fold_auc"
                  else f"share of the unanswerable prompts refused at the {budget:.0%} budget (then AUC)")
    threshold, oof_rates, words = _out_of_fold_cut(oof, y, threshold_rule, budget)
    rule = (f"highest out-of-fold {merit_text} over layers x l2 x ({offered}), its document folds drawn at random "
            f"(seed {fold_seed}); {words}")
    rates = {**_rates_at(score(x[len(fit_items):]).tolist(), y_dev, threshold), **oof_rates}
    dev = {"rule": rule, "threshold_rule": threshold_rule, "choice": choice, "fold_seed": fold_seed,
           "dev_auc": value, "fit": {"answerable": sum(y_fit), "unanswerable": len(y_fit) - sum(y_fit)},
           "dev": {"answerable": sum(y_dev), "unanswerable": len(y_dev) - sum(y_dev)},
           **rates, "dev_auc_by_candidate": table}
    return AnswerabilityHead(layer, with_overlap, l2, score, threshold, model_id, dev, with_surprisal,
                             dataclasses.asdict(vocab) if with_lexical and vocab is not None else None, None)


def choose_bagged(items: Sequence[dict[str, Any]], states: Any, model_id: str, n_heads: int, n_dev_documents: int,
                  seed: Any, *, surprisal: Any = None, budget: float = 0.05, **choose: Any) -> AnswerabilityHead:
    """``n_heads`` heads, each chosen by ``choose_head`` (its other options: ``choose``) on its own dev split of
    ``n_dev_documents`` documents drawn from ``items`` (seeded by ``seed`` and the head's number), averaged: the
    score is the mean of their scores, cut at the highest score that refuses at most ``budget`` of the answerable
    items by the mean of their out-of-fold scores over ``items`` (each family scored in ``choose_head``'s document
    folds). The threshold rule must refit every head on fit + dev (``out_of_fold_budget``), so all read the same
    prompts and differ in the family their dev split chose. Returns the first head with the others as its
    ``members``.

    Why (``TrainConfig.answerability_dev_splits``): one head chosen on one dev split's few dozen prompts lands
    anywhere in a band about ten points wide (the fifteenth pass's learning curve; the 88- and 104-document test
    splits' cuts, 91.6% and 83.8%, fell at its two ends). On the pseudo-test five bagged heads caught 94.2% of the
    unanswerable held prompts at 4.2% of the answerable refused (one head: 93.2% at 4.4%), lowest cell 89.2%
    (83.3%); docs/local_results.md."""
    import random

    import torch

    from helpers.config import check_answerability_bagging

    if n_heads < 2:
        raise ValueError(f"a bagged head averages at least 2 heads, got {n_heads}")
    check_answerability_bagging(n_heads, choose.get("threshold_rule", "dev_largest_gap"),
                                choose.get("choice", "dev_auc"), bool(choose.get("stacked")))
    docs = sorted({it["doc_id"] for it in items})
    if not 0 < n_dev_documents < len(docs):
        raise ValueError(f"each dev split needs 1 to {len(docs) - 1} of the {len(docs)} documents, got {n_dev_documents}")
    heads, devs = [], []
    for i in range(n_heads):
        dev_docs = set(random.Random(f"bag-{seed}-{i}").sample(docs, n_dev_documents))
        fit = [j for j, it in enumerate(items) if it["doc_id"] not in dev_docs]
        dev = [j for j, it in enumerate(items) if it["doc_id"] in dev_docs]
        devs.append(dev)
        heads.append(choose_head([items[j] for j in fit], states[fit], [items[j] for j in dev], states[dev], model_id,
                                 fit_surprisal=None if surprisal is None else surprisal[fit],
                                 dev_surprisal=None if surprisal is None else surprisal[dev], budget=budget, **choose))
    y = [bool(it["answerable"]) for it in items]
    oof = [out_of_fold_scores(h.design(states, items, surprisal), items, h.l2) for h in heads]
    threshold, oof_rates, _ = _out_of_fold_cut(mean_columns(oof), y, "out_of_fold_budget", budget)
    head = heads[0]
    head.members, head.threshold = heads[1:], threshold
    first_dev = torch.tensor(devs[0])  # the first head's dev split: the rates the record reports beside its own
    dev_items = [items[j] for j in devs[0]]
    dev_scores = head.scores(states[first_dev], dev_items, None if surprisal is None else surprisal[first_dev])
    head.dev = {**head.dev, **_rates_at(dev_scores, [bool(it["answerable"]) for it in dev_items], threshold),
                **oof_rates,
                "rule": (f"{n_heads} heads, each chosen on its own dev split of {n_dev_documents} documents by: "
                         f"{head.dev['rule']}; their scores averaged, refuse below the highest cut that refuses at most "
                         f"{budget:.0%} of the answerable prompts by the mean of their out-of-fold scores over fit + "
                         f"dev ({OOF_FOLDS} document folds)"),
                "bagged": {"heads": n_heads, "layers": [h.layer for h in heads], "l2s": [h.l2 for h in heads],
                           "dev_auc": [h.dev["dev_auc"] for h in heads]}}
    return head


def gate_answers(answers: Sequence[str], refuses: Sequence[bool]) -> list[str]:
    """The answers with the refusal sentence wherever the head says the document lacks the answer."""
    from helpers.config import REFUSAL

    return [REFUSAL if r else a for a, r in zip(answers, refuses, strict=True)]
