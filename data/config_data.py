"""The base of every config section, the runtime-knob marker, and the dataset sections
(`data.world` shapes / files / hf). The root config (data/config.py) re-exports all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ConfigError(ValueError):
    """A user mistake in a config file or an override; the message names field and value."""


def runtime(default: Any, description: str, **kw: Any) -> Any:
    """A field that changes speed or placement only; excluded from cache keys."""
    return Field(default, description=description, json_schema_extra={"runtime": True}, **kw)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FilesConfig(Section):
    """`data.world=files`: your own tables (JSONL / parquet / CSV), one per split."""

    rationale: str | None = Field(None, description="table of questions with gold rationales (stage 1)")
    pool: str | None = Field(None, description="table of calibration prompts (stages 2-5)")
    eval: str | None = Field(None, description="table of held-out questions")
    scorer: str | None = Field(None, description="items to train the R-Scorer on; default: rationale")
    image_dir: str | None = Field(None, description="folder of relative image paths; default: the table's")
    allow_outside_image_dir: bool = Field(
        False, description="accept image paths that leave the image folder ('../x.png', an absolute path "
        "elsewhere, a symlink pointing out); off: such rows are rejected rows")
    columns: dict[str, str] = Field(
        default_factory=dict, description="our field -> your column, e.g. {id: question_id, image: path}"
    )
    max_image_bytes: int = Field(64 << 20, ge=1, description="larger image files are rejected rows")
    max_image_pixels: int = Field(40_000_000, ge=1, description="larger images are rejected rows")
    append_choices: bool = Field(True, description="multiple-choice rows: append '\\nOptions: (A) .. (B) ..' "
                                 "to the question (off when your questions already list them)")


class HFConfig(Section):
    """`data.world=hf`: a Hugging Face dataset (data/hf.py). Column mapping (schema 'columns'),
    image limits and append_choices are those of data.files."""

    dataset: str | None = Field(None, description="hub id (offline: from the local cache), a local folder, or "
                                "one parquet / JSON / JSONL / CSV file (one split: rationale, pool and eval "
                                "read consecutive rows of it; the *_split names do not apply)")
    name: str | None = Field(None, description="the dataset's configuration name, if it has several")
    mapping: Literal["aokvqa", "scienceqa", "columns"] = Field(
        "columns", description="how rows map to our fields: 'aokvqa', 'scienceqa', or 'columns' "
        "(data.files.columns)")
    rationale_split: str = Field("train", description="the dataset's split for rationale SFT rows")
    pool_split: str = Field("train", description="split of the calibration pool (after the rationale "
                            "rows when it is the same split)")
    eval_split: str = Field("validation", description="split of the held-out questions")


class DataConfig(Section):
    world: Literal["shapes", "files", "hf"] = Field(
        "shapes", description="'shapes': the built-in world; 'files': data.files tables; "
        "'hf': a Hugging Face dataset (data.hf)"
    )
    files: FilesConfig = Field(default_factory=FilesConfig)
    hf: HFConfig = Field(default_factory=HFConfig)
    max_reject_frac: float = Field(
        0.05, ge=0.0, le=1.0, description="stop before any model work above this share of bad rows"
    )
    max_leak_frac: float = Field(
        0.05, ge=0.0, le=1.0, description="files/hf: stop before any model work when more than this share of "
        "eval rows also appear in a training split (rationale, pool, scorer) by id or by image and "
        "question; below it the leaked rows are logged and counted (world meta 'leakage'); 0: any leak stops"
    )
    image_size: int = Field(64, ge=16, le=1024, description="image side in pixels")
    grid: int = Field(3, ge=2, le=8, description="the scene is a grid x grid board")
    min_objects: int = Field(2, ge=1, description="fewest objects in a scene")
    max_objects: int = Field(5, ge=1, description="most objects in a scene")
    families: list[str] = Field(
        default_factory=lambda: ["count_color", "count_shape", "color_of", "exists", "left_right"],
        description="question families to generate",
    )
    rationale_style: Literal["relevant", "sweep"] = Field(
        "relevant", description="shapes gold rationales: 'relevant' states the objects the question "
        "is about, 'sweep' every object in reading order, then the conclusion (data.shapes.gold_rationale)"
    )
    n_pretrain: int = Field(60000, ge=0, description="short-answer questions for the base model")
    n_rationale: int = Field(4000, ge=0, description="questions with gold rationales (stage 1); files: at most")
    n_pool: int = Field(6000, ge=0, description="calibration pool (stages 2-5); files: at most")
    n_eval: int = Field(1000, ge=0, description="held-out evaluation questions; files: at most")

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        if self.min_objects > self.max_objects:
            raise ValueError(
                f"min_objects ({self.min_objects}) > max_objects ({self.max_objects})"
            )
        if self.max_objects > self.grid * self.grid:
            raise ValueError(
                f"max_objects ({self.max_objects}) does not fit a {self.grid}x{self.grid} grid"
            )
        if self.world == "files":
            missing = [k for k in ("rationale", "pool", "eval") if not getattr(self.files, k)]
            if missing:
                raise ValueError(f"data.world='files' needs data.files.{missing[0]} (a table path)")
            for k in ("rationale", "pool", "eval", "scorer"):
                v = getattr(self.files, k)
                if v and not Path(v).is_file():
                    raise ValueError(f"data.files.{k}: {v!r} does not exist")
            if self.files.image_dir and not Path(self.files.image_dir).is_dir():
                raise ValueError(f"data.files.image_dir: {self.files.image_dir!r} is not a folder")
        if self.world == "hf" and not self.hf.dataset:
            raise ValueError("data.world='hf' needs data.hf.dataset (a hub id or a local path)")
        known = {"count_color", "count_shape", "color_of", "exists", "left_right"}
        bad = [f for f in self.families if f not in known]
        if bad or not self.families:
            raise ValueError(f"families {bad or '[]'} not in {sorted(known)}")
        return self
