"""The training curve as a figure (matplotlib's Agg canvas on a bare Figure: no pyplot, no
global backend state)."""

from __future__ import annotations

from srgnn.config import K

__all__ = ["plot_training_curve"]


def plot_training_curve(history, k: int = K, best_epoch: int | None = None):
    """Figure: training loss, and validation HR@K / MRR@K, per epoch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [s.epoch for s in history]
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, metric_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, [s.train_loss for s in history], marker="o")
    loss_axes.set(title="training loss (cross-entropy)", xlabel="epoch", ylabel="loss")
    metric_axes.plot(epochs, [100 * s.valid_hit_rate for s in history], marker="o", label=f"HR@{k}")
    metric_axes.plot(epochs, [100 * s.valid_mrr for s in history], marker="s", label=f"MRR@{k}")
    metric_axes.set(title="validation", xlabel="epoch", ylabel="percent")
    if best_epoch:
        for axes in (loss_axes, metric_axes):
            axes.axvline(best_epoch, color="grey", linestyle=":", label="selected epoch")
    metric_axes.legend()
    for axes in (loss_axes, metric_axes):
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
    return figure
