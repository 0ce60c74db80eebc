use super::*;

#[test]
fn ui_names_and_aliases_select_schedulers() {
    for (name, expected) in [
        ("Euler", "Euler"),
        ("euler_ancestral", "Euler a"),
        ("EULER A", "Euler a"),
        ("ddim", "DDIM"),
        ("DPM++ 2M", "DPM++ 2M"),
        ("dpmpp_2m", "DPM++ 2M"),
        ("dpmpp_2m_karras", "DPM++ 2M Karras"),
        ("DPM++ 2M Karras", "DPM++ 2M Karras"),
        ("DPMSolverMultistepScheduler", "DPM++ 2M"),
        ("uni_pc", "UniPC"),
        ("UniPCMultistepScheduler", "UniPC"),
    ] {
        assert_eq!(find(name).unwrap().name, expected, "{name}");
    }
}

#[test]
fn unknown_name_lists_the_known_ones() {
    let err = find("LMS Karras").err().unwrap().to_string();
    assert!(err.contains("\"LMS Karras\""), "{err}");
    assert!(err.contains("Euler a") && err.contains("DDIM"), "{err}");
}

#[test]
fn names_are_unique_across_the_registry() {
    let mut seen = std::collections::HashSet::new();
    for spec in specs() {
        for name in std::iter::once(&spec.name).chain(spec.aliases) {
            assert!(seen.insert(normalize(name)), "{name} registered twice");
        }
    }
}

#[test]
fn zero_and_too_many_steps_are_refused() {
    let config = SchedulerConfig::default();
    for name in names() {
        for steps in [0, 1001] {
            let err = build(name, &config, steps).err().unwrap();
            assert!(matches!(err, SchedulerError::Steps { .. }), "{name}: {err}");
        }
    }
}

#[test]
fn flow_models_are_refused_with_the_scheduler_named() {
    let config = SchedulerConfig {
        prediction_type: PredictionType::Flow,
        ..SchedulerConfig::default()
    };
    for name in noise_schedulers() {
        let err = build(name, &config, 4).err().unwrap();
        assert!(
            matches!(err, SchedulerError::Prediction { scheduler, .. } if scheduler == name),
            "{name}: {err}"
        );
    }
}

#[test]
fn diffusers_config_parses_and_bad_fields_are_named() {
    let json = r#"{"_class_name": "PNDMScheduler", "beta_schedule": "scaled_linear", "steps_offset": 1,
        "prediction_type": "v_prediction", "timestep_spacing": "trailing", "skip_prk_steps": true}"#;
    let config = SchedulerConfig::from_json(json).unwrap();
    assert_eq!(config.prediction_type, PredictionType::VPrediction);
    assert_eq!(config.timestep_spacing, Some(TimestepSpacing::Trailing));
    assert_eq!(config.steps_offset, 1);
    let err = SchedulerConfig::from_json(r#"{"beta_schedule": "cosine"}"#)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cosine"), "{err}");
}

#[test]
fn ancestral_step_without_noise_is_an_error() {
    let config = SchedulerConfig::default();
    let mut scheduler = build("Euler a", &config, 4).unwrap();
    assert!(scheduler.needs_noise());
    let sample = Tensor::ones((1, 4, 2, 2), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let err = scheduler.step(&sample, 0, &sample, None).err().unwrap();
    assert!(matches!(err, SchedulerError::MissingNoise("Euler a")), "{err}");
}

#[test]
fn step_past_the_schedule_is_an_error() {
    let config = SchedulerConfig::default();
    let sample = Tensor::ones((1, 4, 2, 2), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    for name in noise_schedulers() {
        let mut scheduler = build(name, &config, 4).unwrap();
        for step in 0..4 {
            scheduler.step(&sample, step, &sample, Some(&sample)).unwrap();
        }
        let err = scheduler.step(&sample, 4, &sample, Some(&sample)).err().unwrap();
        assert!(
            matches!(err, SchedulerError::StepIndex { step: 4, len: 4 }),
            "{name}: {err}"
        );
    }
}

/// The schedulers of epsilon and v-prediction models: all but the flow-matching ones.
fn noise_schedulers() -> impl Iterator<Item = &'static str> {
    names().into_iter().filter(|name| !name.starts_with("Flow"))
}
