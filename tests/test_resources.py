"""Running out of memory: one line saying which setting to lower, and a resume where it can."""

import pytest
import torch

from ltcifar.device import out_of_memory_hint
from ltcifar.errors import PipelineError
from ltcifar.training.checkpoints import fingerprint, seed_config
from tests.conftest import recipe


def test_out_of_memory_names_the_settings_to_lower():
    with pytest.raises(PipelineError) as err, out_of_memory_hint("run 'x'"):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")
    message = str(err.value)
    assert "\n" not in message and message.startswith("run 'x' ran out of memory (CUDA out")
    assert "eval_batch_size" in message and "batch_size (training; a new run)" in message


def test_the_cpu_allocator_message_counts_and_other_errors_pass_through():
    with pytest.raises(PipelineError), out_of_memory_hint("run 'x'"):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB")
    with pytest.raises(RuntimeError, match="shape mismatch"), out_of_memory_hint("run 'x'"):
        raise RuntimeError("shape mismatch")


def test_a_smaller_eval_batch_resumes_a_smaller_training_batch_does_not():
    cfg = seed_config(recipe(), 0)
    assert fingerprint({**cfg, "eval_batch_size": 64}) == fingerprint(cfg)
    assert fingerprint({**cfg, "batch_size": 16}) != fingerprint(cfg)
