"""A learner's model wrong in one place fails a hidden test whose message names the part that diverges.

Each mutant is the reference solution with one line changed, graded by the hidden tests of its task; the
failure message must point at the right module (the hooks in tests/05/hf_reference.py compare every block).
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

MUTANTS = [  # (description, original line fragment, replacement, test selection, expected words in the message)
    ("attention scale sqrt(C)", "/ math.sqrt(k.size(-1))", "/ math.sqrt(C)", "small_models", "block 0: the attention"),
    ("GELU without tanh", 'F.gelu(self.c_fc(x), approximate="tanh")', "F.gelu(self.c_fc(x))", "small_models",
     "block 0: the MLP"),
    ("no causal mask", 'att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)', "att = att.softmax(dim=-1)",
     "small_models", "the attention"),
    ("post-norm block", "x = x + self.attn(self.ln_1(x), rope, offset)",
     "x = self.ln_1(x + self.attn(x, rope, offset))", "small_models", "block 0: ln_1"),
    ("no wpe", "x = x + self.transformer.wpe(", "x = x + 0 * self.transformer.wpe(", "small_models",
     "wte(idx) + wpe(positions)"),
    ("Conv1D weights not transposed", "value.t() if key.endswith(TRANSPOSED) else value", "value", "from_hf_loads",
     "wrong shape"),
]


@pytest.mark.slow
@pytest.mark.parametrize("what,original,mutated,selection,expected", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_a_single_mistake_fails_with_a_message_naming_the_part(course, tmp_path, what, original, mutated, selection,
                                                               expected):
    root = tmp_path / "root"
    shutil.copytree(course.solutions / "05", root / "05", ignore=shutil.ignore_patterns("__pycache__"))
    source = (root / "05" / "gpt2.py").read_text()
    assert source.count(original) == 1, f"the mutant's anchor for {what!r} is not in solutions/05/gpt2.py"
    (root / "05" / "gpt2.py").write_text(source.replace(original, mutated))
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/05", "-k", selection, "--impl-root", str(root),
                           "-p", "no:randomly", "-q"], cwd=course.root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert expected in proc.stdout, proc.stdout[-3000:]
