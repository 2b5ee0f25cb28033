"""Fixtures more than one room uses. The models they build are in tests/tiny_models.py."""

import pytest
import torch

from tests import tiny_models


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine every parallel region (the CPU
    attention kernel opens one even for a handful of tokens) waits for a time slice: 7x slower here. A module asks
    for it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def gpt2_dirs(tmp_path_factory):
    """A tiny GPT-2 set's base/model1/model2 folders, saved once per module."""
    return tiny_models.model_set_dirs(tmp_path_factory.mktemp("gpt2"), "gpt2")


class Steps(list):
    """The jobs of each decoding step's rows, one list per step."""

    def shared(self, *jobs) -> bool:
        """Whether one step decoded rows of every one of ``jobs``."""
        return any(all(any(j is job for j in step) for job in jobs) for step in self)


@pytest.fixture
def batches():
    """``batches(loop)``: Steps that get, at every step the decoding loop runs, the job of each row it decoded,
    read in the loop itself (DecodingLoop.on_step), so that no step is missed however busy the cores are."""
    watched = []

    def watch(loop) -> Steps:
        steps = Steps()
        loop.on_step = steps.append
        watched.append(loop)
        return steps

    yield watch
    for loop in watched:
        loop.on_step = None
