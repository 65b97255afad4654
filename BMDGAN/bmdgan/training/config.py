"""Training configurations as YAML files (``bmdgan/configs``: paper, cpu, smoke, or a user's file)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import InputError

CONFIG_FOLDER = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class Augmentation:
    """Paper section 4.2.7 ranges: geometric ones act on radiograph and target alike, intensity ones on the
    radiograph."""

    rotation_degrees: float = 25.0
    shear_degrees: float = 9.0
    translation_fraction: float = 0.3
    scale_fraction: float = 0.3
    brightness: float = 0.5
    contrast: float = 0.5
    flip_horizontal: bool = True
    flip_vertical: bool = True


@dataclass(frozen=True)
class TrainingConfig:
    backbone: str
    image_shape: tuple[int, int]  # rows, columns (512 x 256 in the paper)
    batch_size: int
    accumulation_steps: int
    epochs: dict
    learning_rate: float
    weight_decay: float
    restart_period_epochs: int
    restart_multiplier: int
    loss_weights: dict
    gan_mode: str
    discriminator_width: int
    finetune_learning_rate: float = 8.0e-6
    regression_head: str = "coatnet-0"
    baseline_width: int = 64
    augmentation: Augmentation = field(default_factory=Augmentation)
    mixed_precision: bool = False
    sample_every_epochs: int = 10
    checkpoint_every_epochs: int = 1
    seed: int = 0
    name: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def load_config(name_or_path: str) -> TrainingConfig:
    """A config by name (``paper``, ``cpu``, ``smoke``) or by YAML path; unknown keys are an error."""
    import yaml

    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_FOLDER / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_FOLDER.glob("*.yaml")))
        raise InputError(path, "training configuration not found", f"give a YAML file or one of: {known}")
    values = yaml.safe_load(path.read_text()) or {}
    allowed = {f.name for f in fields(TrainingConfig)}
    unknown = set(values) - allowed
    if unknown:
        raise InputError(path, f"unknown settings {sorted(unknown)}", f"allowed: {sorted(allowed)}")
    values["augmentation"] = Augmentation(**values.get("augmentation", {}))
    values["image_shape"] = tuple(values["image_shape"])
    values.setdefault("name", path.stem)
    return TrainingConfig(**values)
