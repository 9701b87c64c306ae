"""Every ``>>>`` example in docs/plans.md runs (fence-aware: the closing ``` is not output)."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "plans.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)


def test_the_page_has_examples() -> None:
    assert sum(">>>" in b for b in BLOCKS) >= 4


@pytest.mark.parametrize("index", [i for i, b in enumerate(BLOCKS) if ">>>" in b])
def test_docs_example(index: int) -> None:
    from cqs_design import make_plan

    parser = doctest.DocTestParser()
    test = parser.get_doctest(BLOCKS[index], {"make_plan": make_plan}, f"plans.md[{index}]",
                              str(DOC), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"docs/plans.md block {index} failed (see the output above)"
