"""The pipeline tests' shared run."""

from __future__ import annotations

import pytest

from refusalscope.pipeline.outputs import write_outputs
from refusalscope.pipeline.run import run as run_pipeline
from tests.pipeline.runs import small_run


@pytest.fixture(scope="module")
def first_run(tiny_organism, tmp_path_factory):
    """``small_run()`` run and written (after the first module, from the session's cache)."""
    out = tmp_path_factory.mktemp("run")
    res = run_pipeline(small_run())
    write_outputs(res, out)
    return res, out
