"""Every config key is exercised by a test that would fail if the key were ignored (issue 18).

``COVERAGE`` maps each leaf key of the schema (training.config.Config and the sections it nests) to
the test(s) that show its effect: a behaviour that changes with the key's value, or a refusal of a
value that cannot work. A key that takes its default silently fails those tests. A new key without
an entry here fails :func:`test_every_config_key_names_a_test`: write the test, then name it here.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

from tests.training.test_config import _leaf_keys
from training.config import Config

ROOT = Path(__file__).resolve().parents[2]

T = "tests/training/test_trainer_options.py::"
DS = "tests/data/test_dataset.py::"
MC = "tests/models/test_config.py::"
DI = "tests/training/test_diffusion.py::"
LO = "tests/training/test_losses.py::"
ST = "tests/training/balancers/test_strategies.py::"
OP = "tests/training/balancers/test_options.py::"
FW = "tests/training/balancers/test_framework.py::"
ES = "tests/training/callbacks/test_checkpoint.py::"
NAN = "tests/reliability/test_nan.py::"
STOP = T + "test_early_stopping_stops_after_patience_validations_without_improvement"
HE = "tests/training/callbacks/test_health.py::"
WB = "tests/training/callbacks/test_wandb.py::"
DC = "tests/training/callbacks/test_default_callbacks.py::test_each_switch_adds_or_leaves_out_its_callback"
SE = "tests/training/test_series.py::"

COVERAGE: dict[str, str | tuple[str, ...]] = {
    "seed": T + "test_seed_sets_the_initial_weights",
    "device": T + "test_device_is_resolved_from_the_config",
    # data
    "data.source": DS + "test_file_source_strict_and_lenient",
    "data.path": DS + "test_file_source_strict_and_lenient",
    "data.synthetic.patients": DS + "test_synthetic_patients_and_seed_make_the_cohort",
    "data.synthetic.seed": DS + "test_synthetic_patients_and_seed_make_the_cohort",
    "data.synthetic.domain": (DS + "test_synthetic_domain_and_catch_fraction_make_the_cohort",
                              "tests/data/test_domain.py::test_wide_keeps_the_truth_and_changes_the_recording"),
    "data.synthetic.catch_fraction": (
        DS + "test_synthetic_domain_and_catch_fraction_make_the_cohort",
        "tests/data/test_domain.py::test_catch_sessions_are_noise_at_every_level_labelled_no_response"),
    "data.split": DS + "test_split_shares_are_the_shares_of_patients",
    "data.normalization": DS + "test_normalization_per_sample_z_scores_each_training_signal",
    "data.strict": DS + "test_file_source_strict_and_lenient",
    "data.split_seed": DS + "test_deterministic",
    "data.balanced_sampler": (DS + "test_options_sample_weights_and_class_weights",
                              T + "test_balanced_sampler_draws_the_classes_evenly"),
    "data.num_workers": T + "test_num_workers_reaches_the_data_loaders",
    # model (tests/models/test_config.py keeps its own per-section check too)
    "model.base_channels": MC + "test_size_keys_change_the_network",
    "model.channel_mults": MC + "test_size_keys_change_the_network",
    "model.down_factors": MC + "test_size_keys_change_the_network",
    "model.blocks_per_level": MC + "test_size_keys_change_the_network",
    "model.d_state": MC + "test_size_keys_change_the_network",
    "model.bidirectional": MC + "test_bidirectional_network",
    "model.bottleneck_attention": MC + "test_size_keys_change_the_network",
    "model.attn_heads": MC + "test_attn_heads_changes_the_attention",
    "model.mlp_ratio": MC + "test_size_keys_change_the_network",
    "model.cond_dim": MC + "test_size_keys_change_the_network",
    "model.head_dim": MC + "test_size_keys_change_the_network",
    "model.dropout": MC + "test_dropout_is_active_in_training_mode_only",
    "model.cond_drop_prob": ("tests/models/test_network.py::test_cond_drop_prob_applies_in_training_mode_only",
                             T + "test_cond_drop_prob_drops_the_condition_of_the_noisy_rows_in_training"),
    "model.peak_head": ("tests/models/test_wave_head.py::test_peak_head_key_chooses_the_head",
                        "tests/models/test_wave_head.py::test_map_head_with_per_sample_normalization_is_refused"),
    "model.blind_static": ("tests/models/test_network.py::test_blind_static_answers_at_t0_whatever_the_stated_level",
                           "tests/training/test_config.py::test_blind_static_needs_the_clean_head_pass"),
    "model.label_conditioning": (
        "tests/models/test_conditioning.py::test_the_label_condition_never_reaches_the_answer_pass",
        "tests/models/test_conditioning.py::test_off_by_default_builds_the_network_as_before",
        T + "test_label_conditioning_and_its_drop_probabilities_reach_the_network",
        "tests/training/test_config.py::test_label_conditioning_is_off_by_default_and_needs_the_clean_head_pass"),
    "model.type_drop_prob": (T + "test_label_conditioning_and_its_drop_probabilities_reach_the_network",
                             "tests/training/test_objective.py::test_label_drops_honour_their_probabilities_independently"),
    "model.threshold_drop_prob": (
        T + "test_label_conditioning_and_its_drop_probabilities_reach_the_network",
        "tests/training/test_objective.py::test_label_drops_honour_their_probabilities_independently"),
    "model.wave_conditioning": (
        "tests/models/test_conditioning.py::test_the_wave_condition_moves_the_denoiser_and_never_the_answer_pass",
        "tests/models/test_conditioning.py::test_wave_conditioning_needs_label_conditioning",
        T + "test_wave_conditioning_and_its_drop_probability_reach_the_network"),
    "model.wave_template": (
        "tests/models/test_conditioning.py::"
        "test_the_wave_template_is_a_bump_at_the_requested_latency_and_never_reaches_the_answer_pass",
        "tests/models/test_conditioning.py::test_wave_template_needs_wave_conditioning"),
    "model.microphonic_conditioning": (
        "tests/models/test_conditioning.py::test_the_microphonic_column_moves_the_denoiser_and_never_the_answer_pass",
        "tests/models/test_conditioning.py::test_microphonic_conditioning_needs_wave_conditioning",
        "tests/training/test_objective.py::test_the_wave_condition_carries_the_microphonic_index_when_asked",
        "tests/evaluation/test_wave_profile.py::test_the_microphonic_index_is_drawn_per_ear_from_its_quantiles"),
    "model.noise_conditioning": (
        "tests/models/test_conditioning.py::test_the_noise_column_moves_the_denoiser_and_never_the_answer_pass",
        "tests/models/test_conditioning.py::test_noise_conditioning_needs_wave_conditioning",
        "tests/training/test_objective.py::test_the_wave_condition_carries_the_residual_noise_in_uv_when_asked",
        "tests/evaluation/test_wave_profile.py::"
        "test_the_noise_level_is_drawn_per_ear_as_alike_within_a_series_as_in_training",
        "tests/evaluation/test_generate.py::test_a_microphonic_and_noise_run_draws_both_beside_wave_v"),
    "model.wave_drop_prob": (
        T + "test_wave_conditioning_and_its_drop_probability_reach_the_network",
        "tests/training/test_objective.py::test_wave_condition_carries_the_batch_wave_v_and_drops_to_its_null"),
    "model.ssm_lr": "tests/models/test_optim.py::test_groups_cover_every_parameter_once",
    # diffusion
    "diffusion.timesteps": DI + "test_cosine_alpha_bar_endpoints",
    "diffusion.schedule": DI + "test_linear_schedule",
    "diffusion.cosine_s": DI + "test_cosine_s_is_read",
    "diffusion.beta_start": DI + "test_linear_schedule",
    "diffusion.beta_end": DI + "test_linear_schedule",
    "diffusion.prediction": DI + "test_min_snr_weight_closed_form",
    "diffusion.min_snr_gamma": DI + "test_gamma_zero_is_plain_mse",
    "diffusion.sampler": ("tests/evaluation/test_generate.py::test_cli_uses_run_defaults_and_flags",
                          DI + "test_config_keys_validated"),
    "diffusion.sampling_steps": DI + "test_config_keys_validated",
    "diffusion.eta": DI + "test_config_eta_is_the_sampling_default",
    "diffusion.timestep_spacing": "tests/training/test_samplers.py::test_config_timestep_spacing_is_used",
    "diffusion.guidance": "tests/evaluation/test_generate.py::test_cli_uses_run_defaults_and_flags",
    "diffusion.clip_x0": DI + "test_config_keys_validated",
    "diffusion.lowpass_hz": DI + "test_lowpass_hz_filters_the_samples_after_the_last_step",
    "diffusion.guidance_sigma_min": DI + "test_guidance_sigma_min_guides_only_the_steps_above_it",
    # loss
    "loss.class_loss": LO + "test_focal_keeps_class_weights_and_reduces_to_weighted_ce_at_gamma_zero",
    "loss.focal_gamma": LO + "test_focal_gamma_is_read",
    "loss.class_weights": (LO + "test_class_weights_none_ignores_the_tensor",
                           DS + "test_options_sample_weights_and_class_weights"),
    "loss.huber_delta": LO + "test_components_match_their_formulas",
    "loss.threshold_loss": "tests/training/test_config.py::"
                           "test_an_option_the_network_cannot_serve_is_refused_when_the_config_is_read",
    "loss.head_input": T + "test_head_input_clean_shows_the_heads_the_recorded_signal",
    "loss.signal_class_weights": ("tests/training/test_objective.py::"
                                  "test_signal_class_weights_weight_each_recording_by_its_type",
                                  DI + "test_signal_loss_sample_weights_are_a_weighted_mean"),
    "loss.balancer.strategy": FW + "test_each_strategy_declares_its_registry_name",
    "loss.balancer.weights": (ST + "test_fixed_is_the_weighted_sum",
                              OP + "test_dwa_config_weights_are_a_constant_prior",
                              OP + "test_grouping_honours_the_configured_weights",
                              OP + "test_jacobian_aggregators_that_take_no_weights_refuse_unequal_ones"),
    "loss.balancer.scale_norm.statistic": ST + "test_scale_norm_batch_statistic_keeps_the_gradient",
    "loss.balancer.scale_norm.warmup_steps": ST + "test_scale_norm_warmup_average_then_momentum_and_gradient_kept",
    "loss.balancer.scale_norm.momentum": ST + "test_scale_norm_warmup_average_then_momentum_and_gradient_kept",
    "loss.balancer.scale_norm.sqrt_output_correction": ST + "test_scale_norm_sqrt_output_correction",
    "loss.balancer.scale_norm.output_elements": ST + "test_scale_norm_sqrt_output_correction",
    "loss.balancer.scale_norm.eps": OP + "test_each_option_changes_the_weights",
    "loss.balancer.gradnorm.alpha": OP + "test_each_option_changes_the_weights",
    "loss.balancer.gradnorm.lr": OP + "test_each_option_changes_the_weights",
    "loss.balancer.gradnorm.layer": OP + "test_gradnorm_layer_chooses_the_parameters_it_measures",
    "loss.balancer.gradnorm.min_weight": OP + "test_each_option_changes_the_weights",
    "loss.balancer.uncertainty.init_log_var": ST + "test_uncertainty_init_and_trainable_parameters",
    "loss.balancer.uncertainty.regularizer": ST + "test_uncertainty_log1p_is_the_papers_regularizer",
    "loss.balancer.dwa.temperature": OP + "test_each_option_changes_the_weights",
    "loss.balancer.dwa.normalize": "tests/training/balancers/test_symptom.py::test_loss_scale_gap",
    "loss.balancer.inverse_loss.ema_alpha": ST + "test_equal_init_ema_and_ema_follow_the_moving_average",
    "loss.balancer.inverse_loss.update_frequency": ST + "test_equal_init_ema_and_ema_follow_the_moving_average",
    "loss.balancer.inverse_loss.min_weight": ST + "test_equal_init_ema_and_ema_follow_the_moving_average",
    "loss.balancer.inverse_loss.max_weight": ST + "test_equal_init_ema_and_ema_follow_the_moving_average",
    "loss.balancer.inverse_loss.eps": OP + "test_each_option_changes_the_weights",
    "loss.balancer.famo.lr": ST + "test_famo_weights_and_logit_update_follow_the_paper",
    "loss.balancer.famo.gamma": OP + "test_each_option_changes_the_weights",
    "loss.balancer.famo.eps": OP + "test_each_option_changes_the_weights",
    "loss.balancer.jacobian.aggregator": OP + "test_jacobian_aggregator_is_the_one_configured",
    "loss.balancer.stch.mu": OP + "test_each_option_changes_the_weights",
    "loss.balancer.stch.inputs": (OP + "test_each_option_changes_the_weights", ST + "test_stch_inputs_raw_and_ratio"),
    "loss.balancer.jacobian.normalize": ST + "test_jacobian_normalize_initial_aggregates_loss_ratios",
    "loss.balancer.jacobian.update_every": "tests/training/balancers/test_jacobian_engines.py::"
                                           "test_update_every_applies_the_last_weights_in_between_without_a_jacobian",
    "loss.balancer.jacobian.engine": "tests/training/balancers/test_jacobian_engines.py::"
                                     "test_engine_auto_is_gramian_where_it_applies_and_gramian_is_refused_elsewhere",
    "loss.balancer.grouping.enabled": FW + "test_grouping_fixed_in_fixed_reproduces_fixed_and_reports_per_head",
    "loss.balancer.grouping.groups": OP + "test_grouping_honours_the_configured_weights",
    "loss.balancer.grouping.inner": FW + "test_grouping_effective_weight_is_outer_times_inner",
    # training
    "training.epochs": T + "test_val_every_validates_every_nth_epoch_and_the_last",
    "training.batch_size": T + "test_batch_size_is_the_batch_and_sets_the_steps",
    "training.grad_accum_steps": T + "test_grad_accum_steps_2_equals_one_step_at_twice_the_batch",
    "training.lr": T + "test_lr_warmup_min_lr_ratio_and_weight_decay_drive_the_optimizer",
    "training.weight_decay": T + "test_lr_warmup_min_lr_ratio_and_weight_decay_drive_the_optimizer",
    "training.warmup_steps": T + "test_lr_warmup_min_lr_ratio_and_weight_decay_drive_the_optimizer",
    "training.min_lr_ratio": T + "test_lr_warmup_min_lr_ratio_and_weight_decay_drive_the_optimizer",
    "training.grad_clip": T + "test_grad_clip_bounds_the_gradient_the_optimizer_applies",
    "training.ema_decay": T + "test_ema_decay_sets_the_averaged_weights",
    "training.precision": T + "test_precision_sets_autocast",
    "training.log_frequency": "tests/training/callbacks/test_metrics.py::"
                              "test_one_line_every_log_frequency_steps_with_window_means",
    "training.val_every": T + "test_val_every_validates_every_nth_epoch_and_the_last",
    "training.checkpoint_every_steps": "tests/reliability/test_disk.py::"
                                       "test_disk_full_during_a_checkpoint_keeps_the_previous_one",
    "training.early_stopping.enabled": (ES + "test_enabled_false_never_stops", STOP),
    "training.early_stopping.metric": (ES + "test_metric_is_the_one_watched",
                                       "tests/training/test_config.py::"
                                       "test_an_early_stopping_metric_no_summary_holds_is_refused"),
    "training.early_stopping.mode": ES + "test_mode_says_which_way_is_better",
    "training.early_stopping.patience": (ES + "test_patience_counts_validations_without_improvement", STOP),
    "training.early_stopping.min_delta": ES + "test_min_delta_is_the_smallest_improvement_that_counts",
    "training.nan_policy": NAN + "test_raise_policy_stops_at_the_first",
    "training.max_consecutive_nan": NAN + "test_stops_after_n_in_a_row_with_the_checkpoint_intact",
    "training.clinical_validation": (T + "test_val_every_validates_every_nth_epoch_and_the_last",
                                     SE + "test_a_run_with_the_series_stage"),
    "training.noise_catch": "tests/training/test_augment.py::test_the_objective_replaces_only_the_heads_half",
    "training.catch_surrogates": "tests/training/test_augment.py::"
                                "test_the_trainer_passes_catch_surrogates_to_the_objective",
    "training.catch_band": "tests/training/test_augment.py::test_catch_band_reaches_the_catch_rows_of_the_objective",
    "training.intensity_dropout": "tests/training/test_augment.py::"
                                  "test_the_trainer_perturbs_the_stated_intensity_of_training_batches",
    "training.intensity_jitter_db": "tests/training/test_augment.py::"
                                    "test_the_trainer_perturbs_the_stated_intensity_of_training_batches",
    # logging
    "logging.log_dir": "tests/test_train_cli.py::test_existing_run_is_never_overwritten_silently",
    "logging.use_tensorboard": DC,
    "logging.use_wandb": DC,
    "logging.wandb.project": WB + "test_project_entity_group_and_tags_reach_wandb_init",
    "logging.wandb.entity": WB + "test_project_entity_group_and_tags_reach_wandb_init",
    "logging.wandb.tags": WB + "test_project_entity_group_and_tags_reach_wandb_init",
    "logging.wandb.group": WB + "test_project_entity_group_and_tags_reach_wandb_init",
    "logging.wandb.mode": WB + "test_disabled_mode_writes_nothing",
    "logging.wandb.init_timeout": WB + "test_online_failure_warns_once_and_goes_offline",
    "logging.health.enabled": DC,
    "logging.health.spike_factor": HE + "test_spike_factor_sets_what_counts_as_a_spike",
    "logging.health.grad_explosion": HE + "test_gradient_explosion",
    "logging.health.stall_window": HE + "test_stall_needs_a_flat_component",
    "logging.health.stall_rel_change": HE + "test_stall_needs_a_flat_component",
    "logging.health.improve_rel_change": HE + "test_stalled_component_seed_001",
    "logging.health.weight_clamp_margin": HE + "test_weight_clamp_margin_sets_how_near_a_clamp_alerts",
    "logging.health.dominance_share": HE + "test_dominant_component_and_cooldown",
    "logging.health.oscillation_window": HE + "test_weight_oscillation",
    "logging.health.cooldown_steps": HE + "test_dominant_component_and_cooldown",
    "logging.figures": DC,
    # series
    "series.enabled": SE + "test_series_enabled_runs_the_stage_after_training",
    "series.extra_patients": "tests/training/test_series_training_parts.py::"
                             "test_extra_patients_come_from_the_runs_generator_at_another_seed",
    "series.noise_series": "tests/training/test_series_training_parts.py::"
                           "test_noise_copies_replace_every_recording_of_a_share_of_the_series",
    "series.thinned_series": "tests/training/test_series_training_parts.py::"
                             "test_thinned_copies_keep_a_few_levels_one_recording_each",
    "series.val_noise_series": "tests/training/test_series_training_parts.py::"
                               "test_val_noise_series_join_the_score_the_best_epoch_is_kept_by",
    "series.noise_surrogates": "tests/training/test_series_training_parts.py::"
                               "test_noise_surrogates_are_series_of_their_recordings_surrogates",
    "series.noise_band": "tests/training/test_series_training_parts.py::"
                         "test_noise_band_puts_the_noise_series_in_a_recordings_band",
    "series.coherence": "tests/training/test_series_training_parts.py::"
                        "test_series_coherence_appends_each_recordings_level_coherence",
    "series.waterfall": "tests/training/test_series_training_parts.py::"
                        "test_series_waterfall_appends_the_waves_read_down_the_waterfall",
    "series.microphonic": "tests/training/test_series_training_parts.py::"
                          "test_series_microphonic_appends_each_recordings_microphonic_index",
    **{f"series.{k}": SE + "test_each_series_key_changes_the_fit"
       for k in ("width", "layers", "heads", "dropout", "epochs", "batch_size", "lr", "weight_decay",
                 "drop_recordings", "threshold_sigma", "val_every")},
}


def _refs(key: str) -> tuple[str, ...]:
    value = COVERAGE[key]
    return (value,) if isinstance(value, str) else value


@cache
def _tests_in(path: str) -> dict[str, str]:
    """Module-level test functions of ``path`` -> their source with decorators."""
    text = (ROOT / path).read_text(encoding="utf-8")
    lines = text.splitlines()
    out = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            out[node.name] = "\n".join(lines[start - 1 : node.end_lineno])
    return out


def test_every_config_key_names_a_test():
    keys = [dotted for dotted, _ in _leaf_keys(Config)]
    missing = [k for k in keys if k not in COVERAGE]
    stale = sorted(set(COVERAGE) - set(keys))
    assert not missing, (f"config keys without a test: {missing}; write a test that fails when the key is ignored "
                         f"and name it in COVERAGE ({Path(__file__).name})")
    assert not stale, f"COVERAGE names keys the schema no longer has: {stale}"


@pytest.mark.parametrize("key", sorted(COVERAGE))
def test_each_named_test_exists_and_mentions_its_key(key):
    leaf = key.rsplit(".", 1)[-1]
    for ref in _refs(key):
        path, _, name = ref.partition("::")
        assert (ROOT / path).is_file(), f"{key}: {path} does not exist"
        tests = _tests_in(path)
        assert name in tests, f"{key}: {path} has no test function {name}"
        module = (ROOT / path).read_text(encoding="utf-8")
        assert leaf in tests[name] or leaf in module, f"{key}: neither {ref} nor its module mentions '{leaf}'"
