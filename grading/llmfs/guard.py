"""Tamper evidence inside the grading process: the results channel is signed, and the machinery that decides
a test's outcome is watched.

The learner's code runs in the same process as the hidden tests, so it *could* reach into pytest. Two
things make that show instead of score:

- `Signer`: every results line carries an HMAC under a key the grader hands over through a pipe. The plugin
  reads the key and closes the pipe in `pytest_configure`, before any learner code is imported; a line
  written by anyone else (a fake results file, lines appended to the real one) fails the check.
- `Watch`: when collection ends (hidden tests imported, learner code not yet), it records the identity of
  every function and class attribute of pytest, pluggy, llmfs, builtins and the torch/numpy comparison
  functions, each hidden test function's code, the hidden test modules' constants and the course manifest.
  Before each result is written it looks again; anything replaced (`Function.runtest = lambda self: None`,
  `torch.allclose = ...`, a threshold edited) is reported, and from then on no test of that milestone passes.

Limits, said plainly: code in the same process that finds the key in memory, or removes the plugin's hooks
before they run, defeats this. It raises the bar from a one-line monkeypatch to deliberate reverse
engineering, which a look at the code (and `llmfs grade-all`'s per-submission log) will show.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

KEY_FD_ENV = "LLMFS_RESULTS_KEY_FD"
WATCHED_PACKAGES = ("_pytest", "pytest", "pluggy", "llmfs", "pytest_timeout", "hmac", "hashlib", "json")
WATCHED_MODULES = ("builtins", "math", "operator", "torch.testing", "torch.testing._comparison", "numpy.testing",
                   "numpy.testing._private.utils")
# torch rewraps some of its own functions when parts of it load lazily (torch._dynamo wraps manual_seed), so
# only the functions the tests compare with are watched there.
WATCHED_ATTRIBUTES = {
    "torch": ("allclose", "equal", "isclose", "all", "any", "eq", "tensor", "testing"),
    "torch._tensor": ("Tensor",),
    "numpy": ("allclose", "array_equal", "isclose", "testing"),
}
TENSOR_METHODS = ("allclose", "equal", "isclose", "item", "tolist", "all", "any", "eq", "__eq__", "__bool__")
IMMUTABLE = (int, float, str, bytes, bool, tuple, frozenset, type(None))


class Signer:
    """Signs results lines; the grader holds the same key and drops any line whose MAC does not match."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._seq = 0

    def sign(self, event: dict[str, Any]) -> str:
        self._seq += 1
        body = json.dumps({**event, "seq": self._seq})
        return json.dumps({"body": body, "mac": mac(self._key, body)})


def mac(key: bytes, body: str) -> str:
    return hmac.new(key, body.encode("utf-8"), hashlib.sha256).hexdigest()


def verify(key: bytes, line: dict[str, Any]) -> dict[str, Any] | None:
    """The event inside a signed line, or None if it was not signed with `key`."""
    body, tag = line.get("body"), line.get("mac")
    if not isinstance(body, str) or not isinstance(tag, str) or not hmac.compare_digest(mac(key, body), tag):
        return None
    try:
        event = json.loads(body)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def read_key_from_parent() -> bytes | None:
    """The key from the pipe named by LLMFS_RESULTS_KEY_FD; the pipe is closed and the variable removed."""
    fd = os.environ.pop(KEY_FD_ENV, None)
    if fd is None:
        return None
    with os.fdopen(int(fd), "rb") as pipe:
        return bytes.fromhex(pipe.read().decode("ascii").strip())


def _watched_module_names() -> list[str]:
    names = [n for n in list(sys.modules) if n in WATCHED_MODULES or n in WATCHED_ATTRIBUTES
             or any(n == p or n.startswith(p + ".") for p in WATCHED_PACKAGES)]
    return sorted(n for n in names if isinstance(sys.modules.get(n), ModuleType))


def _callables(module: ModuleType) -> Iterable[tuple[str, object]]:
    """(name, object) for every function and class of a module and every attribute of its own classes."""
    if module.__name__ in WATCHED_ATTRIBUTES:
        for name in WATCHED_ATTRIBUTES[module.__name__]:
            yield name, getattr(module, name, None)
        if module.__name__ == "torch._tensor":
            for name in TENSOR_METHODS:
                yield f"Tensor.{name}", vars(module.Tensor).get(name) or getattr(module.Tensor, name, None)
        return
    for name, value in list(vars(module).items()):
        if isinstance(value, type):
            yield name, value
            if getattr(value, "__module__", None) == module.__name__:
                for attr, member in list(vars(value).items()):
                    if callable(member) or isinstance(member, (staticmethod, classmethod, property)):
                        yield f"{name}.{attr}", member
        elif callable(value) or isinstance(value, ModuleType):
            yield name, value


def _constants(module: ModuleType) -> str:
    """A digest of a test module's immutable module-level values (seeds, sizes, tolerances)."""
    values = {k: v for k, v in vars(module).items() if not k.startswith("__") and isinstance(v, IMMUTABLE)}
    return hashlib.sha256(repr(sorted(values.items(), key=lambda kv: kv[0])).encode()).hexdigest()


class Watch:
    """Identities recorded once, compared before each result (see the module docstring)."""

    def __init__(self, items: dict[str, Any], test_modules: list[ModuleType], manifest: object,
                 plugins: Callable[[], Iterable[object]]) -> None:
        self.ids: dict[str, int] = {}
        self.objects: list[object] = []  # kept alive, so an id cannot be reused by a new object
        for module_name in _watched_module_names():
            for name, value in _callables(sys.modules[module_name]):
                self._keep(f"{module_name}.{name}", value)
        self.items = items
        for nodeid, item in items.items():
            self._keep(f"hidden test {nodeid}", getattr(item, "obj", None))
            self._keep(f"the code of hidden test {nodeid}", getattr(getattr(item, "obj", None), "__code__", None))
        self.test_modules = test_modules
        self.constants = {m.__name__: _constants(m) for m in test_modules}
        self.manifest, self.manifest_repr = manifest, repr(manifest)
        self.plugins = plugins
        self.plugin_ids = {id(p) for p in plugins()}

    def _keep(self, key: str, value: object) -> None:
        self.ids[key] = id(value)
        self.objects.append(value)

    def changes(self) -> list[str]:
        """What was replaced since the snapshot (empty when nothing was)."""
        changed = []
        for module_name in _watched_module_names():
            for name, value in _callables(sys.modules[module_name]):
                key = f"{module_name}.{name}"
                if key in self.ids and self.ids[key] != id(value):
                    changed.append(key)
        for nodeid, item in self.items.items():
            function = getattr(item, "obj", None)
            if id(function) != self.ids[f"hidden test {nodeid}"]:
                changed.append(f"hidden test {nodeid}")
            elif id(getattr(function, "__code__", None)) != self.ids[f"the code of hidden test {nodeid}"]:
                changed.append(f"the code of hidden test {nodeid}")
        changed += [f"constants of {m.__name__}" for m in self.test_modules
                    if _constants(m) != self.constants[m.__name__]]
        if repr(self.manifest) != self.manifest_repr:
            changed.append("the course manifest (points, limits or thresholds)")
        if added := {id(p) for p in self.plugins()} - self.plugin_ids:
            changed.append(f"{len(added)} pytest plugin(s) registered while testing")
        return changed
