"""The healing loss curve as a PNG beside the artifact, so a glance says whether healing converged or
ran out of budget while still falling."""

from __future__ import annotations

from pathlib import Path

LOSS_CURVE_PNG = "loss_curve.png"


def running_mean(values: list[float], window: int) -> list[float]:
    """Mean of the last `window` values at each point (fewer at the start): one window per step is noisy."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_loss_curve(losses: list[float], path: Path, title: str, ce_weight: float = 0.0) -> Path:
    """Every step's loss, faint, with its running mean over 1/20 of the run on top (from 40 steps)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    steps = list(range(1, len(losses) + 1))
    window = max(1, len(losses) // 20)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if window > 1:
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="each step")
        ax.plot(steps, running_mean(losses, window), color="tab:blue", linewidth=2, label=f"mean of {window} steps")
    else:  # under 40 steps: every one, marked
        ax.plot(steps, losses, color="tab:blue", marker="o", markersize=3, label="each step")
    ax.set_xlabel("healing step")
    ax.set_ylabel("KL to bf16 teacher" + (f" + {ce_weight:g} x cross-entropy" if ce_weight else ""))
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
