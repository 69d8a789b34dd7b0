import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["dino", "ibot", "koleo", "gram"])
def test_docstring_examples_run(module):
    mod = importlib.import_module(f"dinolab.losses.{module}")
    import torch

    result = doctest.testmod(mod, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
