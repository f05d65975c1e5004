"""Shared state of a run: config, run directory, tiles, client, per-tile status, timings."""

from __future__ import annotations

import errno
import json
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from eoflow.config import RunConfig, config_hash
from eoflow.errors import EoflowError
from eoflow.geo.tiles import Tile

__all__ = ["RunContext"]

_READ_ERROR = re.compile(
    r"Error reading Window\(col_off=(\d+), row_off=(\d+), width=(\d+), height=(\d+)\) from '([^']+)': (.*?)(?:\"\)|$)"
)


@dataclass
class RunContext:
    """Everything a stage needs; stages never read the YAML again."""

    cfg: RunConfig
    out: Path
    tiles: list[Tile]
    client: object = None
    resume: bool = True
    status: dict[str, dict] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    quiet: bool = False
    source_info: dict = field(default_factory=dict)
    changed: bool = False
    href_index: dict[str, tuple[str, str]] = field(default_factory=dict)
    reference_repairs: list[dict] = field(default_factory=list)
    source: tuple | None = None
    plan: object = None
    reference: object = None

    @property
    def chash(self) -> str:
        """Config hash stamped on every ledger entry."""
        return config_hash(self.cfg)

    def path(self, name: str) -> Path:
        """A path inside the run directory."""
        return self.out / name

    def log(self, msg: str) -> None:
        """One progress line on stderr."""
        if not self.quiet:
            print(f"eoflow: {msg}", file=sys.stderr, flush=True)

    def ok_tiles(self) -> list[Tile]:
        """Tiles that have not failed in any stage so far."""
        return [t for t in self.tiles if self.status.get(t.tile_id, {}).get("state") != "failed"]

    def mark_failed(self, tile: Tile, stage: str, exc: BaseException) -> None:
        """Record a tile's failure; the run goes on with the others.

        A full disk is not the tile's fault and would fail every tile after it: it stops the run
        (one line, ``--resume`` later) instead of being recorded against the tile.
        """
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise exc
        msg = exc.one_line() if isinstance(exc, EoflowError) else self.describe(exc)
        self.status[tile.tile_id] = {
            "state": "failed",
            "stage": stage,
            "error": " ".join(msg.split()),
        }
        self.log(f"tile {tile.tile_id} failed in {stage}: {self.status[tile.tile_id]['error']}")
        if not isinstance(exc, EoflowError):
            (self.out / "logs").mkdir(exist_ok=True)
            (self.out / "logs" / f"{stage}-{tile.tile_id}.txt").write_text(
                "".join(traceback.format_exception(exc))
            )

    def describe(self, exc: BaseException) -> str:
        """One line for a failure, naming the asset, item and window of a failed read."""
        text = " ".join(str(exc).split())
        m = _READ_ERROR.search(text)
        if m:
            col, row, w, h, href, why = m.groups()
            item, asset = self.href_index.get(href, ("?", "?"))
            return (f"cannot read asset {asset} of item {item} ({href}), window col {col} row {row} "
                    f"size {w}x{h}: {why.strip()} -- the file is corrupt or truncated; replace it and rerun with --resume")  # fmt: skip
        return f"{type(exc).__name__}: {text}"

    def mark_ok(self, tile: Tile, stage: str) -> None:
        """Record a tile as done through ``stage``."""
        if self.status.get(tile.tile_id, {}).get("state") != "failed":
            self.status[tile.tile_id] = {"state": "ok", "stage": stage}

    def window(self) -> int:
        """Tiles computing at once: ``cluster.batch_tiles``, else one per worker thread."""
        from eoflow.cluster import total_threads

        return self.cfg.cluster.batch_tiles or total_threads(self.client)

    def timed(self, stage: str, fn: Callable[[], object]) -> object:
        """Run ``fn`` and record its wall time under ``stage``."""
        t0 = time.perf_counter()
        self.log(f"stage {stage} ...")
        result = fn()
        self.timings[stage] = round(time.perf_counter() - t0, 3)
        self.log(f"stage {stage} done in {self.timings[stage]:.1f} s")
        return result

    def up_to_date(self, ledger_store: str, output: str) -> bool:
        """True when a whole-run stage (``model``, ``report``) is done for this config and
        nothing upstream was rewritten in this invocation."""
        from eoflow.cube.store import is_done

        return (
            is_done(self.path(ledger_store), "all", self.chash)
            and self.path(output).exists()
            and not self.changed
        )

    def load_status(self) -> None:
        """Read per-tile status and source info left by earlier invocations in this directory."""
        path = self.out / "tiles.json"
        if path.exists():
            for tid, st in json.loads(path.read_text()).items():
                if "state" in st:
                    self.status[tid] = {k: st[k] for k in ("state", "stage", "error") if k in st}
        manifest = self.out / "manifest.json"
        if manifest.exists() and not self.source_info:
            self.source_info = json.loads(manifest.read_text()).get("inputs", {}).get("source", {})

    def retry_failed(self, stages: list[str] | tuple[str, ...]) -> list[str]:
        """Forget earlier invocations' failures in ``stages`` so those tiles are tried again.

        A tile that failed in a stage this invocation runs (a truncated asset since replaced, a
        disk that has since been freed) is retried; one that failed upstream of every stage run
        now stays failed, so a later stage never reads what was never written.

        Returns
        -------
        list of str
            The tile ids that will be retried.
        """
        again = [tid for tid, st in self.status.items()
                 if st.get("state") == "failed" and st.get("stage") in stages]  # fmt: skip
        for tid in again:
            del self.status[tid]
        if again:
            self.log(f"retrying {len(again)} tile(s) that failed before")
        return again

    def save_status(self) -> None:
        """Write ``tiles.json`` (per-tile status) into the run directory."""
        (self.out / "tiles.json").write_text(
            json.dumps(
                {t.tile_id: {**t.to_dict(), **self.status.get(t.tile_id, {})} for t in self.tiles},
                indent=2,
            )
        )
