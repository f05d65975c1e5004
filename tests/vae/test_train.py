"""The model learns real series, and checkpoints resume exactly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from eoflow.vae.config import KLConfig, PretrainConfig
from eoflow.vae.data import SeriesStream, TextSpec
from eoflow.vae.model import ByteVAE, kl_per_dim, model_config
from eoflow.vae.train import Trainer, kl_beta, lr_factor, pretrain_step_fn

TEXT = TextSpec(features=["red", "nir", "ndvi"], precision=3, loc_precision=2, max_len=256)


def _trainer(store, out, steps, *, denoise=1.0, lr=3e-3, ckpt=1000, batch=4, seed=0, init_seed=0):
    torch.manual_seed(init_seed)
    model = ByteVAE(model_config("tiny", n_enc_layers=2, latent_dim=8, n_mem=2))
    pc = PretrainConfig(steps=steps, batch_size=batch, lr=lr, warmup_steps=5, checkpoint_every=ckpt,
                        log_every=5, denoise_fraction=denoise,
                        kl=KLConfig(beta_max=0.05, n_cycles=1, free_bits=0.0))  # fmt: skip
    ds = SeriesStream(str(store), mode="pretrain", text=TEXT, seed=seed, denoise_fraction=denoise)
    return Trainer(model, ds, pc, out, pretrain_step_fn(pc.kl, steps), meta={"text": {}}, seed=seed,
                   device=torch.device("cpu"))  # fmt: skip


def test_tiny_model_overfits_a_handful_of_real_series(tmp_path, cut):
    # 4 real Presto pixels, whole-text reconstruction through the latent: the decoder only sees z,
    # so reaching a low loss means z carries which series it is.
    store = cut(tmp_path / "four.zarr", np.array([0, 7, 500, 1500]), chunk=4)
    tr = _trainer(store, tmp_path / "run", steps=150)
    hist = tr.fit()
    first = np.mean([h["ce"] for h in hist[:5]])
    last = np.mean([h["ce"] for h in hist[-5:]])
    assert first > 3.0  # ~ln(384) at init
    assert last < 0.35, f"cross-entropy per byte stayed at {last:.3f}"


def test_resume_gives_identical_next_step_loss(tmp_path, cut):
    store = cut(tmp_path / "s.zarr", np.arange(12), chunk=4)
    a = _trainer(store, tmp_path / "a", steps=8, denoise=0.5, ckpt=5)
    full = a.fit()  # 3 batches per epoch: the checkpoint at step 5 is mid-epoch
    shutil.copytree(
        tmp_path / "a" / "checkpoints" / "step-0000005",
        tmp_path / "b" / "checkpoints" / "step-0000005",
    )
    b = _trainer(
        store, tmp_path / "b", steps=8, denoise=0.5, init_seed=1
    )  # other init: resume must overwrite
    assert b.resume() and b.step == 5 and b.epoch == 1 and b.batch_in_epoch == 2
    rest = b.fit()
    assert [h["step"] for h in rest] == [6, 7, 8]
    assert [h["loss"] for h in rest] == [h["loss"] for h in full[5:]]  # bit-identical
    state = json.loads((tmp_path / "a" / "checkpoints" / "step-0000005" / "state.json").read_text())
    assert state["seed"] == 0 and state["step"] == 5
    assert not list((tmp_path / "a").rglob("*.pt")) and not list((tmp_path / "a").rglob("*.pkl"))


def test_decoder_sees_only_the_latent():
    torch.manual_seed(0)
    m = ByteVAE(model_config("tiny")).eval()
    a = torch.randint(3, 259, (1, 40))
    b = torch.randint(3, 259, (1, 55))
    dec = torch.randint(3, 259, (1, 12))
    z = torch.randn(1, m.cfg.latent_dim)
    # same z, different encoder inputs: identical logits (no path around the bottleneck)
    mu_a, _, _ = m.posterior(a)
    mu_b, _, _ = m.posterior(b)
    assert not torch.allclose(mu_a, mu_b)
    torch.testing.assert_close(m.decode(z, dec), m.decode(z.clone(), dec))
    out = m(a, dec, sample=False)
    torch.testing.assert_close(out["logits"], m.decode(mu_a, dec))
    # padding does not change the posterior
    padded = torch.cat([a, torch.zeros(1, 10, dtype=torch.long)], 1)
    torch.testing.assert_close(m.posterior(padded)[0], mu_a, atol=1e-5, rtol=1e-5)
    # causal decoder: a later token does not change earlier logits
    dec2 = dec.clone()
    dec2[0, -1] = 7
    torch.testing.assert_close(m.decode(z, dec)[:, :-1], m.decode(z, dec2)[:, :-1])


def test_kl_schedule_and_free_bits():
    kl = KLConfig(beta_max=1.0, n_cycles=2, ratio_zero=0.25, ratio_increase=0.5)
    betas = [kl_beta(s, 100, kl) for s in range(100)]
    assert betas[0] == 0.0 and betas[12] == 0.0 and betas[40] == 1.0 and betas[50] == 0.0
    assert betas[25] == 0.5 and betas[62] == 0.0 and betas[75] == 0.5 and max(betas) == 1.0
    assert lr_factor(0, 100, 10) == pytest.approx(0.1) and lr_factor(99, 100, 10) == pytest.approx(
        0.1, abs=0.01
    )
    mu, logvar = torch.zeros(4, 3), torch.zeros(4, 3)
    assert kl_per_dim(mu, logvar).tolist() == [0.0, 0.0, 0.0]
    assert kl_per_dim(torch.ones(4, 3), logvar).tolist() == [0.5, 0.5, 0.5]


def test_byt5_small_preset_has_the_published_shape():
    cfg = model_config("byt5-small")
    assert (cfg.d_model, cfg.d_ff, cfg.n_heads, cfg.d_kv, cfg.n_enc_layers, cfg.n_dec_layers) == (
        1472, 3584, 6, 64, 12, 4,
    )  # fmt: skip
    with torch.device("meta"):
        m = ByteVAE(cfg)
    n = m.n_params()
    assert 295e6 < n < 310e6  # HF ByT5-small: 299.1 M (+ the VAE projections)
