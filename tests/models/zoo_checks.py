"""Interface checks every recurrent architecture must pass (CONTRIBUTING.md, 'The model interface'), shared by the
model tests."""

from __future__ import annotations

import torch

BATCH, STEPS = 3, 8
LENGTHS = torch.tensor([8, 5, 2])


def as_tuple(state) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def check_shapes(model, input_size: int, output_size: int, steps: int = STEPS) -> None:
    """Outputs are [B, T, out] with and without lengths, and every state tensor has the batch in dim 1."""
    x = torch.randn(BATCH, steps, input_size)
    for lengths in (None, LENGTHS.clamp(max=steps)):
        outputs, state = model(x, lengths)
        assert outputs.shape == (BATCH, steps, output_size)
        assert torch.isfinite(outputs).all()
        for component in as_tuple(state):
            assert component.shape[1] == BATCH


def check_padding_does_not_leak(model, input_size: int, steps: int = STEPS) -> None:
    """Changing the inputs at padded steps changes no output at a valid step and no final state."""
    lengths = LENGTHS.clamp(max=steps)
    x = torch.randn(BATCH, steps, input_size)
    padded = torch.arange(steps)[None, :] >= lengths[:, None]
    noisy = torch.where(padded.unsqueeze(-1), 100 * torch.randn_like(x), x)
    out, state = model(x, lengths)
    out_noisy, state_noisy = model(noisy, lengths)
    valid = ~padded
    torch.testing.assert_close(out_noisy[valid], out[valid], rtol=0, atol=1e-6)
    assert not torch.allclose(x, noisy)
    for a, b in zip(as_tuple(state), as_tuple(state_noisy)):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


def check_carried_state(model, input_size: int, steps: int = STEPS, split: int = STEPS // 2) -> None:
    """Running two halves with the first half's final state carried equals running the whole sequence."""
    x = torch.randn(BATCH, steps, input_size)
    whole, whole_state = model(x)
    first, state = model(x[:, :split])
    second, final_state = model(x[:, split:], state=state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=0, atol=1e-5)
    for a, b in zip(as_tuple(final_state), as_tuple(whole_state)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def check_interface(
    model, input_size: int, output_size: int, carried: bool = True, steps: int = STEPS, split: int = STEPS // 2
) -> None:
    """All of the above in eval mode; ``carried`` only for unidirectional models (a backward pass sees the future)."""
    model.eval()
    with torch.no_grad():
        check_shapes(model, input_size, output_size, steps)
        check_padding_does_not_leak(model, input_size, steps)
        if carried:
            check_carried_state(model, input_size, steps, split)
