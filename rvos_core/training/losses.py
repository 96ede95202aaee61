"""Set-prediction losses for referring masklets.

Each sample has ``K ≥ 0`` referred objects (``K > 1`` for multi-object expressions) and the model
predicts ``Q`` query masklets with referring scores. Queries are matched one-to-one to objects with
the Hungarian algorithm (scipy ``linear_sum_assignment``) on the cost
``w_mask · BCE + w_dice · dice − w_score · sigmoid(score)`` (DETR / Mask2Former-style set matching,
as used by MUTR, the base of seed 003). Matched queries get dice + sigmoid focal mask losses
(torchvision ``sigmoid_focal_loss``); every query gets a BCE score loss (1 matched, 0 otherwise).
Models with ``query_init == "pooled_mask"`` also output class-agnostic instance proposals, which get
the same matched mask losses without a score term (:func:`proposal_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torchvision.ops import sigmoid_focal_loss


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (also used in the matching cost)."""

    mask: float = 5.0
    dice: float = 5.0
    score: float = 2.0
    aux: float = 0.5
    proposal: float = 0.5


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft dice loss per row. logits/targets: ``(N, P)`` (targets in [0, 1]) → ``(N,)``."""
    p = logits.sigmoid()
    num = 2 * (p * targets).sum(-1) + 1.0
    den = p.sum(-1) + targets.sum(-1) + 1.0
    return 1.0 - num / den


@torch.no_grad()
def hungarian_match(pred_masks: torch.Tensor, pred_logits: torch.Tensor, tgt_masks: torch.Tensor,
                    w: LossWeights = LossWeights()) -> tuple[np.ndarray, np.ndarray]:
    """Match queries to target objects of one sample.

    Args:
        pred_masks: ``(Q, P)`` mask logits (all frames' pixels flattened).
        pred_logits: ``(Q,)`` score logits.
        tgt_masks: ``(K, P)`` float targets in [0, 1].

    Returns:
        ``(query_idx, target_idx)`` int64 arrays of length ``min(Q, K)``.
    """
    k = tgt_masks.shape[0]
    if k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    p = pred_masks.float()
    t = tgt_masks.float()
    pos = F.binary_cross_entropy_with_logits(p, torch.ones_like(p), reduction="none")
    neg = F.binary_cross_entropy_with_logits(p, torch.zeros_like(p), reduction="none")
    bce = (pos @ t.T + neg @ (1 - t).T) / p.shape[1]
    s = p.sigmoid()
    dice = 1 - (2 * s @ t.T + 1) / (s.sum(-1)[:, None] + t.sum(-1)[None, :] + 1)
    cost = w.mask * bce + w.dice * dice - w.score * pred_logits.float().sigmoid()[:, None]
    qi, ti = linear_sum_assignment(cost.cpu().numpy())
    return qi.astype(np.int64), ti.astype(np.int64)


def _mask_terms(l_mask: torch.Tensor, l_dice: torch.Tensor, w: LossWeights) -> torch.Tensor:
    # focal loss values are ~20x smaller than BCE; scale so the weights stay comparable
    return w.mask * 20 * l_mask + w.dice * l_dice


def set_loss(pred_masks: torch.Tensor, pred_logits: torch.Tensor, targets: list[torch.Tensor],
             w: LossWeights = LossWeights()) -> dict[str, torch.Tensor]:
    """Loss of one decoder output over a batch.

    Args:
        pred_masks: ``(B, Q, T, h, w)`` mask logits.
        pred_logits: ``(B, Q)`` score logits.
        targets: per sample a ``(K_b, T, h, w)`` float tensor of object masks in [0, 1] at the
            prediction resolution.

    Returns:
        ``{"mask", "dice", "score", "total"}`` scalar tensors.
    """
    b, q = pred_logits.shape
    mask_terms, dice_terms = [], []
    score_tgt = torch.zeros_like(pred_logits)
    for i in range(b):
        pm = pred_masks[i].flatten(1)
        tm = targets[i].flatten(1).to(pm.dtype)
        qi, ti = hungarian_match(pm, pred_logits[i], tm, w)
        if len(qi):
            sel_p = pm[torch.as_tensor(qi)]
            sel_t = tm[torch.as_tensor(ti)]
            mask_terms.append(sigmoid_focal_loss(sel_p, sel_t, reduction="none").mean(-1))
            dice_terms.append(dice_loss(sel_p, sel_t))
            score_tgt[i, torch.as_tensor(qi)] = 1.0
    zero = pred_logits.sum() * 0
    l_mask = torch.cat(mask_terms).mean() if mask_terms else zero
    l_dice = torch.cat(dice_terms).mean() if dice_terms else zero
    l_score = F.binary_cross_entropy_with_logits(pred_logits, score_tgt)
    total = _mask_terms(l_mask, l_dice, w) + w.score * l_score
    return {"mask": l_mask, "dice": l_dice, "score": l_score, "total": total}


def dense_loss(dense: torch.Tensor, targets: list[torch.Tensor], w: LossWeights = LossWeights()) -> torch.Tensor:
    """BCE + dice of the dense referring map ``(B, T, h, w)`` against the union of each sample's objects."""
    union = torch.stack([t.amax(0) if t.shape[0] else torch.zeros_like(dense[0]) for t in targets]).to(dense.dtype)
    bce = F.binary_cross_entropy_with_logits(dense, union)
    dice = dice_loss(dense.flatten(1), union.flatten(1)).mean()
    return w.mask * bce + w.dice * dice, dice


def proposal_loss(proposal_masks: torch.Tensor, targets: list[torch.Tensor], w: LossWeights = LossWeights()) -> torch.Tensor:
    """Class-agnostic loss of instance proposals ``(B, Q, T, h, w)`` (logits): Hungarian matching on the mask
    terms only, then ``w.mask`` × focal + ``w.dice`` × dice of the matched proposals (as :func:`set_loss`,
    without the score term). Seed 003 takes instance masks from a VIS model trained on all instances; the
    targets here are the referred objects, the only masks a referring sample carries."""
    parts = set_loss(proposal_masks, torch.zeros(proposal_masks.shape[:2], dtype=proposal_masks.dtype,
                                                 device=proposal_masks.device), targets, w)
    return _mask_terms(parts["mask"], parts["dice"], w)


def model_loss(out: dict, targets: list[torch.Tensor], w: LossWeights = LossWeights()) -> dict[str, torch.Tensor]:
    """Final-layer set loss + ``w.aux`` × each auxiliary (earlier decoder layer) set loss + the dense
    referring-map loss (union target) + ``w.proposal`` × the proposal loss when ``out`` has ``proposal_masks``."""
    main = set_loss(out["pred_masks"], out["pred_logits"], targets, w)
    total = main["total"]
    if "dense" in out:
        d_total, d_dice = dense_loss(out["dense"], targets, w)
        total = total + d_total
        main = {**main, "dense_dice": d_dice}
    if "proposal_masks" in out:
        p_loss = proposal_loss(out["proposal_masks"], targets, w)
        total = total + w.proposal * p_loss
        main = {**main, "proposal": p_loss}
    for aux in out.get("aux", []):
        total = total + w.aux * set_loss(aux["pred_masks"], aux["pred_logits"], targets, w)["total"]
    return {**main, "total": total}
