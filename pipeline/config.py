"""The only reader of ``params.yaml``.

Every stage, the Airflow DAG and the tests get their settings from ``load()``,
which turns the YAML into frozen dataclasses and refuses an unknown key, a
wrong type or an out-of-range value *before* any work starts. The error names
the key (``params.yaml: train.learning_rate: ...``) because a typo that is
silently ignored costs a whole training run.

Default paths of every stage's inputs and outputs live here too, so stages,
``dvc.yaml`` and tests agree on one layout; stage functions still take paths
as arguments so tests never need to ``chdir``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import ConfigDict, Field, Strict, ValidationError, model_validator
from pydantic.dataclasses import dataclass

PARAMS_FILE = Path("params.yaml")
MIRROR_ENV = "DATA_MIRROR_DIR"

# Default layout, relative to the repository root (where dvc runs stages).
RAW_DIR = Path("data/raw")
SPLIT_DIR = Path("data/split")
VALIDATION_DOCS_DIR = Path("reports/validation")  # + profile.json: the data's drift profile
VALIDATION_METRICS = Path("metrics/validate.json")
MODELS_DIR = Path("models")
TRAIN_LOG_DIR = Path("metrics/train")
EVAL_METRICS = Path("metrics/evaluate.json")
CONFUSION_DIR = Path("reports/confusion")
REPORT_FILE = Path("reports/report.md")
PREDICTIONS_FILE = Path("reports/predictions.csv")  # per test image: label, each model's class
CHAMPION_DIR = Path("models/best")
EXPORT_DIR = Path("models/export")  # the champion as a TF Serving SavedModel
RUNTIME_DIR = Path("metrics/runtime")

FILE_ROLES = ("train_images", "train_labels", "test_images", "test_labels")

# Lax at the container level (YAML lists become tuples) but strict for scalars:
# "0.001" or 1 where a float or bool belongs is a mistake worth stopping for.
_STRICT = ConfigDict(extra="forbid", frozen=True)
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]

PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]
Share = Annotated[float, Strict(), Field(ge=0.0, le=1.0)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class ConfigError(ValueError):
    """params.yaml is unusable; the message is one line naming the key."""


@dataclass(config=_STRICT)
class FetchConfig:
    dataset: Str
    mirror_dir: Str | None = None
    retries: PositiveInt = 3
    backoff_s: Annotated[float, Strict(), Field(ge=0.0)] = 2.0
    timeout_s: Annotated[float, Strict(), Field(gt=0.0)] = 60.0


@dataclass(config=_STRICT)
class ReferenceResult:
    """A published result on one dataset, shown beside ours (test accuracy is required)."""
    test_accuracy: Share
    val_accuracy: Share | None = None
    wall_time_s: Annotated[float, Strict(), Field(ge=0.0)] | None = None


@dataclass(config=_STRICT)
class DatasetConfig:
    mirrors: tuple[str, ...]
    files: dict[Literal["train_images", "train_labels", "test_images", "test_labels"],
                tuple[str, Sha256 | None]]   # None: not pinned, the source may change
    train_count: PositiveInt
    test_count: PositiveInt
    image_shape: tuple[PositiveInt, PositiveInt]
    num_classes: Annotated[int, Strict(), Field(ge=2, le=256)] = 10
    # Published results on *this* dataset, per model name; none = no comparison columns.
    references: dict[str, ReferenceResult] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _all_roles(self):
        missing = [r for r in FILE_ROLES if r not in self.files]
        if missing:
            raise ValueError(f"files is missing {', '.join(missing)}")
        return self

    def file_name(self, role: str) -> str:
        return self.files[role][0]

    def sha256(self, role: str) -> str | None:
        return self.files[role][1]


@dataclass(config=_STRICT)
class DriftConfig:   # thresholds of pipeline/data/drift.py's distances; what a drift does
    on_drift: Literal["stop", "flag"] = "stop"
    labels: Annotated[float, Strict(), Field(gt=0.0)] = 0.05
    ink: Annotated[float, Strict(), Field(gt=0.0)] = 0.1
    centre: Annotated[float, Strict(), Field(gt=0.0)] = 0.1
    mean_images: Annotated[float, Strict(), Field(gt=0.0)] = 0.15


@dataclass(config=_STRICT)
class ValidateConfig:
    class_share_min: Share = 0.07
    class_share_max: Share = 0.13
    max_duplicate_share: Share = 0.001
    pixel_min: Annotated[int, Strict(), Field(ge=0, le=255)] = 0
    pixel_max: Annotated[int, Strict(), Field(ge=0, le=255)] = 255
    drift: DriftConfig = Field(default_factory=DriftConfig)

    @model_validator(mode="after")
    def _ordered(self):
        if self.class_share_min > self.class_share_max:
            raise ValueError("class_share_min is above class_share_max")
        if self.pixel_min > self.pixel_max:
            raise ValueError("pixel_min is above pixel_max")
        return self


@dataclass(config=_STRICT)
class SplitConfig:
    method: Literal["head", "stratified"] = "head"
    val_size: PositiveInt = 5000
    seed: NonNegInt = 42


@dataclass(config=_STRICT)
class AugmentConfig:
    """Random changes to training images (pipeline/rnn/augment.py); all 0 = off."""
    rotation_deg: Annotated[float, Strict(), Field(ge=0.0, le=45.0)] = 0.0
    shift_px: Annotated[float, Strict(), Field(ge=0.0, le=8.0)] = 0.0
    zoom: Annotated[float, Strict(), Field(ge=0.0, le=0.5)] = 0.0
    shear: Annotated[float, Strict(), Field(ge=0.0, le=1.0)] = 0.0
    stroke: Share = 0.0


@dataclass(config=_STRICT)
class TrainConfig:
    seed: NonNegInt = 42
    batch_size: PositiveInt = 100
    epochs: PositiveInt = 20
    learning_rate: Annotated[float, Strict(), Field(gt=0.0, le=1.0)] = 0.001
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    lr_final_ratio: Share = 0.01
    warmup_steps: NonNegInt = 0
    clipnorm: Annotated[float, Strict(), Field(ge=0.0)] = 0.0
    validate_every_steps: PositiveInt = 550
    early_stop_steps: PositiveInt = 2000
    max_train_samples: NonNegInt = 0
    kernel: Literal["auto", "native", "fused", "keras"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    batch_parts: Literal["auto"] | Annotated[int, Strict(), Field(ge=1, le=16)] = "auto"
    augment: AugmentConfig = Field(default_factory=AugmentConfig)


@dataclass(config=_STRICT)
class ModelConfig:
    cell: Literal["simple_rnn", "lstm", "gru"]
    units: PositiveInt = 100
    layers: Annotated[int, Strict(), Field(ge=1, le=16)] = 3
    activation: Literal["tanh", "relu"] = "tanh"
    head: Literal["all_states", "last"] = "last"
    bidirectional: Bool = False
    merge: Literal["add", "concat"] = "add"
    dropout: Annotated[float, Strict(), Field(ge=0.0, lt=1.0)] = 0.0


@dataclass(config=_STRICT)
class EvaluateConfig:
    batch_size: PositiveInt = 1000
    throughput_repeats: PositiveInt = 3


@dataclass(config=_STRICT)
class PublishConfig:
    champion_margin: Share = 0.0005
    record_branch: Str = "pipeline-runs"
    remote: Str = "storage"
    champion_dir: Str = "models/champion"
    git_remote: Str | None = None
    require_significance: Bool = False

    @model_validator(mode="after")
    def _inside_project(self):
        path = Path(self.champion_dir)
        if path.is_absolute() or ".." in path.parts or path == Path("."):
            raise ValueError("champion_dir: must be a folder inside the project")
        if path in (CHAMPION_DIR, MODELS_DIR / "checkpoints"):
            raise ValueError(f"champion_dir: {path} is written by the pipeline; pick another folder")
        return self


@dataclass(config=_STRICT)
class Params:
    fetch: FetchConfig
    datasets: dict[str, DatasetConfig]
    validate: ValidateConfig
    split: SplitConfig
    train: TrainConfig
    models: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], ModelConfig]
    evaluate: EvaluateConfig
    publish: PublishConfig

    @model_validator(mode="after")
    def _cross_checks(self):
        if self.fetch.dataset not in self.datasets:
            raise ValueError(
                f"fetch.dataset: {self.fetch.dataset!r} is not one of datasets "
                f"({', '.join(sorted(self.datasets))})")
        if not self.models:
            raise ValueError("models: at least one model is needed")
        if self.split.val_size >= self.dataset.train_count:
            raise ValueError("split.val_size: must be below the dataset's train_count")
        return self

    @property
    def dataset(self) -> DatasetConfig:
        return self.datasets[self.fetch.dataset]

    def mirror_dir(self) -> Path | None:
        """The local mirror: DATA_MIRROR_DIR wins over fetch.mirror_dir."""
        value = os.environ.get(MIRROR_ENV) or self.fetch.mirror_dir
        return Path(value) if value else None


def _format_error(err: ValidationError, source: Path) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required key is missing"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {key + ': ' if key else ''}{msg}{more}"


def parse(raw: object, source: Path = PARAMS_FILE) -> Params:
    """Check a parsed YAML mapping; raise ConfigError naming the bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level")
    try:
        return Params(**raw)
    except TypeError as exc:  # unknown/missing top-level section
        raise ConfigError(f"{source}: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


def load(path: Path | str = PARAMS_FILE) -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse(raw, path)


def load_project(project: Path | str) -> Params:
    """The params of the checkout at ``project`` (its ``params.yaml``)."""
    return load(Path(project) / PARAMS_FILE)


def model_names(text: str | bytes | None) -> list[str]:
    """The model names of a params.yaml's text in file order, with no validation.

    For reading another revision's file (``git show REV:params.yaml``) or a
    workspace mid-edit, which may not pass ``parse``: only the order matters
    there, so text that is not YAML or has no models gives ``[]``.
    """
    try:
        raw = yaml.safe_load(text or "") or {}
        return list(raw.get("models") or {})
    except (yaml.YAMLError, AttributeError):
        return []


def model_order(project: Path | str) -> list[str]:
    """The models of the checkout at ``project`` in params.yaml order (rnn, lstm, gru,
    bilstm); ``[]`` where its params.yaml is missing, unreadable or not YAML."""
    try:
        text = (Path(project) / PARAMS_FILE).read_text()
    except OSError:
        return []
    return model_names(text)
