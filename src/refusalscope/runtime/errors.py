"""The one exception type for problems the user can fix, and the finiteness check that
turns a NaN or inf entering the method into one.

A NaN crashes nothing downstream: it sorts first, so one bad SAE decoder entry makes its
latent the top feature and the run ends with plausible garbage and status 0. Weights,
directions and scores are therefore checked where they enter, by ``check_finite``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch stays out of the CLI's import path
    from torch import Tensor


class RefusalScopeError(Exception):
    """Bad input or environment. The message says what was wrong and what to do.

    The CLI prints it as one line and exits with status 2; library callers can catch it.
    Internal invariants use ``assert`` instead.
    """


def check_finite(
    tensors: Mapping[str, Tensor],
    where: str,
    fix: str,
    at: Callable[[tuple[int, ...]], str] | None = None,
) -> None:
    """Raise ``RefusalScopeError`` if any floating tensor of ``tensors`` has a NaN or ±inf.

    The message reads ``{where} has {n} non-finite values ({kinds}) in {name}, first at
    {at(index)}: {fix}``; ``at`` turns the first bad index into words (default ``[i, j]``).
    Cheap: one ``aminmax`` per tensor (it propagates NaN and holds any inf, with no
    tensor-sized temporary) and one device sync per device; the culprit is searched for
    only on failure.
    """
    import torch

    floats = {  # meta tensors (shape-only loads) hold no values to check
        n: t.detach()
        for n, t in tensors.items()
        if t.is_floating_point() and t.numel() > 0 and not t.is_meta
    }
    extremes: dict[torch.device, list[Tensor]] = {}
    for t in floats.values():
        extremes.setdefault(t.device, []).append(torch.stack(torch.aminmax(t)))
    if all(bool(torch.isfinite(torch.stack(e)).all()) for e in extremes.values()):
        return
    bad = [n for n, t in floats.items() if not bool(torch.isfinite(t).all())]
    name, t = bad[0], floats[bad[0]]
    mask = ~torch.isfinite(t)
    n = int(mask.sum())
    kinds = [
        k
        for k, m in (("nan", t.isnan()), ("+inf", t == torch.inf), ("-inf", t == -torch.inf))
        if bool(m.any())
    ]
    index = tuple(int(i) for i in mask.nonzero()[0])
    pos = at(index) if at is not None else f"[{', '.join(map(str, index))}]"
    also = ""
    if len(bad) > 1:
        also = f" (also in {', '.join(bad[1:4])}{', …' if len(bad) > 4 else ''})"
    raise RefusalScopeError(
        f"{where} has {n} non-finite value{'' if n == 1 else 's'} ({', '.join(kinds)}) in "
        f"{name}, first at {pos}{also}: {fix}"
    )
