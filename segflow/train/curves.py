"""progress.png, nnU-Net's training curves of a fold."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segflow.io import atomic_path

#: progress.png is drawn after the last epoch and, before it, at most this often: drawing it takes 0.6 s (and
#: importing matplotlib as long again), as long as a whole epoch of a small training.
PROGRESS_INTERVAL_S = 30.0


def write_progress(history: dict, path: Path) -> None:
    """nnU-Net's progress.png: losses and pseudo Dice (+ EMA); epoch duration; learning rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(len(history["train_loss"]))
    fig, axes = plt.subplots(3, 1, figsize=(12, 15))
    ax = axes[0]
    ax.plot(epochs, history["train_loss"], color="b", label="train loss")
    ax.plot(epochs, history["val_loss"], color="r", label="val loss")
    dice_axis = ax.twinx()
    dice_axis.plot(epochs, history["mean_fg_dice"], color="g", linestyle="dotted", label="pseudo dice")
    dice_axis.plot(epochs, history["ema_fg_dice"], color="g", label="pseudo dice (EMA)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    dice_axis.set_ylabel("pseudo dice")
    ax.legend(loc="upper left")
    dice_axis.legend(loc="upper right")
    axes[1].plot(epochs, history["epoch_seconds"], color="b")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("epoch time [s]")
    axes[2].plot(epochs, history["lr"], color="b")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("learning rate")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
