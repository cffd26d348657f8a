"""Channel permutations for sorting: a ranking by importance, applied to tensors and their optimizer state."""

from __future__ import annotations

import torch


def ranking(importance: torch.Tensor, keep: int | None) -> torch.Tensor:
    """Indices most important first; `keep` leading ones stay in place (None: rank them all, with the
    official `torch.sort` call, ties included)."""
    if keep is None:
        return torch.sort(importance, dim=0, descending=True)[1]
    tail = torch.argsort(importance[keep:], descending=True, stable=True) + keep
    return torch.cat([torch.arange(keep, device=tail.device), tail])


def permute_(tensor: torch.Tensor, perm: torch.Tensor, dim: int) -> None:
    tensor.copy_(tensor.index_select(dim, perm))


def permute_all(tensors: list[tuple[torch.Tensor, int]], perm: torch.Tensor,
                optimizer: torch.optim.Optimizer | None) -> None:
    """Permute each (tensor, dim) by `perm`, and its optimizer state (momentum) alike when given."""
    for tensor, dim in tensors:
        permute_(tensor, perm, dim)
        state = optimizer.state.get(tensor) if optimizer is not None else None
        for value in (state or {}).values():
            if isinstance(value, torch.Tensor) and value.shape == tensor.shape:
                permute_(value, perm, dim)
