"""Milestone 06: single realistic mistakes in the reference (see grading/tests/mutation.py)."""

from mutation import Mutant

MUTANTS = [
    Mutant('06', 'processors', 'top-p drops the crossing token',
           'remove_sorted = mass_before >= top_p',
           'remove_sorted = mass_before + probs >= top_p',
           'drops the token whose probability crosses', select='top_p_equals'),
    Mutant('06', 'processors', 'top-p keeps the crossing token only when below p',
           'remove_sorted = mass_before >= top_p',
           'remove_sorted = mass_before + probs > top_p',
           'the token that crosses (or reaches)', select='exactly_representable'),
    Mutant('06', 'processors', 'top-k without ties',
           'return logits.masked_fill(logits < kth_largest, float("-inf"))',
           ('return logits.masked_fill(~torch.zeros_like(logits, dtype=torch.bool).scatter(-1, '
            'torch.topk(logits, k).indices, True), float("-inf"))'),
           'with ties', select='tied_with_the_kth'),
    Mutant('06', 'processors', 'penalties count padding',
           'counts.scatter_add_(1, tokens, mask.to(torch.float32))',
           'counts.scatter_add_(1, tokens, torch.ones_like(tokens, dtype=torch.float32))',
           'counted padded positions', select='padding_never_counts'),
    Mutant('06', 'processors', 'repetition penalty divides negative logits',
           'torch.where(logits < 0, logits * penalty, logits / penalty)',
           'logits / penalty',
           'wrong on negative logits', select='repetition_penalty_equals'),
    Mutant('06', 'processors', 'temperature multiplies',
           'return logits / temperature',
           'return logits * temperature',
           'divide, do not multiply', select='temperature_divides'),
    Mutant('06', 'sampling', 'temperature after top-p',
           ('        if config.temperature != 1:\n            logits = processors.apply_temperature(logits, '
            'config.temperature)\n        if config.top_k is not None:\n            logits = '
            'processors.top_k_filter(logits, config.top_k, config.min_tokens_to_keep)\n        if '
            'config.top_p < 1:\n            logits = processors.top_p_filter(logits, config.top_p, '
            'config.min_tokens_to_keep)\n'),
           ('        if config.top_k is not None:\n            logits = processors.top_k_filter(logits, '
            'config.top_k, config.min_tokens_to_keep)\n        if config.top_p < 1:\n            logits = '
            'processors.top_p_filter(logits, config.top_p, config.min_tokens_to_keep)\n        if '
            'config.temperature != 1:\n            logits = processors.apply_temperature(logits, '
            'config.temperature)\n'),
           'temperature after top-k and top-p', select='process_logits_equals'),
    Mutant('06', 'sampling', 'presence/frequency count the prompt',
           'tokens[:, prompt_length:], config.presence_penalty',
           'tokens, config.presence_penalty',
           'counted the prompt', select='greedy_penalizes'),
    Mutant('06', 'sampling', 'no context crop',
           'model(idx[:, -block_size:])',
           'model(idx)',
           'crop the context', select='crops_the_context'),
    Mutant('06', 'sampling', 'context cropped one token short',
           'model(idx[:, -block_size:])',
           'model(idx[:, -block_size + 1:])',
           'the last block_size tokens, no fewer', select='crops_the_context'),
    Mutant('06', 'sampling', 'no padding after end of text',
           'next_token = next_token.masked_fill(finished, pad_token_id)',
           'next_token = next_token',
           'pad_token_id=96: new token', select='end_of_text'),
    Mutant('06', 'sampling', 'no early stop when every row has ended',
           '                if finished.all():\n                    break\n',
           '',
           'stop once every row has ended', select='end_of_text'),
    Mutant('06', 'sampling', 'the generator not passed on',
           'return draw(logits.softmax(dim=-1), generator)',
           'return draw(logits.softmax(dim=-1))',
           'pass `generator` on to draw', select='one_generator'),
    Mutant('06', 'sampling', 'argmax instead of a draw',
           'return draw(logits.softmax(dim=-1), generator)',
           'return logits.argmax(dim=-1)',
           'do not follow the processed distribution', select='draws_from'),
]
