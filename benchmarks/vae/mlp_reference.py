"""A plain MLP on the same numbers as the tree models: what a small neural network reaches here.

It reads the 56 numbers directly (no bytes), with the VAE head's choices (log target, Huber
loss).  The number of epochs is chosen by 5-fold cross-validation over whole training sites
(``GroupKFold`` on the location), then ``SEEDS`` networks are trained on every training row and
averaged; the test split is used once.

With ``periodic=True`` the network is the VAE's values head of ``fuel_moisture.yaml``: every
number through :class:`eoflow.vae.model.PeriodicEmbedding` (16 frequencies, 16 features, spread
0.1), dropout 0.1, one 128-unit GELU layer, dropout 0.1.
"""

from __future__ import annotations

import time

import numpy as np

EPOCHS = 60
SEEDS = 8
CV_SEEDS = 3
FOLDS = 5


def _net(n_in: int, periodic: bool):
    import torch

    nn = torch.nn
    if periodic:
        from eoflow.vae.model import PeriodicEmbedding

        return nn.Sequential(
            PeriodicEmbedding(n_in, 16, 16, 0.1), nn.Dropout(0.1),
            nn.Linear(n_in * 16, 128), nn.GELU(), nn.Dropout(0.1), nn.Linear(128, 1),
        )  # fmt: skip
    return nn.Sequential(
        nn.Linear(n_in, 256), nn.GELU(), nn.Dropout(0.1),
        nn.Linear(256, 256), nn.GELU(), nn.Dropout(0.1),
        nn.Linear(256, 1),
    )  # fmt: skip


def _fit(
    x: np.ndarray, y: np.ndarray, x_eval: np.ndarray, seed: int, epochs: int, periodic: bool
) -> np.ndarray:
    """Train one MLP; its predictions for ``x_eval`` after every epoch, ``(epochs, n)``."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = _net(x.shape[1], periodic)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    xt, yt, xe = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(x_eval)
    out = np.empty((epochs, len(x_eval)), np.float32)
    for ep in range(epochs):
        net.train()
        for b in torch.randperm(len(xt), generator=g).split(64):
            loss = F.huber_loss(net(xt[b])[:, 0], yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            out[ep] = net(xe)[:, 0].numpy()
    return out


def _ensemble(x, y, x_eval, seeds, epochs, periodic=False):
    """Average of ``seeds`` networks in target units, per epoch ``(epochs, n)``."""
    keep = x.std(0) > 0  # constant columns (a text's fixed header) carry nothing
    x, x_eval = x[:, keep], x_eval[:, keep]
    mu, sd = x.mean(0), x.std(0) + 1e-9
    ly = np.log(y)
    m, s = ly.mean(), ly.std()
    z, ze = ((x - mu) / sd).astype(np.float32), ((x_eval - mu) / sd).astype(np.float32)
    t = ((ly - m) / s).astype(np.float32)
    runs = [_fit(z, t, ze, k, epochs, periodic) for k in seeds]
    return np.exp(np.mean(runs, 0) * s + m)


def mlp_reference(
    x: np.ndarray,
    y: np.ndarray,
    test: np.ndarray,
    seed: int,
    site: np.ndarray | None = None,
    n_seeds: int = SEEDS,
    periodic: bool = False,
) -> dict[str, float]:
    """Test RMSE of the MLP ensemble of ``n_seeds`` networks (``periodic``: the VAE head's).

    The CV folds group rows by ``site`` (one id per row), by default the location held in ``x``'s
    last two columns.
    """
    import torch
    from sklearn.model_selection import GroupKFold

    t0 = time.perf_counter()
    torch.set_num_threads(1)
    xtr, ytr = x[~test], y[~test]
    if site is None:
        site = np.unique(x[:, -2:], axis=0, return_inverse=True)[1].ravel()
    cv = np.zeros(EPOCHS)
    for k, (a, b) in enumerate(GroupKFold(FOLDS).split(xtr, ytr, site[~test])):
        seeds = [seed * 1000 + k * 10 + j for j in range(CV_SEEDS)]
        pred = _ensemble(xtr[a], ytr[a], xtr[b], seeds, EPOCHS, periodic)
        cv += ((pred - ytr[b]) ** 2).mean(1) * len(b) / len(xtr)
    best = int(np.argmin(cv)) + 1
    final = [seed * 1000 + 500 + j for j in range(n_seeds)]
    pred = _ensemble(xtr, ytr, x[test], final, best, periodic)[-1]
    return {
        "rmse": float(np.sqrt(np.mean((pred - y[test]) ** 2))),
        "epochs": best,
        "cv_rmse": float(np.sqrt(cv[best - 1])),
        "fit_s": round(time.perf_counter() - t0, 2),
    }
