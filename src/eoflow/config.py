"""Typed run configuration, validated once at the edge (YAML -> pydantic) and never travelling inward.

Every model forbids unknown keys; validation errors become one-line
:class:`~eoflow.errors.ConfigError` messages naming the key path.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from eoflow.errors import ConfigError, InputError

__all__ = ["RunConfig", "config_hash", "load_config"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AoiConfig(_Model):
    """Where: a vector file or a bounding box, buffered."""

    path: str | None = Field(None, description="GeoJSON/GeoPackage with the area polygon(s)")
    layer: str | None = None
    bbox: tuple[float, float, float, float] | None = Field(None, description="minx,miny,maxx,maxy")
    bbox_crs: str = "EPSG:4326"
    buffer_m: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _one_of(self) -> AoiConfig:
        if (self.path is None) == (self.bbox is None):
            raise ValueError("give exactly one of 'path' or 'bbox'")
        return self


class GridConfig(_Model):
    """The tile grid in the AOI's UTM zone."""

    tile_size_px: int = Field(1000, ge=8, le=20000)
    res_m: float | tuple[float, float] = Field(10.0, description="pixel size (x, y) in metres")
    origin: tuple[float, float] = Field((0.0, 0.0), description="a grid corner (x, y)")
    chunk_px: int = Field(512, ge=8, description="spatial chunk size; time is never chunked")


class StacSource(_Model):
    """Sentinel-2 Items from a static catalog (path) or a STAC API (URL)."""

    kind: Literal["stac"] = "stac"
    catalog: str = Field(..., description="path to a static catalog/collection JSON, or API URL")
    collections: list[str] = Field(default_factory=list)
    assets: list[str] | None = Field(None, description="asset keys to load (default: all data)")
    max_cloud_cover: float | None = Field(None, ge=0, le=100)
    static_assets: list[str] = Field(default_factory=list, description="collection-level rasters")


class GeoTiffSource(_Model):
    """A folder/glob of dated GeoTIFF/COG files."""

    kind: Literal["geotiff"] = "geotiff"
    paths: str
    date_pattern: str | None = None
    band_names: list[str] | None = None


class GpkgRasterSource(_Model):
    """A GeoPackage with one raster layer per date."""

    kind: Literal["gpkg"] = "gpkg"
    path: str
    match: str | None = None


class SyntheticSource(_Model):
    """Generated Sentinel-2-like data (clearly synthetic), for scale work."""

    kind: Literal["synthetic"] = "synthetic"
    revisit_days: int = Field(5, ge=1)
    seed: int = 0


Source = Annotated[
    StacSource | GeoTiffSource | GpkgRasterSource | SyntheticSource, Field(discriminator="kind")
]


class ReferenceConfig(_Model):
    """Reference polygons and their class table (or the synthetic source's own class map)."""

    kind: Literal["vector", "synthetic"] = "vector"
    path: str | None = None
    layer: str | None = None
    value_column: str = "LULC_ID"
    name_column: str | None = "LULC_NAME"
    color_column: str | None = None

    @model_validator(mode="after")
    def _needs_path(self) -> ReferenceConfig:
        if self.kind == "vector" and not self.path:
            raise ValueError("a vector reference needs 'path'")
        return self


class FeaturesConfig(_Model):
    """Masking, indices, frame filter, regular time grid."""

    valid_from: Literal["auto", "clm", "scl"] = Field(
        "auto", description="IS_DATA & ~CLM, or SCL classes (auto: CLM when present)"
    )
    scl_valid_classes: list[int] = Field(default_factory=lambda: [4, 5, 6, 7, 11])
    indices: list[Literal["NDVI", "NDWI", "NDBI"]] = Field(
        default_factory=lambda: ["NDVI", "NDWI", "NDBI"],
        description="computed from named bands where present (an NDVI asset is used as is)",
    )
    bands: list[str] = Field(default_factory=list, description="raw bands to keep as features")
    static: list[str] = Field(default_factory=list, description="static layers, e.g. DEM")
    min_valid_fraction: float = Field(0.8, ge=0, le=1, description="drop frames at or below")
    step_days: int = Field(15, ge=1)
    erosion_radius_px: int = Field(1, ge=0)


class SamplingConfig(_Model):
    """Stratified fraction sampling of reference pixels."""

    fraction: float = Field(0.25, gt=0, le=1)
    exclude: list[int] = Field(default_factory=lambda: [0])
    seed: int = 42


class SplitConfig(_Model):
    """Train/test split by tile."""

    test_tiles: list[str] | None = None
    test_fraction: float = Field(0.25, gt=0, lt=1)
    seed: int = 42


class ModelConfig(_Model):
    """LightGBM multiclass parameters."""

    n_estimators: int = Field(300, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(31, ge=2)
    min_child_samples: int = Field(20, ge=1)
    distributed: bool = Field(False, description="train with lightgbm.dask on the cluster")
    seed: int = 42


class ClusterConfig(_Model):
    """Where the Dask graphs run."""

    address: str | None = Field(None, description="existing scheduler (tcp://host:port)")
    n_workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str = "auto"
    processes: bool = Field(True, description="worker processes (False: threads in one process)")
    dashboard_address: str = "127.0.0.1:0"
    batch_tiles: int | None = Field(
        None,
        ge=1,
        description="tiles computing at once (a sliding window: a tile's graph is submitted as soon "
        "as another finishes); default one per worker thread, which measured fastest with the "
        "lowest worker memory (2 cores: 1.0 GiB per worker against 1.1-1.5 GiB with two per thread)",
    )
    allocator: Literal["system", "retain", "jemalloc"] = Field(
        "retain",
        description="memory allocator of local worker processes. retain (default): glibc with "
        "one arena, no mmap and no trimming, so freed chunk buffers are reused instead of "
        "faulted in afresh (a worker's resident memory stays at its high-water mark); system: "
        "glibc as Dask configures it (returns memory after every task); jemalloc: preloaded "
        "from libjemalloc2",
    )


class RunConfig(_Model):
    """A whole eoflow run."""

    name: str = "run"
    aoi: AoiConfig
    start: dt.date
    end: dt.date
    grid: GridConfig = GridConfig()
    source: Source
    reference: ReferenceConfig
    features: FeaturesConfig = FeaturesConfig()
    sampling: SamplingConfig = SamplingConfig()
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    cluster: ClusterConfig = ClusterConfig()
    tiles: list[str] | None = Field(None, description="restrict to these tile ids")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _date(cls, v):
        if isinstance(v, str):
            try:
                return dt.date.fromisoformat(v)
            except ValueError as exc:
                raise ValueError(f"{v!r} is not a real date (YYYY-MM-DD)") from exc
        return v

    @model_validator(mode="after")
    def _order(self) -> RunConfig:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        return self

    def resolve_paths(self, base: Path) -> RunConfig:
        """Return a copy with relative file paths made absolute against ``base``."""

        def fix(p: str | None) -> str | None:
            if p is None or "://" in p or Path(p).is_absolute():
                return p
            return str((base / p).resolve())

        upd: dict = {
            "reference": self.reference.model_copy(update={"path": fix(self.reference.path)})
        }
        if self.aoi.path:
            upd["aoi"] = self.aoi.model_copy(update={"path": fix(self.aoi.path)})
        src = self.source
        if isinstance(src, StacSource):
            upd["source"] = src.model_copy(update={"catalog": fix(src.catalog)})
        elif isinstance(src, GeoTiffSource):
            upd["source"] = src.model_copy(update={"paths": fix(src.paths)})
        elif isinstance(src, GpkgRasterSource):
            upd["source"] = src.model_copy(update={"path": fix(src.path)})
        return self.model_copy(update=upd)


def _format_validation(exc: ValidationError, where: str) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc or '(top level)'}: {msg}")
    more = f" (+{len(exc.errors()) - 3} more)" if len(exc.errors()) > 3 else ""
    return f"config {where}: " + "; ".join(parts) + more


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a run config from YAML; relative paths resolve against its folder.

    Raises
    ------
    ConfigError
        Unknown keys, wrong types, impossible dates (message names the key path).
    InputError
        The file is missing or is not YAML.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {path} does not exist", "check the path")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        msg = " ".join(str(exc).split())[:160]
        raise ConfigError(f"config {path} is not valid YAML: {msg}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping of keys", "see configs/sample.yaml")
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, str(path)), "fix the key and rerun") from None
    return cfg.resolve_paths(path.parent)


def config_hash(cfg: RunConfig) -> str:
    """Stable short hash of everything that determines the outputs."""
    payload = cfg.model_dump(mode="json", exclude={"cluster", "name"})
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
