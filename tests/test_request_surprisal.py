"""The request surprisal (helpers.evaluate.answerability_head, read by the head with
``TrainConfig.answerability_surprisal`` and by experiments/request_surprisal.py): the request's tokens are scored
at the right positions, given the prompt before them, and the summaries are what their names say.

An off-by-one in the span or in the logits kept would score the wrong tokens (the template's, or the request's
shifted by one) and still give numbers; the check is a second, plain forward pass over the whole prompt on the
tiny smoke model through the real 4-bit path."""

from __future__ import annotations

from helpers.evaluate.answerability_head import request_token_logps, surprisal_summary


def test_request_tokens_are_scored_given_everything_before_them(smoke_model, smoke_model_cfg):
    import torch

    from helpers.prompts import build_messages, render_prompt

    model, tokenizer = smoke_model
    fmt = smoke_model_cfg.prompt_format
    request = "Which river flows through Paris?"
    messages = build_messages("The Seine flows through Paris. It is 777 km long.", request)
    values, state = request_token_logps(model, tokenizer, messages, request, fmt, hidden=True)
    text = render_prompt(messages, fmt, tokenizer)
    ids = tokenizer(text, add_special_tokens=(fmt == "plain"))["input_ids"]
    # the request's tokens found independently: the shortest window of the prompt's tokens that decodes to the
    # request (its first token may carry the space before it, so the request tokenised alone would not match)
    start, n = min(((i, k) for i in range(len(ids)) for k in range(1, len(ids) - i + 1)
                    if tokenizer.decode(ids[i:i + k]).strip() == request), key=lambda w: w[1])
    assert len(values) == n
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    logp = out.logits[0].float().log_softmax(-1)
    expected = [logp[i - 1, ids[i]].item() for i in range(start, start + n)]
    # tolerance 1e-4: the function keeps only the last positions' logits, so the two passes may block the
    # lm-head matmul differently (float rounding), as in tests/test_answerability_probe.py
    assert max(abs(a - b) for a, b in zip(values, expected, strict=True)) < 1e-4
    assert torch.allclose(state, torch.stack([h[0, -1].float() for h in out.hidden_states]), atol=1e-4, rtol=1e-4)


def test_summaries_follow_their_names():
    with_doc, without_doc = [-1.0, -2.0, -6.0, -0.5], [-3.0, -2.5, -5.0, -4.5]
    mean, top1, top3, mean_pmi, min_pmi, share = surprisal_summary(with_doc, without_doc)
    assert (mean, top1, top3) == (2.375, 6.0, 3.0)  # surprisal = -log p given the document
    assert (mean_pmi, min_pmi, share) == (1.375, -1.0, 0.75)  # PMI = log p(with) - log p(without)
