use super::*;

fn defaults() -> Defaults {
    Defaults {
        size: (512, 512),
        steps: 20,
        cfg_scale: 7.0,
        scheduler: "Euler a".into(),
        clip_skip: 1,
    }
}

fn field_of(request: GenerationRequest) -> &'static str {
    match request.validate(&defaults(), 2) {
        Err(SdError::Invalid { field, .. }) => field,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn defaults_fill_what_the_request_leaves_out() {
    let valid = GenerationRequest::default().validate(&defaults(), 2).unwrap();
    assert_eq!((valid.width, valid.height, valid.steps), (512, 512, 20));
    assert_eq!(valid.scheduler, "Euler a");
    assert_eq!((valid.cfg_scale, valid.batch_size, valid.clip_skip), (7.0, 1, 1));
}

#[test]
fn each_bad_field_is_named() {
    let with = |f: fn(&mut GenerationRequest)| {
        let mut r = GenerationRequest::default();
        f(&mut r);
        r
    };
    assert_eq!(field_of(with(|r| r.width = Some(500))), "width");
    assert_eq!(field_of(with(|r| r.height = Some(4096))), "height");
    assert_eq!(field_of(with(|r| r.steps = Some(0))), "steps");
    assert_eq!(field_of(with(|r| r.steps = Some(151))), "steps");
    assert_eq!(field_of(with(|r| r.cfg_scale = Some(-1.0))), "cfg_scale");
    assert_eq!(field_of(with(|r| r.batch_size = Some(0))), "batch_size");
    assert_eq!(field_of(with(|r| r.clip_skip = Some(3))), "clip_skip");
    assert_eq!(field_of(with(|r| r.scheduler = Some("nope".into()))), "scheduler");
    assert_eq!(field_of(with(|r| r.strength = Some(1.5))), "strength");
    assert_eq!(
        field_of(with(|r| r.mask = Some(GrayImage::new(512, 512)))),
        "mask"
    );
}

#[test]
fn images_must_match_the_output_size() {
    let mut r = GenerationRequest {
        init_image: Some(RgbImage::new(64, 64)),
        ..Default::default()
    };
    let valid = r.clone().validate(&defaults(), 2).unwrap();
    assert_eq!((valid.width, valid.height, valid.strength), (64, 64, 0.75));
    r.width = Some(128);
    assert_eq!(field_of(r.clone()), "init_image");
    r.width = None;
    r.mask = Some(GrayImage::new(64, 72));
    assert_eq!(field_of(r), "mask");
}
