"""What a training run is asked to do: the trainer's settings and the data's. Plain dataclasses that check
themselves when made (runtime.settings), importable without torch (the CLI takes its defaults from them)."""

from dataclasses import dataclass, fields

from ..runtime.settings import SettingsError, at_least, one_of

OPTIMIZERS = ("auto", "adamw", "adamw8bit")
SAVE_DTYPE_NAMES = ("fp32", "fp16", "bf16")  # a LoRA file's precision


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 1000
    train: str = "lora"  # lora; or full: every U-Net parameter (the demo model's recipe trains from scratch)
    ema: float = 0.0  # decay of an exponential moving average of the trained weights (0: none); outputs use it
    rank: int = 16
    alpha: float = 16.0
    targets: str = "temporal"  # temporal (the paper's choice), spatial, all (attention); locon (every layer)
    lr: float = 1e-4
    batch: int = 1  # videos per process per micro-step
    accumulate: int = 1  # micro-steps per optimizer step
    warmup: int = 50  # optimizer steps of linear learning-rate warm-up
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    seed: int = 0
    p_mean: float = 0.7  # ln σ ~ N(p_mean, p_std²): shifted towards high noise for 576×1024 (see docs/train.md)
    p_std: float = 1.6
    cond_dropout: float = 0.1
    motion_bucket: int | None = None  # None: from each clip's measured motion
    optimizer: str = "auto"  # adamw, adamw8bit (bitsandbytes); auto: adamw8bit on CUDA when installed
    checkpointing: bool = True  # gradient checkpointing of the U-Net blocks
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    sample_every: int = 0  # 0: a validation sample at the end only
    save_dtype: str = "fp32"  # the LoRA file's precision: fp32, fp16 or bf16 (training is unchanged)
    strength: float = 1.0  # the file's alpha is alpha × strength: `--lora FILE` applies it that much stronger than
    # it was trained (training is unchanged); for an adapter that moves less than its clips (docs/demo-model.md)

    # Settings that may change between a run and its resumption (they do not change the result). The per-process
    # batch may change too, as long as the global batch (batch × accumulate × processes) does not.
    RESUMABLE = ("steps", "checkpoint_every", "keep_checkpoints", "sample_every", "batch", "accumulate", "save_dtype",
                 "strength")

    def __post_init__(self):
        from ..inference.lora import TARGETS

        at_least(self, ("steps", "rank", "batch", "accumulate", "checkpoint_every", "keep_checkpoints"))
        one_of("train", self.train, ("lora", "full"))
        one_of("targets", self.targets, TARGETS)
        one_of("optimizer", self.optimizer, OPTIMIZERS)
        one_of("save_dtype", self.save_dtype, SAVE_DTYPE_NAMES)
        if not self.strength > 0:
            raise SettingsError("strength", f"{self.strength}: must be above 0")
        if not 0 <= self.cond_dropout <= 1:
            raise SettingsError("cond_dropout", f"{self.cond_dropout}: must be a probability in [0, 1]")
        if self.motion_bucket is not None and not 0 <= self.motion_bucket <= 255:
            raise SettingsError("motion_bucket", f"{self.motion_bucket}: a number 0-255, or None (measured)")

    def fingerprint(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.RESUMABLE}



@dataclass(frozen=True)
class DataSettings:
    frames: int
    width: int
    height: int
    fps: float  # the rate windows are sampled at, when the source allows
    aug_mean: float = -3.0
    aug_std: float = 0.5
    aug_draws: int = 4
    windows_per_clip: int = 0
    seed: int = 0

    def __post_init__(self):
        at_least(self, ("frames", "width", "height", "aug_draws"))
        at_least(self, ("windows_per_clip",), 0)
        if not self.fps > 0:
            raise SettingsError("fps", f"{self.fps}: must be above 0")
