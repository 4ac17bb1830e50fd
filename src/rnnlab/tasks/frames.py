"""Frame prediction with an encoder-forecaster (Shi et al. 2015, section 3.2): encode the context, forecast the rest.

A frame-prediction batch (``rnnlab.data.video`` ``mode: predict``) has per-step targets and a ``target_mask`` [B, T]
that is False on the context steps of each clip and True on the steps to predict. For clip b with c_b context steps:

    state_b            = encoder(x_b[0 : c_b])                      model(inputs, min(lengths, c), None)
    y_b[c_b : T]       = forecaster(state_b, T - c_b steps)         model.forecast(state, steps), no input frames
    y_b[0 : c_b]       = the encoder's per-step outputs             (outside the loss: target_mask is False there)

so the forecast never sees the frames it predicts (the datamodule blanks them anyway). Loss, metrics and everything
else are :class:`~rnnlab.tasks.sequence.SequenceTask`'s; batches without ``target_mask`` run the model as it does.
"""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.data.base import TaskSpec
from rnnlab.errors import ConfigError
from rnnlab.tasks.sequence import SequenceTask


def encode_and_forecast(
    model: nn.Module, inputs: torch.Tensor, lengths: torch.Tensor, target_mask: torch.Tensor
) -> torch.Tensor:
    """Outputs [B, T, O] of the encoder on each clip's context steps and of the forecaster on the steps after them.

    ``inputs`` [B, T, ...], ``lengths`` [B], ``target_mask`` [B, T] bool; the context of clip b is its leading run of
    False (at least one step).
    """
    steps = target_mask.shape[1]
    context = (~target_mask).long().cumprod(dim=1).sum(dim=1)  # [B] leading steps without a target
    if bool((context < 1).any()):
        raise ValueError("frame prediction needs at least one context step (target_mask False) before the targets")
    lengths = lengths.to(context.device)
    longest = int(context.max())
    encoded, state = model(inputs[:, :longest], torch.minimum(lengths, context))  # state after each clip's context
    forecast_steps = steps - int(context.min())
    if forecast_steps == 0:
        return encoded
    forecast, _ = model.forecast(state, forecast_steps)  # [B, forecast_steps, O]
    time = torch.arange(steps, device=context.device)[None, :]
    index = (time - context[:, None]).clamp(0, forecast_steps - 1)  # forecast step of each output step
    from_forecast = forecast.gather(1, index.unsqueeze(-1).expand(-1, -1, forecast.shape[-1]))
    from_encoder = nn.functional.pad(encoded, (0, 0, 0, steps - longest))
    return torch.where((time >= context[:, None]).unsqueeze(-1), from_forecast, from_encoder)


class FramePredictionTask(SequenceTask):
    """:class:`SequenceTask` whose model encodes each clip's context frames and forecasts the others from the
    encoder's state (:func:`encode_and_forecast`). The model needs ``forecast(state, steps) -> (outputs, state)``
    (``rnnlab.models.convolutional.ConvLSTM``). Same constructor as :class:`SequenceTask`.
    """

    def __init__(self, model: nn.Module, spec: TaskSpec, *args, **kwargs):
        if not callable(getattr(model, "forecast", None)):
            raise ConfigError("_target_", f"{type(model).__name__} has no forecast(state, steps); use task=sequence")
        super().__init__(model, spec, *args, **kwargs)

    def run_model(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        target_mask = batch.get("target_mask")
        if target_mask is None or self.embedding is not None:
            return super().run_model(batch, stage)
        return encode_and_forecast(self.model, batch["inputs"], batch["lengths"], target_mask)
