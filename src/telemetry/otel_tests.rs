use super::*;

fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

fn config(endpoint: Option<&str>, ratio: Option<f64>) -> ExportSettings {
    ExportSettings {
        otlp_endpoint: endpoint.map(str::to_string),
        sample_ratio: ratio,
    }
}

#[test]
fn the_environment_wins_over_the_file_and_nothing_means_off() {
    let none = config(None, None);
    assert_eq!(endpoint(&env_of(&[]), &none), None);
    let file = config(Some("http://collector:4318/"), None);
    assert_eq!(
        endpoint(&env_of(&[]), &file),
        Some(Endpoint::Url("http://collector:4318/v1/traces".into()))
    );
    for var in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ] {
        let env = move |name: &str| (name == var).then(|| "http://env:4318".to_string());
        assert_eq!(endpoint(&env, &file), Some(Endpoint::FromEnvironment));
        assert_eq!(endpoint(&env, &none), Some(Endpoint::FromEnvironment));
    }
    assert!(disabled(&env_of(&[("OTEL_SDK_DISABLED", "TRUE")])));
    assert!(!disabled(&env_of(&[("OTEL_SDK_DISABLED", "false")])));
    assert!(!disabled(&env_of(&[])));
}

#[test]
fn the_service_name_comes_from_either_variable() {
    assert_eq!(service_name(&env_of(&[])), None);
    let named = env_of(&[("OTEL_SERVICE_NAME", "relay-a")]);
    assert_eq!(service_name(&named).as_deref(), Some("relay-a"));
    let attrs = env_of(&[(
        "OTEL_RESOURCE_ATTRIBUTES",
        "team=mail, service.name=relay-b",
    )]);
    assert_eq!(service_name(&attrs).as_deref(), Some("relay-b"));
    let other = env_of(&[("OTEL_RESOURCE_ATTRIBUTES", "team=mail")]);
    assert_eq!(service_name(&other), None);
}

#[test]
fn the_file_ratio_is_parent_based_and_the_variable_wins() {
    assert!(sampler(&env_of(&[]), &config(None, None)).is_none());
    let ratio = sampler(&env_of(&[]), &config(None, Some(0.25))).expect("a sampler");
    assert!(format!("{ratio:?}").contains("ParentBased"), "{ratio:?}");
    let env = env_of(&[("OTEL_TRACES_SAMPLER", "always_off")]);
    assert!(sampler(&env, &config(None, Some(0.25))).is_none());
}

#[test]
fn a_traceparent_and_a_remote_context_name_the_same_span() {
    let parent = TraceParent::new_root();
    let context = remote_context(&parent);
    let span = context.span();
    let span = span.span_context();
    assert!(span.is_remote() && span.is_sampled());
    let back = TraceParent::from_parts(
        span.trace_id().to_bytes(),
        span.span_id().to_bytes(),
        span.is_sampled(),
    );
    assert_eq!(back, Some(parent));
    assert_eq!(TraceParent::from_parts([0; 16], [1; 8], true), None);
}

#[test]
fn without_the_layer_a_span_gives_no_context() {
    let span = tracing::info_span!(target: TARGET, "smtp.accept");
    assert_eq!(trace_parent(&span), None);
}

#[test]
fn reply_codes_and_domains() {
    assert_eq!(reply_code("451 4.3.0 try later"), Some(451));
    assert_eq!(reply_code("250"), Some(250));
    assert_eq!(reply_code("250-first"), Some(250));
    assert_eq!(reply_code("cannot connect"), None);
    assert_eq!(reply_code("4511"), None);
    let found = ["Example.ORG", "example.org", "b.example"];
    assert_eq!(domains(found.into_iter(), 10), "example.org,b.example");
    assert_eq!(domains(found.into_iter(), 1), "example.org");
}
