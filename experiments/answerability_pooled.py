"""Dev diagnostic: does the answerability head read more from the whole request than from its last token?

The head of ``helpers.evaluate.answerability_head`` reads one state per prompt, the last prompt token's. It
catches a request about another document's subject (unrelated) but half of the near misses and the
answer-removed requests pass it. Every token of the request has read the document, so the mean state
over the request's tokens (from ``USER REQUEST:`` to the end of the prompt) may hold what the last token
lost. One forward pass per prompt gives both; the same fit / dev split and dev choice as the head's,
scored per layer and per unanswerable kind on dev. Reads the training split only, never the test split.

    python experiments/answerability_pooled.py --pairs outputs/whole/pairs --out results/answerability_pooled.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from helpers.evaluate.answerability_head import auc, fit_logistic, overlap, youden_threshold  # noqa: E402

MARKER = "USER REQUEST:"


def pooled_states(model, tokenizer, text: str, prompt_format: str):
    """(layers + 1, 2, hidden): the last prompt token's state and the mean state over the request's tokens."""
    import torch

    enc = tokenizer(text, add_special_tokens=(prompt_format == "plain"), return_offsets_mapping=True)
    start_char = text.rindex(MARKER)
    start = next(i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > start_char)
    ids = torch.tensor([enc["input_ids"]])
    with torch.inference_mode():
        out = model(input_ids=ids, output_hidden_states=True, logits_to_keep=1)
    return torch.stack([torch.stack([h[0, -1].float(), h[0, start:].float().mean(0)]) for h in out.hidden_states])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="outputs/whole/pairs")
    parser.add_argument("--work", default="outputs/answerability_pooled")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch
    from tqdm.auto import tqdm

    from helpers.config import ModelConfig, TrainConfig, config_for
    from helpers.evaluate.run import eval_items
    from helpers.models import load_model_and_tokenizer
    from helpers.prompts import render_prompt
    from helpers.train.dpo import dev_split, load_pairs
    from helpers.train.report import code_revision

    started = time.perf_counter()
    train_cfg, model_cfg = config_for(TrainConfig, "local"), config_for(ModelConfig, "local")
    fit_rows, dev_rows = dev_split(load_pairs(args.pairs)["train"], train_cfg.select_dev_documents, train_cfg.dev_seed)
    fit_items, dev_items = eval_items(list(fit_rows), set_name="fit"), eval_items(list(dev_rows), set_name="dev")
    model, tokenizer = load_model_and_tokenizer(model_cfg)
    model.eval()
    cache = Path(args.work)
    cache.mkdir(parents=True, exist_ok=True)

    def table(items, name):
        out = []
        for it in tqdm(items, desc=f"{name} prompts"):
            text = render_prompt(it["prompt"], model_cfg.prompt_format, tokenizer)
            path = cache / (hashlib.sha256(text.encode()).hexdigest()[:24] + ".pt")
            if path.exists():
                out.append(torch.load(path))
                continue
            state = pooled_states(model, tokenizer, text, model_cfg.prompt_format)
            tmp = path.with_suffix(".tmp")
            torch.save(state, tmp)
            tmp.replace(path)
            out.append(state)
        return torch.stack(out)

    fit_x, dev_x = table(fit_items, "fit"), table(dev_items, "dev")
    y_fit = torch.tensor([it["answerable"] for it in fit_items])
    y_dev = [it["answerable"] for it in dev_items]
    share = {name: torch.tensor([[overlap(it["request"], it["document"])] for it in items])
             for name, items in (("fit", fit_items), ("dev", dev_items))}

    def design(x, name, layer, kind, with_overlap):
        parts = {"last": [x[:, layer, 0]], "request_mean": [x[:, layer, 1]],
                 "last+request_mean": [x[:, layer, 0], x[:, layer, 1]]}[kind]
        return torch.cat(parts + ([share[name]] if with_overlap else []), 1)

    def dev_auc(scores, keep=None):
        pos = [s for s, a in zip(scores, y_dev, strict=True) if a]
        neg = [s for s, a, it in zip(scores, y_dev, dev_items, strict=True) if not a and (keep is None or keep(it))]
        return auc(pos, neg)

    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python experiments/answerability_pooled.py " + " ".join(sys.argv[1:]),
              "code": code_revision(), "fit": {"answerable": int(y_fit.sum()), "unanswerable": int((~y_fit).sum())},
              "dev": {"answerable": sum(y_dev), "unanswerable": len(y_dev) - sum(y_dev)}, "dev_auc": {}, "best": {}}
    for kind in ("last", "request_mean", "last+request_mean"):
        for with_overlap in (False, True):
            name = kind + ("+overlap" if with_overlap else "")
            best = None
            for layer in range(fit_x.shape[1]):
                for l2 in (1e-3, 1e-2, 1e-1):
                    score = fit_logistic(design(fit_x, "fit", layer, kind, with_overlap), y_fit, l2)
                    scores = score(design(dev_x, "dev", layer, kind, with_overlap)).tolist()
                    value = dev_auc(scores)
                    record["dev_auc"][f"{name}/{layer}/l2={l2}"] = value
                    if best is None or value > best[0]:
                        best = (value, layer, l2, scores)
            value, layer, l2, scores = best
            threshold, rates = youden_threshold(scores, y_dev)
            kinds = sorted({s for it in dev_items if not it["answerable"] for s in it["source"]})
            record["best"][name] = {"layer": layer, "l2": l2, "dev_auc": value, **rates,
                                    "dev_auc_by_kind": {k: dev_auc(scores, lambda it, k=k: k in it["source"])
                                                        for k in kinds}}
            print(name, json.dumps(record["best"][name]), flush=True)
    record["seconds"] = round(time.perf_counter() - started, 1)
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
