"""The learning rules that carry the model's sensitivities forward (:mod:`rnnlab.training.rtrl`): real-time recurrent
learning (``rtrl``), the Green's function method (``gf``) and the block update (``bu``); :mod:`rnnlab.training.rules`
lists them."""

from __future__ import annotations

import torch

from rnnlab.models.base import valid_step_mask
from rnnlab.training.manual import ManualRule, detached, rule_error, window_loss
from rnnlab.training.rtrl import RecurrentSensitivity, check_supported
from rnnlab.training.weight_regularizers import L1, L2


class _SensitivityRule(ManualRule):
    """Shared by RTRL, GF and BU: the model's sensitivities, and their carry across batches of stateful data."""

    def __init__(self, settings, task):
        super().__init__(settings, task)
        if task.embedding is not None:
            raise rule_error(f"{self.name} cannot train embeddings of token inputs (use bptt, tbptt)")
        self.sensitivity = RecurrentSensitivity(task.model, self.name)
        self.carried_sensitivity: torch.Tensor | None = None

    @classmethod
    def check(cls, model, regularizers):
        super().check(model, regularizers)
        inside = [name for name, r in regularizers.items() if not isinstance(r, (L1, L2))]
        if inside:
            raise rule_error(
                f"{cls.name} runs its own recurrence, which regularizer {', '.join(inside)} cannot reach; use l1, l2 "
                "or training=bptt, tbptt"
            )
        check_supported(model, cls.name)

    def start(self, task, inputs: torch.Tensor):
        """Initial (state, sensitivity [B, S, P]): zeros, or what the previous batch of a stateful stream left."""
        batch = inputs.shape[0]
        state, sensitivity = self.sensitivity.initial(batch, inputs)
        carried = task.carried_state.get("train") if task.spec.stateful else None
        if carried is not None:
            state = self.sensitivity.from_model_state(carried)
            if self.carried_sensitivity is not None and self.carried_sensitivity.shape == sensitivity.shape:
                sensitivity = self.carried_sensitivity
        return state, sensitivity

    def finish(self, task, state, sensitivity) -> None:
        if task.spec.stateful:
            task.carried_state["train"] = self.sensitivity.to_model_state(detached(state))
            self.carried_sensitivity = sensitivity


class RTRL(_SensitivityRule):
    """Real-time recurrent learning (Williams & Zipser 1989), exact for the weights in effect at each step.

    Each step updates Q_t = ds_t/dtheta (:meth:`RecurrentSensitivity.step`) and adds (dl_t/dh_t) Q_t of the step's
    loss l_t; every ``update_every`` steps the window's mean loss is the objective: its readout gradient by autograd,
    its recurrent gradient the accumulated sum (divided by the window's target count). What is carried from step to
    step is Q_t here; :class:`GreensFunction` carries another form of it through the same loop (the hooks below).
    """

    name = "rtrl"

    def begin(self, sensitivity: torch.Tensor):
        """What the rule carries from step to step, from Q_0 [B, S, P]."""
        return sensitivity

    def advance(self, x: torch.Tensor, keep: torch.Tensor, state, carried):
        """One step of the network and of what is carried: returns (state, carried)."""
        return self.sensitivity.step(x, keep, state, carried)

    def loss_gradient(self, grad_h: torch.Tensor, carried) -> torch.Tensor:
        """(dl_t/dh_t) Q_t [P], summed over the batch, for grad_h = dl_t/dh_t [B, N]."""
        return torch.einsum("bn,bnp->p", grad_h, carried[:, : self.sensitivity.hidden])

    def sensitivity_of(self, carried) -> torch.Tensor:
        """Q_t [B, S, P], carried to the next batch of a stateful stream."""
        return carried

    def run(self, task, batch, update):
        inputs, lengths = batch["inputs"], batch["lengths"]
        batch_size, steps = inputs.shape[:2]
        keep = valid_step_mask(lengths, batch_size, steps, inputs.device)
        state, sensitivity = self.start(task, inputs)
        carried = self.begin(sensitivity)
        readout = task.model.readout
        accumulated = inputs.new_zeros(self.sensitivity.num_parameters)  # sum_t (dl_t/dh_t) Q_t over the window
        emitted, collected, window_start = [], [], 0
        for t in range(steps):
            state, carried = self.advance(inputs[:, t], keep[:, t], state, carried)
            h = torch.where(keep[:, t, None], state[0], 0.0).requires_grad_()  # what the network emits at step t
            emitted.append(h)
            scored = window_loss(task, readout(h).unsqueeze(1), batch, t)
            if scored is not None:
                (grad_h,) = torch.autograd.grad(scored[0] * scored[1], h)
                accumulated += self.loss_gradient(grad_h, carried)
            if t + 1 - window_start < self.settings.update_every and t < steps - 1:
                continue
            outputs = readout(torch.stack(emitted, dim=1))
            scored = window_loss(task, outputs, batch, window_start)
            if scored is not None:
                loss, count = scored
                objective = loss + (self.sensitivity.flat_parameters() * accumulated).sum() / count
                if not update(objective, loss, count):
                    return None
            collected.append(outputs.detach())
            emitted, window_start = [], t + 1
            accumulated.zero_()
        self.finish(task, state, self.sensitivity_of(carried) if task.spec.stateful else None)
        return torch.cat(collected, dim=1)


class GreensFunction(RTRL):
    """The Green's function method (Sun, Chen & Lee 1992): RTRL's online gradient at O(N^3) per step instead of O(N^4).

    With J_t = ds_t/ds_{t-1} and b_t = ds_t/dtheta|_{s_{t-1} fixed}, RTRL's Q_t = J_t Q_{t-1} + b_t is
    Q_t = G(t, 0) Q_0 + sum_{s<=t} G(t, s) b_s with the Green's function G(t, s) = J_t ... J_{s+1}. GF carries

        G_t = J_t G_{t-1},    R_t = R_{t-1} + G_t^{-1} b_t,    G_0 = I,  R_0 = Q_0,    so that Q_t = G_t R_t,

    and the gradient of a step's loss l_t is ((dl_t/ds_t) G_t) R_t, an S-vector times the S x P matrix R_t; Q_t is
    never formed. G_t^{-1} b_t is one linear solve against A_t = ds_t/dz_t and an outer product with the inputs of the
    weights (:meth:`RecurrentSensitivity.green_step`). Time per step and sequence, for S = N (Elman) or 2N (LSTM)
    state entries and P = O(N^2) weights: J_t and A_t written out O(S G N^2), the product J_t G_{t-1} and the solve
    O(S^3), R_t and the gradient O(S P): O(N^3). Storage: R_t, O(N^3), like RTRL's Q_t. Updates every
    ``update_every`` steps as RTRL, and the gradients are RTRL's (to rounding), also across updates. A stateful stream
    carries Q_T = G_T R_T to the next batch (one O(N^4) product per batch), which restarts G at I.

    GF needs every J_t invertible: a relu unit at zero has slope 0 and makes J_t singular, so Elman relu (irnn) is
    refused. It is also ill-conditioned over long sequences, a known weakness of the method: when the J_t are
    contractive (the vanishing gradient), G_t's smallest singular values shrink geometrically with t, G_t^{-1} b_t
    grows as fast, and Q_t = G_t R_t is recovered by cancellation, losing about log10 cond(G_t) digits. On small
    random networks cond(G_t) grows 20-30-fold per step: an 8-unit tanh Elman network's relative gradient error is
    ~1e-11 over 8 steps in float64 but ~3e-3 in float32, and of order 1 over 12 steps in float32. LSTM is worse:
    while c is small, h_t = o_t tanh(c_t) makes the h-rows of J_t nearly a rescaling of its c-rows, so J_t itself is
    close to singular (8 units, float64: errors of 5-30% after 6 steps). Nothing is done about it here beyond the
    restart at batch boundaries of stateful streams: use short sequences in float64 (the tests: 6 steps), or rtrl /
    bu, whose recursions are stable. When G_t is singular to working precision (float32 Elman networks on 20-step
    sequences reach it) the gradient is NaN: the update is skipped and the run ends "diverged".
    """

    name = "gf"

    @classmethod
    def check(cls, model, regularizers):
        super().check(model, regularizers)
        if getattr(model, "activation", None) == "relu":
            raise rule_error("gf inverts ds_t/ds_{t-1}, which relu units at zero make singular; use rtrl or bu for "
                             "activation=relu")

    def begin(self, sensitivity):
        batch, size = sensitivity.shape[:2]
        identity = torch.eye(size, dtype=sensitivity.dtype, device=sensitivity.device)
        return identity.expand(batch, size, size), sensitivity.clone()  # (G_0, R_0); R is updated in place

    def advance(self, x, keep, state, carried):
        green, weighted = carried
        state, green = self.sensitivity.green_step(x, keep, state, green, weighted)
        return state, (green, weighted)

    def loss_gradient(self, grad_h, carried):
        green, weighted = carried
        along = torch.einsum("bn,bns->bs", grad_h, green[:, : self.sensitivity.hidden])  # (dl_t/ds_t) G_t
        return torch.einsum("bs,bsp->p", along, weighted)

    def sensitivity_of(self, carried):
        green, weighted = carried
        return torch.bmm(green, weighted)


class BlockUpdate(_SensitivityRule):
    """Block update: the O(N^3) BPTT/RTRL hybrid (Schmidhuber 1992), blocks of h steps, an update per block.

    Within a block BPTT gives the gradient of the block's loss through the block, and dL/ds_start at its start; the
    carried Q_start = ds_start/dtheta adds (dL/ds_start) Q_start, the part through all earlier blocks. At the block
    end Q_end = (ds_end/ds_start) Q_start + ds_end/dtheta|_{s_start} from S backward passes through the block
    (:meth:`RecurrentSensitivity.block_jacobians`): O(h N^3 + N^4) per block, O(N^3) per step for h = N.
    """

    name = "bu"

    def run(self, task, batch, update):
        inputs, lengths = batch["inputs"], batch["lengths"]
        batch_size, steps = inputs.shape[:2]
        keep = valid_step_mask(lengths, batch_size, steps, inputs.device)
        sens = self.sensitivity
        block = self.settings.block or sens.hidden
        state, sensitivity = self.start(task, inputs)
        collected = []
        for begin in range(0, steps, block):
            end = min(begin + block, steps)
            x, valid = inputs[:, begin:end], keep[:, begin:end]
            start = sens.flat_state(state).detach().requires_grad_()
            hs, final = sens.run_block(x, valid, sens.split_state(start))
            outputs = task.model.readout(hs)
            # the block's Jacobians at the weights it ran with, before this block's update changes them
            d_state, d_theta = sens.block_jacobians(x, valid, state)
            scored = window_loss(task, outputs, batch, begin)
            if scored is not None:
                loss, count = scored
                (grad_start,) = torch.autograd.grad(loss, start, retain_graph=True)
                earlier = torch.einsum("bs,bsp->p", grad_start, sensitivity)  # through the blocks before
                objective = loss + (sens.flat_parameters() * earlier).sum()
                if not update(objective, loss, count):
                    return None
            sensitivity = torch.baddbmm(d_theta, d_state, sensitivity)
            state = detached(final)
            collected.append(outputs.detach())
        self.finish(task, state, sensitivity)
        return torch.cat(collected, dim=1)
