"""The root config: one typed section per part of the pipeline.

Sections live next to the code that reads them (``data/config.py``, ``models/config.py``,
``training/balancers/config.py``); the ones the training package reads are here. Every key is
read by some code path: a key that nothing reads is a bug (see tests/training/test_config.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from data.config import DataConfig
from data.records import SAMPLE_RATE_HZ
from data.schema import (
    ConfigError,
    apply_override,
    deep_merge,
    from_dict,
    parse_override,
    read_yaml,
    spec,
    to_dict,
)
from models.config import ModelConfig
from training.balancers.config import BalancerConfig
from training.components import COMPONENTS

MAX_SEED = 2**63 - 1  # torch.manual_seed takes a signed 64-bit integer
DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def share_spec(help: str) -> float:
    """A share from 0 to 1, off (0.0) by default: the augmentations and added series below."""
    return spec(0.0, ge=0.0, le=1.0, help=help)


@dataclass
class DiffusionConfig:
    timesteps: int = spec(1000, ge=2, help="number of diffusion steps T")
    schedule: Literal["cosine", "linear"] = spec("cosine")
    cosine_s: float = spec(0.008, gt=0.0, help="cosine schedule offset s (Nichol & Dhariwal 2021)")
    beta_start: float = spec(1e-4, gt=0.0, lt=1.0, help="linear schedule beta_0 for T=1000 (scaled by 1000/T)")
    beta_end: float = spec(0.02, gt=0.0, lt=1.0, help="linear schedule beta_T for T=1000 (scaled by 1000/T)")
    prediction: Literal["eps", "v", "x0"] = spec("v", help="what the signal head predicts")
    min_snr_gamma: float = spec(5.0, ge=0.0, help="Min-SNR-gamma loss weight; 0 turns it off")
    # sampling defaults (evaluation.generate and validation figures; CLI flags override them)
    sampler: Literal["ddpm", "ddim", "dpmpp2m"] = spec("ddim", help="ddpm ancestral, ddim, DPM-Solver++ 2M")
    sampling_steps: int = spec(50, ge=1, help="network evaluations per sample (ddpm: T for the full chain)")
    eta: float = spec(0.0, ge=0.0, le=1.0, help="DDIM stochasticity: 0 deterministic, 1 = DDPM posterior noise")
    timestep_spacing: Literal["auto", "linspace", "leading", "trailing", "logsnr"] = spec(
        "auto", help="how steps pick timesteps; auto: linspace for ddpm/ddim, logsnr for dpmpp2m"
    )
    guidance: float = spec(1.0, ge=0.0, help="classifier-free guidance w: uncond + w*(cond - uncond); 1: off")
    guidance_sigma_min: float = spec(
        0.0, ge=0.0, help="guidance only at steps whose noise level sigma_t / alpha_t exceeds this (Kynkäänniemi "
        "et al. 2024, guidance in a limited interval); the steps below it are the conditional model alone; "
        "0: every step")
    clip_x0: float = spec(0.0, ge=0.0, help="clamp predicted x0 to [-c, c] while sampling; 0: no clamping")
    lowpass_hz: float = spec(
        0.0, ge=0.0, lt=SAMPLE_RATE_HZ / 2, help="generated signals through a zero-phase low-pass at this frequency "
        "(data.waveform.lowpass_zero_phase); 0: none. The sampler leaves residual power above the training "
        "recordings' band, which the heads read as noise (docs/generate.md)")

    def __post_init__(self) -> None:
        if self.sampling_steps > self.timesteps:
            raise ValueError(
                f"diffusion.sampling_steps: expected <= diffusion.timesteps ({self.timesteps}), "
                f"found {self.sampling_steps}"
            )
        if self.schedule == "linear" and self.beta_start >= self.beta_end:
            raise ValueError(
                f"diffusion.beta_start: expected < diffusion.beta_end ({self.beta_end}), found {self.beta_start}"
            )


@dataclass
class LossConfig:
    class_loss: Literal["ce", "focal"] = spec("ce")
    focal_gamma: float = spec(2.0, ge=0.0)
    class_weights: Literal["none", "inverse", "sqrt_inverse"] = spec("sqrt_inverse", help="from train split")
    huber_delta: float = spec(1.0, gt=0.0, help="Huber delta, in standardized target units")
    threshold_loss: Literal["huber", "gaussian_nll"] = spec(
        "huber", help="gaussian_nll is refused until the network has a variance head (threshold_logvar)"
    )
    head_input: Literal["clean", "noisy"] = spec("clean", help="what x the auxiliary heads see in training")
    signal_class_weights: bool = spec(
        False, help="weight each recording's signal loss by its type's class weight (loss.class_weights): a rare "
                    "type's waveform (neuropathy's cochlear microphonic) counts as its label does in the class loss")
    balancer: BalancerConfig = spec(BalancerConfig())


@dataclass
class SeriesConfig:
    """The series stage (training/series_stage.py): SeriesNet on the frozen network's per-recording evidence."""

    enabled: bool = spec(False, help="after training the network, fit the series model on the train split's series")
    width: int = spec(64, ge=8, help="token width of SeriesNet")
    layers: int = spec(2, ge=1, help="Transformer encoder layers across the levels of a series")
    heads: int = spec(4, ge=1, help="attention heads; divides width")
    dropout: float = spec(0.1, ge=0.0, lt=1.0)
    epochs: int = spec(60, ge=1)
    batch_size: int = spec(32, ge=1, help="series per step")
    lr: float = spec(1e-3, gt=0.0)
    weight_decay: float = spec(1e-2, ge=0.0)
    drop_recordings: float = spec(0.2, ge=0.0, lt=1.0, help="augmentation: hide each recording with this probability")
    threshold_sigma: float = spec(1.0, ge=0.0, help="ordinal label smoothing of the threshold, in 5 dB grid steps")
    val_every: int = spec(5, ge=1, help="series epochs between validations (the best one is kept)")
    extra_patients: int = spec(
        0, ge=0, le=20_000, help="synthetic data only: this many more patients from the run's generator settings at "
                                 "seed data.synthetic.seed + 90001, their series for the series model's training alone")
    noise_series: float = spec(
        0.0, ge=0.0, le=4.0, help="this share of the train split's series again as noise series: every recording "
                                  "replaced by coloured noise of its own size, labelled TOTAL / no response (issue "
                                  "33); above 1, every series that many times over (2: each twice, a fresh draw each)")
    val_noise_series: float = share_spec(
        "this share of the val split's series again as noise series (drawn as series.noise_series draws them); the "
        "share answered 'no response' (val/series/noise/no_response) joins the score the best epoch is kept by")
    thinned_series: float = share_spec(
        "this share of the training series (train split and extra patients) again, each thinned to a random 4-10 of "
        "its levels with one recording at each: the short protocols clinics record")
    noise_surrogates: float = share_spec(
        "share of the noise series' recordings that are phase surrogates of the recording (its amplitude spectrum, "
        "random phases) instead of coloured noise (training/augment.py)")
    noise_band: float = share_spec(
        "share of the noise series' coloured-noise recordings that also pass through a random recording filter "
        "(high-pass 30-300 Hz, low-pass 1.5-3 kHz; training.augment.recording_band): noise in a recording's band, "
        "which the network cannot dismiss by its high frequencies; 0: every frequency up to Nyquist")
    coherence: bool = spec(
        False, help="the series model also reads each recording's correlation with its louder and quieter neighbours "
                    "and with the series' loudest recording (models.series.level_coherence): a response repeats "
                    "across levels, noise does not")
    microphonic: bool = spec(
        False, help="the series model also reads each recording's cochlear microphonic index (models.series."
                    "microphonic_index: 1.5-3.5 kHz ringing at 0.6-2 ms against 6-9.5 ms), the sign of auditory "
                    "neuropathy beside absent neural waves")
    waterfall: bool = spec(
        False, help="the series model also reads each recording's waves read down its series' waterfall (presence "
                    "non-decreasing in level, the latency that fits the series' latency-intensity function; "
                    "training.series.waterfall_waves); needs model.peak_head: map")

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"series.heads: expected a divisor of series.width={self.width}, found {self.heads}")


@dataclass
class EarlyStoppingConfig:
    enabled: bool = spec(False)
    metric: str = spec("val/total", help="a key of the validation summary")
    mode: Literal["min", "max"] = spec("min")
    patience: int = spec(10, ge=1, help="validations without improvement before stopping")
    min_delta: float = spec(0.0, ge=0.0, help="smallest change that counts as an improvement")


@dataclass
class TrainingConfig:
    epochs: int = spec(10, ge=1)
    batch_size: int = spec(64, ge=1)
    grad_accum_steps: int = spec(1, ge=1, help="micro-batches per optimizer step")
    lr: float = spec(2e-3, gt=0.0)
    weight_decay: float = spec(1e-2, ge=0.0)
    warmup_steps: int = spec(50, ge=0, help="linear warm-up, then cosine decay to lr * min_lr_ratio")
    min_lr_ratio: float = spec(0.05, ge=0.0, le=1.0)
    grad_clip: float = spec(1.0, ge=0.0, help="max global gradient norm; 0 turns clipping off")
    ema_decay: float = spec(0.999, ge=0.0, lt=1.0, help="EMA of weights; 0 turns it off")
    precision: Literal["auto", "fp32", "bf16"] = spec("auto", help="auto: bf16 on CUDA, fp32 on CPU")
    log_frequency: int = spec(50, ge=1, help="optimizer steps between step-log lines")
    val_every: int = spec(1, ge=1, help="epochs between validations")
    checkpoint_every_steps: int = spec(0, ge=0, help="also write last.pt every N steps; 0: per epoch only")
    early_stopping: EarlyStoppingConfig = spec(EarlyStoppingConfig())
    nan_policy: Literal["skip", "raise"] = spec("skip", help="non-finite loss: skip the step or stop")
    max_consecutive_nan: int = spec(5, ge=1, help="stop after this many non-finite steps in a row")
    clinical_validation: bool = spec(
        True, help="validation also scores the series level (rule threshold, summed type evidence, wave V in "
                   "ms) as val/patient/*; usable as early_stopping.metric"
    )
    intensity_dropout: float = share_spec(
        "training batches: probability that a recording's stated intensity is replaced by the training mean "
        "(training/augment.py); 0: off")
    noise_catch: float = spec(
        0.0, ge=0.0, lt=1.0, help="training: share of the heads' rows replaced by noise-only catch trials (random "
                                  "spectrum, the row's own size; labelled absent / TOTAL / no response; "
                                  "training/augment.py); 0: off")
    catch_surrogates: float = share_spec(
        "training: share of the noise catch rows that are phase surrogates of the row's own recording (its "
        "amplitude spectrum, random phases: no waveform; training/augment.py); 0: coloured noise only")
    catch_band: bool = spec(
        False, help="training: the catch rows' coloured noise also passes through a random recording filter "
                    "(high-pass 30-300 Hz, low-pass 1.5-3 kHz, as the wide chain's), so that no catch row carries "
                    "power a recording cannot have (training/augment.py); false: every frequency up to Nyquist")
    intensity_jitter_db: float = spec(
        0.0, ge=0.0, le=50.0, help="training batches: N(0, σ²) dB added to the stated intensity, clipped to "
                                   "0-100 dB (training/augment.py); 0: off")

    def __post_init__(self) -> None:
        # best.pt and early stopping follow this metric: a name no summary holds used to pass here, then
        # stop the run after its first epoch (early stopping on) or never write best.pt (off).
        metric = self.early_stopping.metric
        plain = [f"{split}/{k}" for split in ("val", "train") for k in ("total", "weighted", *COMPONENTS)]
        clinical = metric.startswith("val/patient/") and len(metric) > len("val/patient/")
        if metric not in plain and not clinical:
            raise ConfigError(
                f"config key 'training.early_stopping.metric': expected val/total, val/weighted, val/<component> "
                f"({', '.join(COMPONENTS)}), their train/ forms, or val/patient/..., found {metric!r}"
            )
        if clinical and not self.clinical_validation:
            raise ConfigError(
                f"config key 'training.early_stopping.metric': {metric!r} is scored only with "
                "training.clinical_validation=true, found false"
            )
        if self.early_stopping.enabled and not metric.startswith("val/"):
            raise ConfigError(
                f"config key 'training.early_stopping.metric': expected a val/ metric when early stopping is "
                f"enabled (it is checked at each validation), found {metric!r}"
            )


@dataclass
class WandbConfig:
    project: str = spec("abr-hierarchical-diffusion")
    entity: str = spec("", help="team or user; empty: your default")
    tags: list[str] = spec([])
    group: str = spec("", help="runs of one -m sweep share a group automatically")
    mode: Literal["offline", "online", "disabled"] = spec("offline")
    init_timeout: float = spec(30.0, gt=0.0, help="seconds to wait for an online init before going offline")


@dataclass
class HealthConfig:
    enabled: bool = spec(True, help="run the health monitor (alerts in the console, TensorBoard, metrics.jsonl)")
    spike_factor: float = spec(5.0, gt=1.0, help="window max objective above factor x median of recent windows")
    grad_explosion: float = spec(1e3, gt=0.0, help="pre-clip gradient norm that raises an alert")
    stall_window: int = spec(200, ge=2, help="optimizer steps compared for stalled components")
    stall_rel_change: float = spec(0.01, gt=0.0, help="a component changing less than this has stalled")
    improve_rel_change: float = spec(0.2, gt=0.0, help="... while another improved more than this")
    weight_clamp_margin: float = spec(0.05, ge=0.0, help="weights within this share of the min..max clamp range alert")
    dominance_share: float = spec(0.9, gt=0.0, le=1.0, help="one weighted component above this share")
    oscillation_window: int = spec(20, ge=4, help="weight records checked for sign-flipping changes")
    cooldown_steps: int = spec(200, ge=1, help="optimizer steps before the same alert may fire again")


@dataclass
class LoggingConfig:
    log_dir: str = spec("logs", help="runs are written to <log_dir>/<experiment>")
    use_tensorboard: bool = spec(True)
    use_wandb: bool = spec(False)
    wandb: WandbConfig = spec(WandbConfig())
    health: HealthConfig = spec(HealthConfig())
    figures: bool = spec(True, help="waveform figures at each validation")

    def __post_init__(self) -> None:
        if not self.log_dir.strip():  # '' would write every run into the current directory
            raise ConfigError(f"config key 'logging.log_dir': expected a folder path, found {self.log_dir!r}")


@dataclass
class Config:
    seed: int = spec(0, ge=0, le=MAX_SEED, help="one seed drives data order, init, noise and dropout")
    device: str = spec("auto", help="auto, cpu, cuda, cuda:N")
    data: DataConfig = spec(DataConfig())
    model: ModelConfig = spec(ModelConfig())
    diffusion: DiffusionConfig = spec(DiffusionConfig())
    loss: LossConfig = spec(LossConfig())
    training: TrainingConfig = spec(TrainingConfig())
    logging: LoggingConfig = spec(LoggingConfig())
    series: SeriesConfig = spec(SeriesConfig())

    def __post_init__(self) -> None:
        # Options that pass their own section's checks but cannot work with the rest of the config
        # are refused here, before a run directory exists (not at step 1).
        if not DEVICE_NAME.fullmatch(self.device):  # '' used to mean auto; the device itself is checked at start
            raise ConfigError(f"config key 'device': expected auto, cpu, cuda or cuda:N, found {self.device!r}")
        if self.loss.threshold_loss == "gaussian_nll":
            raise ConfigError(
                "config key 'loss.threshold_loss': expected 'huber', found 'gaussian_nll', which needs a variance "
                "head (outputs['threshold_logvar']) that this network does not have yet"
            )
        if self.model.peak_head == "map" and self.data.normalization != "global":
            raise ConfigError(
                "config key 'model.peak_head': expected 'pooled' with data.normalization "
                f"'{self.data.normalization}': the wave map head reads amplitudes in µV off the input, which "
                "per-sample z-scores cannot give back (use data.normalization: global)"
            )
        if self.training.noise_catch and self.loss.head_input != "clean":
            raise ConfigError(
                "config key 'training.noise_catch': expected loss.head_input 'clean', found "
                f"'{self.loss.head_input}': catch rows replace the heads' clean half"
            )
        self._refuse_noise_options_without_noise()
        if self.series.waterfall and self.model.peak_head != "map":
            raise ConfigError(
                "config key 'series.waterfall': expected false with model.peak_head 'pooled' (it reads the wave map "
                "head's candidate peaks)"
            )
        if self.series.extra_patients and self.data.source != "synthetic":
            raise ConfigError(
                "config key 'series.extra_patients': expected 0 with data.source 'file' (more patients come from the "
                "built-in generator only)"
            )
        if self.model.blind_static and self.loss.head_input != "clean":
            raise ConfigError(
                "config key 'model.blind_static': expected loss.head_input 'clean', found "
                f"'{self.loss.head_input}': the blind pass is the heads' clean pass at t = 0"
            )
        if self.model.label_conditioning and self.loss.head_input != "clean":
            raise ConfigError(
                "config key 'model.label_conditioning': expected loss.head_input 'clean', found "
                f"'{self.loss.head_input}': the heads must answer from the pass at t = 0, which never reads the labels "
                "(heads reading x_t would see their own labels)"
            )

    def _refuse_noise_options_without_noise(self) -> None:
        """An option that shapes noise rows or noise series is refused where there are none to shape."""
        t, s = self.training, self.series
        for key, on, needed, why in (
            ("training.catch_surrogates", t.catch_surrogates, t.noise_catch,
             "expected 0 with training.noise_catch 0 (it is a share of the catch rows)"),
            ("training.catch_band", t.catch_band, t.noise_catch,
             "expected false with training.noise_catch 0 (it shapes the catch rows' noise)"),
            ("series.noise_band", s.noise_band, s.noise_series or s.val_noise_series,
             "expected 0 with series.noise_series and series.val_noise_series 0 (it shapes the noise series' noise)"),
            ("series.noise_surrogates", s.noise_surrogates, s.noise_series,
             "expected 0 with series.noise_series 0 (it is a share of the noise series' recordings)"),
        ):
            if on and not needed:
                raise ConfigError(f"config key '{key}': {why}")


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a config file, resolving ``extends: other.yaml`` (relative to this file) recursively:
    the base is read first and this file's keys are merged over it, section by section."""
    path = Path(path)
    data = read_yaml(path)
    if "extends" not in data:
        return data
    base = data.pop("extends")
    if not isinstance(base, str) or not base.strip():  # an empty value used to drop the base silently
        raise ConfigError(f"config file '{path}': key 'extends': expected a file path, found {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in _seen or base_path == path.resolve():
        raise ConfigError(f"config file '{path}': key 'extends': '{base}' extends itself in a cycle")
    return deep_merge(read_config_file(base_path, (*_seen, path.resolve())), data, f"config file '{path}'")


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read YAML (or start from defaults when ``path`` is None), apply ``key=value`` overrides,
    and validate the whole tree. Errors are :class:`ConfigError` with one line naming the key."""
    data = read_config_file(path) if path is not None else {}
    given: dict[str, str] = {}
    for text in overrides:
        keys, value = parse_override(text)
        dotted = ".".join(k.strip() for k in keys)
        if dotted in given:  # the last one used to win, where a key written twice in a file is refused
            raise ConfigError(f"override '{dotted}': given twice ('{given[dotted]}' and '{text}'); "
                              f"expected each key once")
        given[dotted] = text
        apply_override(data, keys, value)
    try:
        return from_dict(Config, data)
    except ConfigError as exc:
        # where it came from, once a file is involved (without one, every key came from the command line)
        raise ConfigError(f"{exc} [{error_source(str(exc), path, overrides)}]" if path else str(exc)) from None


def error_source(message: str, path: str | Path, overrides: Sequence[str]) -> str:
    """Where the key a config error names was set: the last override that sets it (or a key under or
    above it), else the config file. ``traning.epochs=1`` typed on the command line used to be blamed
    on the file."""
    named = re.match(r"config key '([^']*)'", message)
    key = named.group(1) if named else None
    for text in reversed(overrides):
        dotted = ".".join(parse_override(text)[0])
        if key and (dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + ".")):
            return f"command line: {text}"
    return str(path)


def config_to_dict(cfg: Config) -> dict:
    return to_dict(cfg)
