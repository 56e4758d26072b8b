"""docs/errors.md is what tests/errors_doc.py writes from the tests' bad-input tables now: it cannot drift."""
import difflib

import pytest

import errors_doc


def test_errors_doc_is_up_to_date():
    current = errors_doc.DOC.read_text(encoding="utf-8") if errors_doc.DOC.exists() else ""
    expected = errors_doc.render()
    if current != expected:
        diff = difflib.unified_diff(current.splitlines(), expected.splitlines(), "docs/errors.md", "regenerated",
                                    lineterm="", n=0)
        pytest.fail(f"docs/errors.md is out of date; regenerate it with `{errors_doc.COMMAND}`:\n"
                    + "\n".join(list(diff)[:30]))
