"""Training resumes from its checkpoint to exactly the weights of an uninterrupted run."""

import pytest
import torch

from loupe.demo.train import batch_order, lr_at, train_model
from loupe.demo.world import world_config

CFG = world_config("micro", train_steps=12, checkpoint_every=4, vocab_size=64, n_ctx=16, batch_size=4)


def tokens():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 64, (20, 16), generator=g)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[:, 0] = False
    return {"input_ids": ids, "loss_mask": mask}


def test_lr_schedule():
    assert lr_at(0, CFG) == pytest.approx(CFG.lr / CFG.warmup_steps)
    assert lr_at(CFG.warmup_steps, CFG) == pytest.approx(CFG.lr)
    assert lr_at(CFG.train_steps, CFG) == pytest.approx(0.1 * CFG.lr)


def test_batch_order_is_fixed_and_covers_every_sequence():
    a, b = batch_order(20, CFG), batch_order(20, CFG)
    assert torch.equal(a, b) and a.shape == (12, 4)
    assert set(a.flatten()[:20].tolist()) == set(range(20))  # the first epoch is a permutation


class Killed(Exception):
    pass


def test_resume_after_kill_matches_uninterrupted(tmp_path):
    straight, _ = train_model(CFG, tokens(), 64, 0, tmp_path / "a", lambda *a: None)

    def die_after_step_10(done, total, message):
        if done >= 10:  # progress is reported every 10 steps: this fires at step 11
            raise Killed()

    with pytest.raises(Killed):
        train_model(CFG, tokens(), 64, 0, tmp_path / "b", die_after_step_10)
    assert (tmp_path / "b" / "checkpoint.safetensors").exists()
    resumed, summary = train_model(CFG, tokens(), 64, 0, tmp_path / "b", lambda *a: None)
    assert summary["resumed_from"] == 8  # the last checkpoint before the kill
    for (n, p), (_, q) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(p, q, atol=1e-6), n
