"""CUDA path (bf16 autocast, fused AdamW, torch.compile): skipped without a GPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eoflow.vae.config import KLConfig, PretrainConfig
from eoflow.vae.data import SeriesStream, TextSpec
from eoflow.vae.model import ByteVAE, model_config
from eoflow.vae.train import Trainer, pretrain_step_fn

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.mark.parametrize("compile_", [False, True])
def test_cuda_training_steps_bf16_fused(tmp_path, cut, compile_):
    store = cut(tmp_path / "s.zarr", np.arange(64), chunk=16)
    pc = PretrainConfig(steps=6, batch_size=8, lr=2e-3, warmup_steps=2, compile=compile_,
                        kl=KLConfig(beta_max=0.1, n_cycles=1))  # fmt: skip
    ds = SeriesStream(str(store), mode="pretrain", text=TextSpec(features=["red", "nir", "ndvi"]))
    model = ByteVAE(model_config("tiny"))
    tr = Trainer(model, ds, pc, tmp_path / "run", pretrain_step_fn(pc.kl, pc.steps), meta={"text": {}},
                 seed=0, device=torch.device("cuda"))  # fmt: skip
    assert tr.autocast and tr.opt.defaults.get("fused")
    hist = tr.fit()
    assert len(hist) == 6 and all(math.isfinite(h["loss"]) for h in hist)
    assert hist[-1]["ce"] < hist[0]["ce"]
