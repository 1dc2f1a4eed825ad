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
found in the document. The dev choice is the highest dev AUC over layers × L2 strength × (state |
state + overlap share); the threshold is the one with the largest dev refusal gap (unanswerable
refused − answerable refused). The head is saved as JSON beside the adapter (``<output
root>/answerability_head.json``) and evaluation reports the base model's answers gated by it beside
base and aligned (``metrics.json``, ``answerability_head``). The test split is never read here.

States are cached per prompt on disk for the offline models (as the base answers are), so a stopped fit
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
    "AnswerabilityHead",
    "auc",
    "choose_head",
    "fit_logistic",
    "gate_answers",
    "head_features",
    "head_path",
    "overlap",
    "overlap_shares",
    "prompt_states",
    "youden_threshold",
]

HEAD_FILE = "answerability_head.json"
L2_STRENGTHS = (1e-3, 1e-2, 1e-1)


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


def prompt_states(model: Any, tokenizer: Any, items: Sequence[dict[str, Any]], model_cfg: Any, *,
                  desc: str = "prompt states", progress: bool = True) -> Any:
    """The last prompt token's hidden state at every layer, one prompt at a time: a float32 tensor
    ``(prompts, layers + 1, hidden)`` (index 0 = the embeddings).

    The prompt is rendered and tokenised as generation renders it, so the state is the one the model
    holds when it writes the answer's first token. One prompt per pass (no padding) keeps a prompt's
    state independent of its neighbours. Call it on the base model (adapter off: ``side_of(model,
    "base")``); the cache key does not know about adapters."""
    import torch
    from tqdm.auto import tqdm

    from helpers.config import cache_root
    from helpers.models import offline_model_identity
    from helpers.prompts import render_prompt

    identity = offline_model_identity(model_cfg)  # offline models only, as for the base answers
    key = json.dumps([*identity[0], *identity[1]]) if identity else None
    folder = cache_root() / "prompt_states" / hashlib.sha256(key.encode()).hexdigest()[:16] if key else None
    rows = []
    for item in tqdm(items, desc=desc, disable=not progress or not items):
        text = render_prompt(item["prompt"], model_cfg.prompt_format, tokenizer)
        path = folder / (hashlib.sha256(text.encode()).hexdigest()[:24] + ".pt") if folder else None
        if path is not None and path.exists():
            rows.append(torch.load(path))
            continue
        ids = tokenizer(text, add_special_tokens=(model_cfg.prompt_format == "plain"),
                        return_tensors="pt")["input_ids"].to(model.device)
        with torch.inference_mode():
            out = model(input_ids=ids, output_hidden_states=True, logits_to_keep=1)
        state = torch.stack([h[0, -1].float().cpu() for h in out.hidden_states])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(state, tmp)
            tmp.replace(path)
        rows.append(state)
    if not rows:
        return torch.zeros(0)
    return torch.stack(rows)


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
    n_ans, n_una = sum(answerable), len(answerable) - sum(answerable)

    def rates(cut):
        over = sum(s < cut for s, a in zip(scores, answerable, strict=True) if a) / n_ans
        caught = sum(s < cut for s, a in zip(scores, answerable, strict=True) if not a) / n_una
        return caught - over, over, caught

    cut = max(cuts, key=lambda c: rates(c)[0])
    gap, over, caught = rates(cut)
    return cut, {"dev_refusal_gap": round(gap, 3), "dev_answerable_refused": round(over, 3),
                 "dev_unanswerable_refused": round(caught, 3)}


@dataclasses.dataclass
class AnswerabilityHead:
    """Refuse where ``score(state at layer, [overlap share]) < threshold``. Saved as JSON."""

    layer: int
    with_overlap: bool
    l2: float
    score: LinearScore
    threshold: float
    model_id: str
    dev: dict[str, Any] = dataclasses.field(default_factory=dict)

    def design(self, states: Any, items: Sequence[dict[str, Any]]) -> Any:
        return head_features(states, items, self.layer, self.with_overlap)

    def scores(self, states: Any, items: Sequence[dict[str, Any]]) -> list[float]:
        return self.score(self.design(states, items)).tolist()

    def refuses(self, states: Any, items: Sequence[dict[str, Any]]) -> list[bool]:
        return [s < self.threshold for s in self.scores(states, items)]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=1), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> AnswerabilityHead:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(**{**data, "score": LinearScore(**data["score"])})


def overlap_shares(items: Sequence[dict[str, Any]]) -> Any:
    """The overlap share of each item, as a ``(items, 1)`` column (``overlap``)."""
    import torch

    return torch.tensor([[overlap(it["request"], it["document"])] for it in items])


def head_features(states: Any, items: Sequence[dict[str, Any]], layer: int, with_overlap: bool,
                  shares: Any = None) -> Any:
    """What a head of this layer reads: the state at ``layer``, and the overlap share beside it if asked.
    ``shares``: ``overlap_shares(items)`` computed once by a caller that reads many layers (it scans every
    document's words)."""
    import torch

    x = states[:, layer]
    if not with_overlap:
        return x
    return torch.cat([x, overlap_shares(items) if shares is None else shares], 1)


def choose_head(fit_items: Sequence[dict[str, Any]], fit_states: Any, dev_items: Sequence[dict[str, Any]],
                dev_states: Any, model_id: str, l2s: Sequence[float] = L2_STRENGTHS) -> AnswerabilityHead:
    """The dev choice: the highest dev AUC over layers × ``l2s`` × (state | state + overlap share), ties to
    the lower layer, then the smaller L2, then without the overlap; its threshold, the largest dev refusal
    gap. ``head.dev`` records every candidate's dev AUC and the dev rates at the threshold."""
    import torch

    y_fit = torch.tensor([bool(it["answerable"]) for it in fit_items])
    y_dev = [bool(it["answerable"]) for it in dev_items]
    if y_fit.all() or not y_fit.any() or all(y_dev) or not any(y_dev):
        raise ValueError("the answerability head needs answerable and unanswerable prompts in both the fit "
                         f"({int(y_fit.sum())} / {len(y_fit)} answerable) and the dev split "
                         f"({sum(y_dev)} / {len(y_dev)})")
    table: dict[str, float | None] = {}
    best: tuple | None = None
    fit_shares, dev_shares = overlap_shares(fit_items), overlap_shares(dev_items)
    for layer in range(fit_states.shape[1]):
        for with_overlap in (False, True):
            for l2 in l2s:
                score = fit_logistic(head_features(fit_states, fit_items, layer, with_overlap, fit_shares), y_fit, l2)
                dev_scores = score(head_features(dev_states, dev_items, layer, with_overlap, dev_shares)).tolist()
                value = auc([s for s, a in zip(dev_scores, y_dev, strict=True) if a],
                            [s for s, a in zip(dev_scores, y_dev, strict=True) if not a]) or 0.0
                table[f"{layer}/{'state+overlap' if with_overlap else 'state'}/l2={l2}"] = value
                rank = (value, -layer, -l2, not with_overlap)
                if best is None or rank > best[0]:
                    best = (rank, layer, with_overlap, l2, score, dev_scores)
    assert best is not None
    _, layer, with_overlap, l2, score, dev_scores = best
    threshold, rates = youden_threshold(dev_scores, y_dev)
    dev = {"rule": "highest dev AUC over layers x l2 x (state | state + overlap share); refuse below the "
                   "threshold with the largest dev refusal gap (unanswerable refused - answerable refused)",
           "dev_auc": table[f"{layer}/{'state+overlap' if with_overlap else 'state'}/l2={l2}"],
           "fit": {"answerable": int(y_fit.sum()), "unanswerable": int((~y_fit).sum())},
           "dev": {"answerable": sum(y_dev), "unanswerable": len(y_dev) - sum(y_dev)},
           **rates, "dev_auc_by_candidate": table}
    return AnswerabilityHead(layer, with_overlap, l2, score, threshold, model_id, dev)


def gate_answers(answers: Sequence[str], refuses: Sequence[bool]) -> list[str]:
    """The answers with the refusal sentence wherever the head says the document lacks the answer."""
    from helpers.config import REFUSAL

    return [REFUSAL if r else a for a, r in zip(answers, refuses, strict=True)]
