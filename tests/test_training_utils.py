"""Helpers every training script shares."""

import pytest
import torch
from diffusers.optimization import get_scheduler

from hf_genzoo.training_utils import plan_steps, set_learning_rate


def test_set_learning_rate_rescales_a_running_schedule():
    """After resuming (which restores the checkpoint's rates), the flag's rate takes over and the schedule's
    shape continues from the same step."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=2, num_training_steps=10)
    reference_optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    reference = get_scheduler("cosine", optimizer=reference_optimizer, num_warmup_steps=2, num_training_steps=10)
    for _ in range(4):
        optimizer.step(), scheduler.step(), reference_optimizer.step(), reference.step()
    set_learning_rate(optimizer, 1e-4, scheduler)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(reference_optimizer.param_groups[0]["lr"])
    for _ in range(3):
        optimizer.step(), scheduler.step(), reference_optimizer.step(), reference.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(reference_optimizer.param_groups[0]["lr"])
    assert scheduler.get_last_lr() == pytest.approx(reference.get_last_lr())


def test_plan_steps_refuses_a_batch_larger_than_the_data():
    assert plan_steps(100, 10, 2, 3, None) == (10, 15)
    assert plan_steps(100, 10, 3, 3, 7) == (9, 7)  # epochs end on an optimiser step
    with pytest.raises(ValueError, match="8 training images are fewer than one global batch of 16"):
        plan_steps(8, 16, 1, 1, None)
