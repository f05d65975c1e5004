"""Explore a trained byte-VAE's latent space: figures (PNG) and a JSON summary.

* prior samples ``z ~ N(0, I)`` decoded to text and parsed back (parse-valid rate);
* interpolation (slerp) between two pixels' posterior means;
* traversal of the most active latent dimension over +-3 standard deviations;
* a UMAP (or PCA) map of the posterior means coloured by reference class;
* KMeans / GMM on the means and DBSCAN on the 2-D map, scored by the adjusted Rand index (ARI)
  against the reference classes; active units (Var(mu_j) > 0.01).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eoflow.errors import DataError
from eoflow.vae.checkpoint import load_model
from eoflow.vae.config import VAERunConfig
from eoflow.vae.data import SamplesStore, SeriesStream, TextSpec, collate
from eoflow.vae.manifest import write_manifest
from eoflow.vae.model import ByteVAE
from eoflow.vae.serialize import SexprError, from_sexpr, is_valid_sexpr
from eoflow.vae.tokenizer import decode

__all__ = ["cluster_scores", "decode_latents", "encode_rows", "explore", "slerp"]


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation between vectors ``a`` and ``b`` at fractions ``t`` -> ``(len(t), d)``."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = float(np.clip(np.dot(a, b) / max(na * nb, 1e-12), -1.0, 1.0))
    omega = math.acos(cos)
    t = np.asarray(t, dtype=np.float64)[:, None]
    if omega < 1e-6:
        return (1 - t) * a + t * b
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / math.sin(omega)


@torch.no_grad()
def encode_rows(model: ByteVAE, ds: SeriesStream, n_max: int) -> dict[str, np.ndarray]:
    """Posterior means of up to ``n_max`` rows of ``ds`` with their row ids and class indices."""
    model.eval()
    mus, rows, vals = [], [], []
    got = 0
    for batch in torch.utils.data.DataLoader(ds, batch_size=64, collate_fn=collate):
        mu, _, _ = model.posterior(batch["input_ids"])
        mus.append(mu.numpy())
        rows.append(batch["index"].numpy())
        vals.append(batch["value"].numpy())
        got += len(mu)
        if got >= n_max:
            break
    if not mus:
        raise DataError(f"{ds.store}: no rows to encode for exploration")
    return {
        "mu": np.concatenate(mus)[:n_max],
        "row": np.concatenate(rows)[:n_max],
        "cls": np.concatenate(vals)[:n_max].astype(int),
    }


def decode_latents(
    model: ByteVAE, z: np.ndarray, *, max_len: int, temperature: float, seed: int
) -> list[str]:
    """Decode latents to text with the whole-text task token."""
    gen = torch.Generator().manual_seed(seed)
    ids = model.generate(
        torch.as_tensor(z, dtype=torch.float32),
        max_len=max_len,
        temperature=temperature,
        generator=gen,
    )
    return [decode(i) for i in ids]


def cluster_scores(
    mu: np.ndarray, emb2d: np.ndarray, labels: np.ndarray, *, eps: float | None, seed: int
) -> dict[str, Any]:
    """KMeans and GMM on ``mu``, DBSCAN on the 2-D map; ARI of each against ``labels``."""
    from sklearn.cluster import DBSCAN, KMeans
    from sklearn.metrics import adjusted_rand_score
    from sklearn.mixture import GaussianMixture
    from sklearn.neighbors import NearestNeighbors

    k = max(2, len(np.unique(labels)))
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(mu)
    gm = (
        GaussianMixture(n_components=k, covariance_type="diag", random_state=seed)
        .fit(mu)
        .predict(mu)
    )
    if eps is None:
        dist, _ = NearestNeighbors(n_neighbors=6).fit(emb2d).kneighbors(emb2d)
        eps = float(np.quantile(dist[:, -1], 0.9))
    db = DBSCAN(eps=eps, min_samples=5).fit_predict(emb2d)
    return {
        "n_classes": int(k),
        "kmeans": {"k": int(k), "ari": float(adjusted_rand_score(labels, km))},
        "gmm": {"k": int(k), "ari": float(adjusted_rand_score(labels, gm))},
        "dbscan": {
            "eps": eps,
            "min_samples": 5,
            "n_clusters": len(set(db.tolist()) - {-1}),
            "noise_fraction": float(np.mean(db == -1)),
            "ari": float(adjusted_rand_score(labels, db)),
        },
    }


def _curve(text: str, feature: str) -> np.ndarray | None:
    try:
        s = from_sexpr(text)
    except SexprError:
        return None
    if feature not in s.features or not len(s.dates):
        return None
    return s.values[:, s.features.index(feature)]


def _plot_curves(ax: Any, texts: list[str], feature: str, labels: list[str] | None = None) -> None:
    import matplotlib as mpl

    cmap = mpl.colormaps["viridis"]
    for i, t in enumerate(texts):
        c = _curve(t, feature)
        if c is not None:
            ax.plot(np.arange(len(c)), c, marker="o", color=cmap(i / max(len(texts) - 1, 1)),
                    label=labels[i] if labels else None)  # fmt: skip
    ax.set_xlabel("time step")
    ax.set_ylabel(feature)


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def _map2d(
    mu: np.ndarray, use_umap: bool, n_epochs: int | None, seed: int
) -> tuple[np.ndarray, str]:
    if use_umap and len(mu) >= 10:
        import umap

        reducer = umap.UMAP(n_neighbors=min(15, len(mu) - 1), random_state=seed, n_epochs=n_epochs)
        return np.asarray(reducer.fit_transform(mu)), "umap"
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(mu), "pca"


def explore(cfg: VAERunConfig) -> dict[str, Any]:
    """Run the exploration of ``cfg.explore``; write figures + ``summary.json`` to ``<out>/explore``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    started = dt.datetime.now(dt.UTC)
    ec = cfg.explore
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    ck = cfg.path(ec.checkpoint) if ec.checkpoint else cfg.path(cfg.out) / "pretrain"
    model, meta = load_model(ck, strict=True)
    model.eval()
    text = TextSpec(**meta["text"])
    features = list(meta["features"])
    store_path = cfg.path(cfg.data.store)
    store = SamplesStore(store_path)
    split = ec.split if cfg.data.split_array else "all"
    ds = SeriesStream(str(store_path), mode="value", text=text, split_array=cfg.data.split_array, split=split,
                      target="class", seed=cfg.seed, shuffle=True)  # fmt: skip
    enc = encode_rows(model, ds, ec.n_points)
    mu, cls_idx = enc["mu"], enc["cls"]
    class_ids = store.class_ids()
    names = {int(c["id"]): c.get("name", str(c["id"])) for c in store.classes}
    colors = {int(c["id"]): c.get("color") for c in store.classes}
    labels = np.asarray(class_ids)[cls_idx]
    out = cfg.path(cfg.out) / "explore"
    out.mkdir(parents=True, exist_ok=True)
    figs: list[str] = []
    rng = np.random.default_rng(cfg.seed)
    k = mu.shape[1]
    dec = dict(max_len=ec.max_decode_len, temperature=ec.temperature, seed=cfg.seed)

    # 1. prior samples
    z_prior = rng.standard_normal((ec.n_prior, k)).astype(np.float32)
    prior_txt = decode_latents(model, z_prior, **dec)
    valid = [is_valid_sexpr(t, features=features) for t in prior_txt]
    fig, ax = plt.subplots(figsize=(6, 4))
    _plot_curves(ax, [t for t, v in zip(prior_txt, valid) if v], ec.plot_feature)
    ax.set_title(f"prior samples: {sum(valid)}/{len(valid)} parse-valid")
    figs.append(_save(fig, out / "prior_samples.png"))

    # 2. interpolation between two pixels (of different classes when possible)
    i0 = 0
    others = np.flatnonzero(labels != labels[i0])
    i1 = int(others[0]) if others.size else min(1, len(mu) - 1)
    t = np.linspace(0, 1, ec.interp_steps)
    z_int = slerp(mu[i0], mu[i1], t).astype(np.float32)
    int_txt = decode_latents(model, z_int, **dec)
    fig, ax = plt.subplots(figsize=(6, 4))
    _plot_curves(ax, int_txt, ec.plot_feature, [f"t={v:.2f}" for v in t])
    _legend(ax)
    ax.set_title(f"slerp: row {int(enc['row'][i0])} -> row {int(enc['row'][i1])}")
    figs.append(_save(fig, out / "interpolation.png"))

    # 3. traversal of the most active dimension
    var = mu.var(0)
    d = int(var.argmax())
    sd = float(np.sqrt(var[d])) or 1.0
    steps = np.linspace(-3, 3, ec.traverse_steps)
    z_tr = np.repeat(mu[i0][None], len(steps), 0).astype(np.float32)
    z_tr[:, d] = mu[i0, d] + steps * sd
    tr_txt = decode_latents(model, z_tr, **dec)
    fig, ax = plt.subplots(figsize=(6, 4))
    _plot_curves(ax, tr_txt, ec.plot_feature, [f"{s:+.1f} sd" for s in steps])
    _legend(ax)
    ax.set_title(f"traversal of latent dim {d}")
    figs.append(_save(fig, out / "traversal.png"))

    # 4. 2-D map coloured by class, 5. clustering
    emb, method = _map2d(mu, ec.umap, ec.umap_n_epochs, cfg.seed)
    fig, ax = plt.subplots(figsize=(6, 5))
    for c in np.unique(labels):
        sel = labels == c
        ax.scatter(
            emb[sel, 0], emb[sel, 1], s=6, color=colors.get(int(c)), label=names.get(int(c), str(c))
        )
    ax.legend(fontsize=7, markerscale=2)
    ax.set_title(f"{method.upper()} of posterior means by class")
    figs.append(_save(fig, out / f"{method}_classes.png"))
    clusters = cluster_scores(mu, emb, labels, eps=ec.dbscan_eps, seed=cfg.seed)

    summary = {
        "checkpoint": str(ck),
        "n_points": len(mu),
        "latent_dim": k,
        "active_units": int((var > 0.01).sum()),
        "mu_variance": var.round(5).tolist(),
        "prior": {
            "n": len(prior_txt),
            "parse_valid_rate": float(np.mean(valid)),
            "texts": prior_txt[:5],
        },
        "interpolation": {
            "rows": [int(enc["row"][i0]), int(enc["row"][i1])],
            "parse_valid_rate": float(
                np.mean([is_valid_sexpr(x, features=features) for x in int_txt])
            ),
            "texts": [int_txt[0], int_txt[-1]],
        },
        "traversal": {
            "dim": d,
            "sd": sd,
            "parse_valid_rate": float(
                np.mean([is_valid_sexpr(x, features=features) for x in tr_txt])
            ),
        },
        "map": method,
        "clustering": clusters,
        "figures": figs,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_manifest(
        out, command="vae explore", inputs={"store": str(store_path), "checkpoint": str(ck)},
        parameters=cfg.model_dump(), seeds={"seed": cfg.seed}, outputs=[*figs, "summary.json"],
        results={k2: summary[k2] for k2 in ("active_units", "prior", "clustering")}, started=started,
    )  # fmt: skip
    return summary
