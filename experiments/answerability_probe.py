"""Dev diagnostic: does the model's own hidden state tell answerable from unanswerable, where its greedy
answers do not?

Three passes of issue 16 trained adapters whose refusals do not follow the document (refusal gap
near zero on whole dev documents), while the word-overlap rule separates the kinds (AUC 0.87). This asks
whether the information is inside the model: one forward pass per prompt (the prompt exactly as
evaluation renders it, followed by the refusal sentence) gives the last prompt token's hidden state at
every layer, and the mean log-probability of the refusal sentence. A logistic regression per layer,
fitted on the training documents that are not dev documents, is scored on the dev documents (the same
dev documents the dev choice uses), as an AUC; beside it the refusal log-probability alone and the
word-overlap share. Reads the training split only, never the test split.

    python experiments/answerability_probe.py --pairs outputs/whole/pairs --out results/answerability_probe.json
    python experiments/answerability_probe.py --pairs outputs/whole/pairs --adapter outputs/whole/seed-42/adapter

Features are cached per prompt under ``--work`` (resumable: a stopped run keeps what it computed).
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

# the head's fit and threshold are the package's (``gemma-facts select --head-only`` fits the same kind of head)
from helpers.evaluate.answerability_head import auc, fit_logistic, overlap, youden_threshold  # noqa: E402


def prompt_key(item: dict) -> str:
    return hashlib.sha256(json.dumps([item["doc_id"], item["request"], item["document"], item["answerable"]])
                          .encode()).hexdigest()[:16]


def features(model, tokenizer, item: dict, prompt_format: str) -> dict:
    """Last prompt token's hidden state at every layer, and the refusal sentence's mean log-probability."""
    import torch

    from helpers.prompts import REFUSAL, render_prompt

    text = render_prompt(item["prompt"], prompt_format, tokenizer)
    prompt_ids = tokenizer(text, add_special_tokens=(prompt_format == "plain"))["input_ids"]
    refusal_ids = tokenizer(REFUSAL, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + refusal_ids])
    with torch.inference_mode():  # the vocabulary's logits only where they score the refusal (the last R + 1 positions)
        out = model(input_ids=ids, output_hidden_states=True, logits_to_keep=len(refusal_ids) + 1)
    last = len(prompt_ids) - 1
    hidden = torch.stack([h[0, last].float() for h in out.hidden_states])  # (layers + 1, hidden)
    logits = out.logits[0, :len(refusal_ids)].float().log_softmax(-1)  # positions last .. last + R - 1
    logp = logits.gather(1, torch.tensor(refusal_ids)[:, None]).mean().item()
    first = logits[0, refusal_ids[0]].item()
    return {"hidden": hidden, "refusal_logp": logp, "refusal_first_logp": first, "tokens": len(prompt_ids)}


def score_test(args, model, tokenizer, model_cfg, table, scorer, threshold: float) -> dict:
    """Read the test split once: the base model's greedy answers (the evaluation's own, from the base-answer
    cache or generated here), replaced by the refusal where the head says the document lacks the answer,
    judged offline exactly as ``gemma-facts evaluate`` judges; the Banana test and the other probes too."""
    from helpers.config import REFUSAL, EvalConfig, config_for
    from helpers.evaluate.probes import PROBES, run_probes
    from helpers.evaluate.run import eval_items, generate_side, judge_side, load_test_rows, summarise_sets

    eval_cfg = config_for(EvalConfig, "local")
    items = eval_items(load_test_rows(args.test_pairs or args.pairs), eval_cfg.max_examples, eval_cfg.seed)

    def base_answers(messages_list):  # the evaluation's own base answers: its cache, else generated (adapter off)
        return generate_side(model, tokenizer, messages_list, "base", model_cfg, eval_cfg)

    def gated(its, answers):
        scores = scorer(its, table(its, "test"))
        return [REFUSAL if s < threshold else a for s, a in zip(scores, answers, strict=True)], scores

    answers = base_answers([it["prompt"] for it in items])
    with_head, scores = gated(items, answers)
    judged = {"base": judge_side(items, answers, eval_cfg), "aligned": judge_side(items, with_head, eval_cfg)}
    summary = summarise_sets(items, judged, "offline")
    probe_answers = {}

    def probe_gen(side):  # run_probes asks every probe of PROBES, in order
        def gen(messages_list):
            plain = base_answers(messages_list)
            if side == "base":
                return plain
            its = [{"doc_id": "probe", "request": p.request, "document": p.document, "answerable": p.answerable,
                    "prompt": m} for p, m in zip(PROBES, messages_list, strict=True)]
            return gated(its, plain)[0]
        return gen

    for side in ("base", "aligned"):
        probe_answers[side] = run_probes(probe_gen(side))
    banana = {side: next(p for p in probe_answers[side] if p["name"] == "banana") for side in probe_answers}
    return {"items": len(items), "n_answerable": summary["n_answerable"], "n_unanswerable": summary["n_unanswerable"],
            "base": summary["base"], "base_with_head": summary["aligned"],
            "relative_hallucination_reduction": summary["relative_hallucination_reduction"],
            "breakdowns": {"base": summary["breakdowns"]["base"], "base_with_head": summary["breakdowns"]["aligned"]},
            "banana": {s: {"answer": b["answer"], "passed": b["passed"]} for s, b in banana.items()},
            "probes_passed": {s: sum(p["passed"] for p in v) for s, v in probe_answers.items()},
            "probes": len(probe_answers["base"])}


def plot_by_layer(records: dict[str, dict], path: str | Path) -> Path:
    """Dev AUC of the hidden-state probe by layer (best L2 per layer), one line per recorded model, with the
    word-overlap rule and chance as references: where in the network answerability is readable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, record in records.items():
        best: dict[int, float] = {}
        for key, value in record["probe_dev_auc_by_layer"].items():
            layer = int(key.split("/")[0])
            best[layer] = max(best.get(layer, 0.0), value)
        layers = sorted(best)
        ax.plot(layers, [best[x] for x in layers], marker="o", label=label)
        ax.set_xticks(layers)
    overlap_auc = next(iter(records.values()))["dev_auc"]["word_overlap"]
    ax.axhline(overlap_auc, color="grey", linestyle="--", label=f"word-overlap share, no model ({overlap_auc:.2f})")
    ax.axhline(0.5, color="black", linewidth=0.8, linestyle=":", label="chance")
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("dev AUC, answerable vs unanswerable")
    ax.set_title("Is answerability linearly readable from the last prompt token?")
    ax.set_ylim(0.4, 1.0)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="outputs/whole/pairs")
    parser.add_argument("--fit-pairs", default=None,
                        help="fit the probe on this folder's training split (its non-dev documents) instead, e.g. "
                             "the 128-token excerpt pairs, whose prompts cost a tenth of a whole document's")
    parser.add_argument("--adapter", default=None, help="score with this adapter attached (default: the base)")
    parser.add_argument("--work", default="outputs/answerability_probe")
    parser.add_argument("--out", default=None)
    parser.add_argument("--score-test", action="store_true",
                        help="after the dev choice, read the test split once and score the base model with the head")
    parser.add_argument("--another-test-read", action="store_true",
                        help="allow --score-test when --out already records a test read (the test split is read once "
                             "per recorded run; a second read is a new run and should say why)")
    parser.add_argument("--test-pairs", default=None, help="test split to score (default: --pairs)")
    parser.add_argument("--plot", nargs="+", metavar="LABEL=RECORD", default=None,
                        help="only draw the dev AUC by layer of recorded runs into --out (a .png), e.g. "
                             "'base=results/answerability_head.json'")
    parser.add_argument("--limit", type=int, default=None, help="at most this many fit prompts (timing runs)")
    args = parser.parse_args()

    if args.plot:
        records = {label: json.loads(Path(rec).read_text(encoding="utf-8"))
                   for label, rec in (item.split("=", 1) for item in args.plot)}
        print(plot_by_layer(records, args.out or "answerability_by_layer.png"))
        return 0
    if args.score_test and args.out and Path(args.out).exists() and not args.another_test_read \
            and "test" in json.loads(Path(args.out).read_text(encoding="utf-8")):
        raise SystemExit(f"{args.out} already records a test read of this head; the test split is read once per "
                         "recorded run (pass --another-test-read, and a new --out, to record another)")

    import torch
    from tqdm.auto import tqdm

    from helpers.config import ModelConfig, TrainConfig, config_for
    from helpers.evaluate.run import eval_items, load_aligned_model
    from helpers.models import load_model_and_tokenizer
    from helpers.train.dpo import dev_split, load_pairs
    from helpers.train.report import code_revision

    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.perf_counter()
    train_cfg = config_for(TrainConfig, "local")
    rows = load_pairs(args.pairs)["train"]
    fit_rows, dev_rows = dev_split(rows, train_cfg.select_dev_documents, train_cfg.dev_seed)
    if args.fit_pairs:
        other = load_pairs(args.fit_pairs)["train"]
        fit_rows, other_dev = dev_split(other, train_cfg.select_dev_documents, train_cfg.dev_seed)
        if set(other_dev["doc_id"]) != set(dev_rows["doc_id"]):
            raise SystemExit("--fit-pairs has other dev documents than --pairs")
    fit_items, dev_items = eval_items(list(fit_rows), set_name="fit"), eval_items(list(dev_rows), set_name="dev")
    if args.limit:
        fit_items = fit_items[: args.limit]
    model_cfg = config_for(ModelConfig, "local")
    if args.adapter:
        model, tokenizer = load_aligned_model(model_cfg, args.adapter)
    else:
        model, tokenizer = load_model_and_tokenizer(model_cfg)
    model.eval()
    side = "aligned-" + hashlib.sha256(Path(args.adapter, "adapter_model.safetensors").read_bytes()).hexdigest()[:12] \
        if args.adapter else "base"
    cache = Path(args.work) / side
    cache.mkdir(parents=True, exist_ok=True)

    def table(items, name):
        out = []
        for it in tqdm(items, desc=f"{name} prompts ({side})"):
            path = cache / f"{prompt_key(it)}.pt"
            if path.exists():
                feats = torch.load(path)
            else:
                feats = features(model, tokenizer, it, model_cfg.prompt_format)
                tmp = path.with_suffix(".tmp")
                torch.save(feats, tmp)
                tmp.replace(path)
            out.append(feats)
        return out

    fit_f, dev_f = table(fit_items, "fit"), table(dev_items, "dev")
    y_fit = torch.tensor([it["answerable"] for it in fit_items])
    y_dev = [it["answerable"] for it in dev_items]

    def dev_auc(scores):
        return auc([s for s, a in zip(scores, y_dev, strict=True) if a], [s for s, a in zip(scores, y_dev, strict=True) if not a])

    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python experiments/answerability_probe.py " + " ".join(sys.argv[1:]),
              "code": code_revision(), "side": side, "fit": {"answerable": int(y_fit.sum()), "unanswerable": int((~y_fit).sum())},
              "dev": {"answerable": sum(y_dev), "unanswerable": len(y_dev) - sum(y_dev)},
              "dev_auc": {
                  "word_overlap": dev_auc([overlap(it["request"], it["document"]) for it in dev_items]),
                  "refusal_logp (low = answerable)": dev_auc([-f["refusal_logp"] for f in dev_f]),
                  "refusal_first_token_logp": dev_auc([-f["refusal_first_logp"] for f in dev_f])},
              "fit_pairs": args.fit_pairs or args.pairs, "probe_dev_auc_by_layer": {},
              "probe_with_overlap_dev_auc_by_layer": {}}
    layers = fit_f[0]["hidden"].shape[0]

    def extra(items, feats):  # word-overlap share and refusal log-probability, beside the hidden state
        return torch.tensor([[overlap(it["request"], it["document"]), f["refusal_logp"]]
                             for it, f in zip(items, feats, strict=True)])

    def design(feats, items, layer, with_overlap):
        x = torch.stack([f["hidden"][layer] for f in feats])
        return torch.cat([x, extra(items, feats)], 1) if with_overlap else x

    candidates = []  # the dev choice is the highest dev AUC; ties go to the lower layer, then the smaller l2
    for layer in range(layers):
        for with_overlap in (False, True):
            for l2 in (1e-3, 1e-2, 1e-1):
                score = fit_logistic(design(fit_f, fit_items, layer, with_overlap), y_fit, l2)
                dev_scores = score(design(dev_f, dev_items, layer, with_overlap)).tolist()
                value = dev_auc(dev_scores)
                key = "probe_with_overlap_dev_auc_by_layer" if with_overlap else "probe_dev_auc_by_layer"
                record[key][f"{layer}/l2={l2}"] = value
                candidates.append({"dev_auc": value, "layer": layer, "l2": l2, "with_overlap": with_overlap,
                                   "score": score, "dev_scores": dev_scores})
    best = max(candidates, key=lambda c: (c["dev_auc"], -c["layer"], -c["l2"]))
    layer, with_overlap, score = best["layer"], best["with_overlap"], best["score"]
    threshold, balanced = youden_threshold(best["dev_scores"], y_dev)
    record["dev_choice"] = {
        "rule": "highest dev AUC over layers x l2 x (hidden | hidden + overlap + refusal log-prob); "
                "refuse below the threshold with the largest dev (unanswerable refused - answerable refused)",
        **{k: best[k] for k in ("layer", "l2", "with_overlap", "dev_auc")}, "threshold": threshold, **balanced}
    print(json.dumps(record["dev_choice"], indent=2), flush=True)
    if args.score_test:
        record["test"] = score_test(args, model, tokenizer, model_cfg, table,
                                    lambda items, feats: score(design(feats, items, layer, with_overlap)).tolist(),
                                    threshold)
    record["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(record, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
