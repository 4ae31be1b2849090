"""LoRA training for the SVD U-Net: the EDM objective the sampler inverts, a resumable loop, and DDP.

Objective (consistent with sampling.py): a clean window x₀ (scaled latents) is noised to x = x₀ + σ·n with
ln σ ~ N(P_mean, P_std²) per video; the U-Net sees c_in·x beside the first frame's noise-augmented latent, the CLIP
token and the micro-conditioning (fps_id, motion bucket, σ_aug); D = c_skip·x + c_out·F, and the loss is
λ(σ)·‖D − x₀‖² with λ = (σ² + 1)/σ² (EDM's weighting for σ_data = 1). With probability cond_dropout the CLIP token
and the conditioning latent are both zeroed: exactly the unconditional branch that guidance uses at inference.

Determinism: every random draw of item g of step k (window, σ, noise, augmentation draw, dropout) comes from a
generator seeded by (seed, k, g); windows are visited in a seeded permutation per epoch. So a resumed run repeats
the uninterrupted one, and N processes with batch B see exactly the items one process sees with batch N·B.
"""

import json
import math
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .. import __version__
from ..checkpoints.loader import LoadedModel
from ..checkpoints.safetensors_io import CheckpointError, SafetensorsFile
from ..checkpoints.saving import write_safetensors
from ..inference.lora import META_KEY, LoraPair, lora_targets
from ..inference.pipeline import SamplingSettings, conditioning_vector
from ..inference.sampling import Scalings
from ..runtime.devices import DTYPES
from ..runtime.interrupts import held
from ..runtime.seeds import seed_of
from .data import WindowCache, motion_bucket_for
from .settings import SAVE_DTYPE_NAMES, TrainSettings

TRAIN_KEY = "svdcli.train"
SAVE_DTYPES = {k: DTYPES[k] for k in SAVE_DTYPE_NAMES}  # a LoRA file's precision


class TrainingError(RuntimeError):
    """Training that cannot go on (NaN loss, an incompatible checkpoint); one line for the user."""


@dataclass(frozen=True)
class Dist:
    """This process's place under torchrun (rank 0 of 1 without it)."""
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def mean(self, t: Tensor) -> Tensor:
        if self.world > 1:
            t = t.clone()
            dist.all_reduce(t)
            t /= self.world
        return t


def edm_loss(unet: nn.Module, x0: Tensor, sigma: Tensor, noise: Tensor, cond: Tensor, clip: Tensor, y: Tensor,
             frames: int, dtype: torch.dtype) -> Tensor:
    """x0, noise (B·T, 4, h, w) scaled latents; sigma (B,); cond (B, 4, h, w) unscaled; clip (B, D); y (B·T, adm).
    Returns the mean weighted denoising error (a scalar, float32)."""
    s = sigma.repeat_interleave(frames).view(-1, 1, 1, 1)  # (B·T, 1, 1, 1)
    sc = Scalings.at(s)
    noised = x0 + s * noise
    net_in = torch.cat([sc.c_in * noised, cond.repeat_interleave(frames, dim=0)], dim=1)  # (B·T, 8, h, w)
    context = clip[:, None].repeat_interleave(frames, dim=0)  # (B·T, 1, D)
    out = unet(net_in.to(dtype), sc.c_noise.flatten(), context, y, frames).float()
    denoised = sc.c_skip * noised + sc.c_out * out
    weight = (s ** 2 + 1) / s ** 2
    return (weight * (denoised - x0) ** 2).mean()


def add_lora(unet: nn.Module, targets: str, rank: int, alpha: float, seed: int,
             merge: bool | None = None) -> dict[str, LoraPair]:
    """Trainable LoRA pairs on the target layers (each drawn from its own seeded generator, so a pair does not
    depend on which others there are); the base weights are frozen. Returns {module path: pair}. Pairs are kept in
    float32 whatever the base weights' dtype. merge: the form of every pair (LoraPair); None: each its cheaper."""
    names = lora_targets(unet, targets)
    for p in unet.parameters():
        p.requires_grad_(False)
    pairs = {}
    for n in names:
        layer = unet.get_submodule(n)
        pairs[n] = LoraPair(layer, rank, alpha, torch.Generator().manual_seed(seed_of(seed, "lora", n)), merge)
        pairs[n].to(layer.weight.device)
        pairs[n].attach(layer)
    return pairs


def make_optimizer(params: list[nn.Parameter], settings: TrainSettings,
                   device: torch.device) -> tuple[torch.optim.Optimizer, str]:
    from ..runtime.quantize import import_bitsandbytes

    kind = settings.optimizer
    if kind == "auto":  # 8-bit states save 6 of every 8 bytes of optimizer memory where memory is scarce
        kind = "adamw8bit" if device.type == "cuda" and import_bitsandbytes() else "adamw"
    if kind == "adamw8bit":
        if not (bnb := import_bitsandbytes()):
            raise TrainingError("--optimizer adamw8bit needs bitsandbytes: pip install bitsandbytes")
        return bnb.optim.AdamW8bit(params, lr=settings.lr, weight_decay=settings.weight_decay), kind
    return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay), kind


def _optimizer_to_file(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """The optimizer state as safetensors tensors plus JSON, never pickled. Nested state (bitsandbytes keeps its
    quantisation state in a dict per parameter) is flattened to dotted names."""
    tensors, scalars = {}, {}

    def walk(i: int, path: str, v) -> None:
        if isinstance(v, dict):
            for k, sub in v.items():
                walk(i, f"{path}.{k}" if path else k, sub)
        elif torch.is_tensor(v) and v.dim() > 0:
            tensors[f"optimizer.{i}.{path}"] = v
        elif torch.is_tensor(v):
            scalars[f"{i}/{path}"] = {"value": v.item(), "dtype": str(v.dtype).removeprefix("torch.")}
        else:
            scalars[f"{i}/{path}"] = {"value": v}

    sd = opt.state_dict()
    for i, state in sd["state"].items():
        walk(i, "", state)
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_file(opt: torch.optim.Optimizer, f: SafetensorsFile, meta: dict) -> None:
    state: dict[int, dict] = {}

    def put(i: int, path: str, value) -> None:
        *parents, leaf = path.split(".")
        d = state.setdefault(i, {})
        for p in parents:
            d = d.setdefault(p, {})
        d[leaf] = value

    for k in f.keys():
        if k.startswith("optimizer."):
            _, i, path = k.split(".", 2)
            put(int(i), path, f.read(k))
    for key, v in meta["scalars"].items():
        i, path = key.split("/", 1)
        put(int(i), path, torch.tensor(v["value"], dtype=getattr(torch, v["dtype"])) if "dtype" in v else v["value"])
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


StepCallback = Callable[[int, int, float, float], None]  # (step, total, loss, lr)


class Trainer:
    """Trains LoRA layers on a U-Net from a window cache; writes checkpoints, logs and samples into work_dir
    (rank 0 only). The model's U-Net must already be on `device` with its weights in `dtype`."""

    def __init__(self, model: LoadedModel, data: WindowCache, settings: TrainSettings, work_dir: Path,
                 device: torch.device, dtype: torch.dtype, lora_meta: dict, dist_: Dist = Dist(),
                 sampler: Callable[[int], Path] | None = None, on_step: StepCallback | None = None):
        if not len(data):
            raise TrainingError("no training windows")
        self.model, self.data, self.settings, self.work_dir = model, data, settings, Path(work_dir)
        self.device, self.dtype, self.dist, self.sampler, self.on_step = device, dtype, dist_, sampler, on_step
        self.lora_meta = lora_meta
        unet = model.unet
        unet.checkpointing = settings.checkpointing
        if settings.train == "lora":
            self.layers = add_lora(unet, settings.targets, settings.rank, settings.alpha, settings.seed)
            self.names = [f"{n}.lora_{x}.weight" for n in sorted(self.layers) for x in "AB"]
            self.params = [getattr(self.layers[n], f"lora_{x}") for n in sorted(self.layers)
                           for x in "AB"]
        else:  # "full" (TrainSettings checks): float32 master weights; autocast computes in dtype
            unet.float().requires_grad_(True)
            self.layers = {}
            named = dict(unet.named_parameters())
            self.names = sorted(named)
            self.params = [named[n] for n in self.names]
        self.ema = [p.detach().clone() for p in self.params] if settings.ema else None
        self.optimizer, self.optimizer_kind = make_optimizer(self.params, settings, device)
        self.scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        self.net = unet
        if dist_.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(unet, device_ids=[device.index] if device.type == "cuda" else None)
        self.frames = data.latents.shape[1]
        self.last_checkpoint: Path | None = None
        self.tensorboard = None
        self.completed = 0  # optimizer steps done; set together with the weights they produced
        self.logged = 0  # the last step with its line in log.jsonl
        self.updating = False  # inside the weight update: an error now leaves no step's weights to checkpoint
        # What a checkpoint must agree on to be resumed: the settings that shape the result, the data and base
        # weights it was trained on (from lora_meta), the compute dtype and the global batch.
        self.identity = json.loads(json.dumps({
            **settings.fingerprint(), "global_batch": self.global_batch, "dtype": str(dtype).removeprefix("torch."),
            **{k: lora_meta[k] for k in ("motion", "base_sha256", "data_settings") if k in lora_meta}}))

    # -- data -------------------------------------------------------------------------------------------------
    @property
    def global_batch(self) -> int:
        return self.settings.batch * self.settings.accumulate * self.dist.world

    @lru_cache(maxsize=4)
    def _permutation(self, epoch: int) -> Tensor:
        generator = torch.Generator().manual_seed(seed_of(self.settings.seed, "epoch", epoch))
        return torch.randperm(len(self.data), generator=generator)

    def items(self, step: int, micro: int) -> list[int]:
        """This process's items of a micro-step, as indices into the step's global batch."""
        b = self.settings.batch
        return [micro * self.dist.world * b + self.dist.rank * b + j for j in range(b)]

    def batch(self, step: int, items: list[int]) -> dict[str, Tensor]:
        d, s, t = self.data, self.settings, self.frames
        xs, sigmas, noises, conds, clips, ys = [], [], [], [], [], []
        for g in items:
            pos = step * self.global_batch + g
            w = int(self._permutation(pos // len(d))[pos % len(d)])
            gen = torch.Generator().manual_seed(seed_of(s.seed, step, g))
            sigma = math.exp(s.p_mean + s.p_std * torch.randn(1, generator=gen).item())
            noise = torch.randn(d.latents.shape[1:], generator=gen)
            k = int(torch.randint(d.cond.shape[1], (1,), generator=gen))
            drop = torch.rand(1, generator=gen).item() < s.cond_dropout
            bucket = s.motion_bucket if s.motion_bucket is not None else motion_bucket_for(float(d.motion[w]))
            vec = SamplingSettings(frames=t, fps_id=int(d.fps_id[w]), motion_bucket_id=bucket,
                                   noise_aug=float(d.cond_aug[w, k]))
            xs.append(d.latents[w].float())
            sigmas.append(sigma)
            noises.append(noise)
            conds.append(d.cond[w, k].float() * (0.0 if drop else 1.0))
            clips.append(d.clip[w].float() * (0.0 if drop else 1.0))
            ys.append(conditioning_vector(self.model, vec).float())
        to = lambda x: x.to(self.device)  # noqa: E731
        return {"x0": to(torch.cat(xs)), "sigma": to(torch.tensor(sigmas)), "noise": to(torch.cat(noises)),
                "cond": to(torch.stack(conds)), "clip": to(torch.stack(clips)), "y": to(torch.cat(ys))}

    # -- the loop ---------------------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        s = self.settings
        return s.lr * min(1.0, (step + 1) / s.warmup) if s.warmup > 0 else s.lr

    def train_step(self, step: int) -> float:
        """One optimizer step; returns the loss averaged over the global batch."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(step)
        autocast = (torch.autocast(self.device.type, dtype=self.dtype) if self.dtype != torch.float32
                    else nullcontext())
        total = torch.zeros((), device=self.device)
        for m in range(self.settings.accumulate):
            b = self.batch(step, self.items(step, m))
            sync = self.net.no_sync() if self.dist.world > 1 and m < self.settings.accumulate - 1 else nullcontext()
            with sync:
                with autocast:
                    loss = edm_loss(self.net, b["x0"], b["sigma"], b["noise"], b["cond"], b["clip"], b["y"],
                                    self.frames, self.dtype) / self.settings.accumulate
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += loss.detach()
        value = self.dist.mean(total).item()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.settings.max_grad_norm or math.inf).item()
        # fp16: the gradient scaler skips steps with inf gradients by design; otherwise they are a failure.
        bad = value if not math.isfinite(value) else norm if not (math.isfinite(norm) or self.scaler) else None
        if bad is not None:
            self.optimizer.zero_grad(set_to_none=True)
            what = "loss" if not math.isfinite(value) else "gradient norm"
            raise TrainingError(f"the {what} became {bad} at step {step + 1}; training stopped, nothing of this "
                                f"step was kept (last good checkpoint: {self.last_checkpoint or 'none yet'})")
        # An interrupt waits for the update to end (it would leave the weights of no step to checkpoint: the
        # optimizer's step taken, the average's not) and then stops training with this step done.
        with held():
            self.updating = True
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema:
                with torch.no_grad():
                    # warmed-up decay: with a fixed 0.999 the average would still hold 0.999^3000 = 5 % of the
                    # random initial weights after 3000 steps of training from scratch
                    decay = min(self.settings.ema, (1 + step) / (10 + step))
                    torch._foreach_lerp_(self.ema, [p.detach() for p in self.params], 1 - decay)
            self.completed = step + 1
            self.completed_loss = value  # an interrupt at the end of this block still logs the step it checkpoints
            self.updating = False
        return value

    def run(self, resume: bool = False) -> int:
        """Train up to s.steps; returns the number of steps done. Interrupted (Ctrl-C, SIGTERM) or stopped by an error
        other than a TrainingError, it first saves a checkpoint of the last completed step: under torchrun a worker
        whose peer stopped first sees a broken collective before its own interrupt, and must save all the same."""
        start = self.completed = self.resume() if resume else 0
        if self.dist.main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self._trim_log(start)
            self._open_tensorboard()
        self.logged = start
        try:
            for step in range(start, self.settings.steps):
                t0 = time.perf_counter()
                loss = self.train_step(step)
                done = self.completed
                if self.dist.main:
                    self._log(done, loss, time.perf_counter() - t0)
                if self.on_step:
                    self.on_step(done, self.settings.steps, loss, self.lr_at(step))
                if done % self.settings.checkpoint_every == 0 or done == self.settings.steps:
                    self.save_checkpoint(done)
                if self.sampler and self.dist.main and done < self.settings.steps and self.settings.sample_every and \
                        done % self.settings.sample_every == 0:  # the last step's sample follows the saved result
                    self.sample(done)
                self.dist.barrier()
        except TrainingError:
            raise  # it names the last good checkpoint: nothing of the failed step was kept
        except BaseException:
            done = self.completed
            if self.dist.main and not self.updating and done > self.logged:  # interrupted as the update ended
                self._log(done, self.completed_loss, time.perf_counter() - t0)
            if not self.updating and done > start and (self.last_checkpoint is None or
                                                       self.last_checkpoint.name != self._name(done)):
                with held():  # another interrupt (a second Ctrl-C, a redelivered SIGTERM) waits for the file
                    self.save_checkpoint(done)
            raise
        finally:
            if self.tensorboard:
                self.tensorboard.close()
        return self.completed

    # -- files ------------------------------------------------------------------------------------------------
    def trained(self, ema: bool = True) -> dict[str, Tensor]:
        """The trained tensors by name (the moving average where there is one and ema): LoRA pairs in our file
        naming, or the U-Net's parameters."""
        values = self.ema if ema and self.ema else [p.detach() for p in self.params]
        return {n: v.float().cpu() for n, v in zip(self.names, values)}

    def sample(self, step: int) -> None:
        """A validation sample with the moving-average weights (the sampler warns rather than fail the run)."""
        with self.averaged_weights():
            self.sampler(step)

    @contextmanager
    def averaged_weights(self):
        """The model runs with the moving-average weights inside (validation samples); the trained ones after."""
        if not self.ema:
            yield
            return
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.ema)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, saved)

    def lora_metadata(self, steps: int) -> dict:
        return {**self.lora_meta, "architecture": self.model.architecture.name, "rank": self.settings.rank,
                "alpha": self.settings.alpha * self.settings.strength, "targets": self.settings.targets, "steps": steps,
                "svd_version": __version__, "train_settings": asdict(self.settings)}

    def save_lora(self, path: Path, steps: int) -> None:
        from ..inference.lora import save_lora

        t = self.trained()
        dtype = SAVE_DTYPES[self.settings.save_dtype]
        pairs = {n.removesuffix(".lora_A.weight"): (t[n].to(dtype), t[n.replace("lora_A", "lora_B")].to(dtype))
                 for n in t if n.endswith(".lora_A.weight")}
        meta = self.lora_metadata(steps)
        save_lora(pairs, path, self.model.architecture, meta["alpha"],
                  **{k: v for k, v in meta.items() if k not in ("architecture", "alpha")})

    def save_checkpoint(self, step: int) -> None:
        """checkpoints/step-NNNNNN.safetensors, written atomically: the trained tensors (a LoRA checkpoint is a LoRA
        file as it is), their moving average, the optimizer state and what resuming needs. Only the newest
        keep_checkpoints are kept."""
        if not self.dist.main:
            return
        folder = self.work_dir / "checkpoints"
        tensors = {**self.trained(ema=False)}
        if self.ema:
            tensors.update({f"{n}.ema": v for n, v in self.trained(ema=True).items()})  # not LoRA names
        opt_tensors, opt_meta = _optimizer_to_file(self.optimizer)
        tensors.update(opt_tensors)
        train = {"step": step, "fingerprint": self.identity, "names": self.names, "optimizer": opt_meta,
                 "optimizer_kind": self.optimizer_kind, "world": self.dist.world,
                 "scaler": self.scaler.state_dict() if self.scaler else None}
        meta = {TRAIN_KEY: json.dumps(train)}
        if self.settings.train == "lora":
            meta[META_KEY] = json.dumps(self.lora_metadata(step))
        path = folder / self._name(step)
        write_safetensors(tensors, path, meta)
        self.last_checkpoint = path
        for old in self.checkpoints()[:-self.settings.keep_checkpoints]:
            old.unlink()

    @staticmethod
    def _name(step: int) -> str:
        return f"step-{step:06d}.safetensors"

    def checkpoints(self) -> list[Path]:
        """This work folder's checkpoints, oldest first (by step, whatever the number of digits)."""
        found = (self.work_dir / "checkpoints").glob("step-*.safetensors")
        return sorted(found, key=lambda p: int(p.stem.removeprefix("step-")) if p.stem[5:].isdigit() else -1)

    def resume(self) -> int:
        """Load the newest checkpoint in work_dir; returns its step (0 if there is none)."""
        found = self.checkpoints()
        if not found:
            return 0
        path = found[-1]
        try:
            f = SafetensorsFile(path)
            train = json.loads(f.metadata[TRAIN_KEY])
        except (CheckpointError, KeyError, json.JSONDecodeError) as e:
            raise TrainingError(f"{path}: not a usable checkpoint ({e})") from None
        diff = [f"{k} {train['fingerprint'].get(k)!r} (now {v!r})" for k, v in self.identity.items()
                if train["fingerprint"].get(k) != v]
        if diff:
            raise TrainingError(f"{path} was made with other settings: {', '.join(diff)}; resume with the same "
                                "settings or use a new --work-dir")
        if train["names"] != self.names:
            raise TrainingError(f"{path}: its trained tensors are not this model's")
        if train["optimizer_kind"] != self.optimizer_kind:
            raise TrainingError(f"{path}: made with {train['optimizer_kind']}, now {self.optimizer_kind}")
        with torch.no_grad():
            for name, p in zip(self.names, self.params):
                p.copy_(f.read(name))
            for name, e in zip(self.names, self.ema or []):
                e.copy_(f.read(f"{name}.ema"))
        _optimizer_from_file(self.optimizer, f, train["optimizer"])
        if self.scaler and train.get("scaler"):
            self.scaler.load_state_dict(train["scaler"])
        self.last_checkpoint = path
        return int(train["step"])

    def _log(self, step: int, loss: float, seconds: float) -> None:
        line = {"step": step, "loss": loss, "lr": self.lr_at(step - 1), "seconds": round(seconds, 4),
                "videos": self.global_batch}
        with held():  # the line and the record of it together: an interrupt between them would log the step twice
            with open(self.work_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")
            self.logged = step
        if self.tensorboard:
            self.tensorboard.add_scalar("loss", loss, step)
            self.tensorboard.add_scalar("lr", line["lr"], step)

    def _trim_log(self, start: int) -> None:
        """A resumed run continues the log from its checkpoint's step."""
        log = self.work_dir / "log.jsonl"
        if log.exists():
            def kept(line: str) -> bool:  # a line cut off by a kill, or not ours, is dropped
                try:
                    return json.loads(line)["step"] <= start
                except (json.JSONDecodeError, KeyError, TypeError):
                    return False
            log.write_text("".join(ln + "\n" for ln in log.read_text().splitlines() if kept(ln)))

    def _open_tensorboard(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return  # optional
        self.tensorboard = SummaryWriter(str(self.work_dir / "tensorboard"))
