//! The Rust side of `/flags`: every flag of a 50-flag set (mixed operators, 5 regex, 2
//! multivariate, 1 group flag) evaluated for one user. Target: under 20 µs per user.

use std::hint::black_box;

use _hogflare::core::flags::{FlagSet, Request};
use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// 50 PostHog flag objects: operators cycle through the common ones, 5 use regexes.
fn flag_document() -> String {
    let operators = [
        (r#""exact""#, r#""pro""#),
        (r#""is_not""#, r#""free""#),
        (r#""icontains""#, r#""example""#),
        (r#""gt""#, "30"),
        (r#""lte""#, "1000"),
        (r#""is_set""#, r#""is_set""#),
        (r#""is_date_after""#, r#""-30d""#),
        (r#""semver_gte""#, r#""1.2.0""#),
        (r#""exact""#, r#"["de", "fr", "us"]"#),
    ];
    let mut flags = Vec::new();
    for i in 0..50 {
        let (operator, value) = if i < 5 {
            (r#""regex""#, r#""^user-[0-9]+7$""#)
        } else {
            operators[i % operators.len()]
        };
        let key = [
            "plan",
            "plan",
            "email",
            "age",
            "visits",
            "email",
            "signed_up",
            "app_version",
            "country",
        ][i % operators.len()];
        let multivariate = if i == 10 || i == 20 {
            r#","multivariate":{"variants":[{"key":"control","rollout_percentage":50},{"key":"test","rollout_percentage":50}]},"payloads":{"test":"{\"color\":\"blue\"}"}"#
        } else {
            ""
        };
        let aggregation = if i == 30 {
            r#","aggregation_group_type_index":0"#
        } else {
            ""
        };
        let property_type = if i == 30 {
            r#""group","group_type_index":0"#
        } else {
            r#""person""#
        };
        flags.push(format!(
            r#"{{"id":{i},"key":"flag-{i}","active":true,"filters":{{"groups":[{{"properties":[{{"key":"{key}","type":{property_type},"operator":{operator},"value":{value}}}],"rollout_percentage":{}}},{{"properties":[],"rollout_percentage":5}}]{multivariate}{aggregation}}}}}"#,
            [100, 50, 20][i % 3]
        ));
    }
    format!(
        r#"{{"flags":[{}],"group_type_mapping":{{"0":"company"}}}}"#,
        flags.join(",")
    )
}

fn bench_flags(c: &mut Criterion) {
    let (set, problems) = FlagSet::compile(None, Some(&flag_document()));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(set.len(), 50);
    let person = r#"{"plan":"pro","email":"someone@example.com","age":41,"visits":"310","signed_up":"2026-11-20T10:00:00Z",
        "app_version":"1.4.2","country":"de","$browser":"Chrome","$os":"Mac OS X","$current_url":"https://example.com/a",
        "utm_source":"newsletter","$initial_referrer":"https://www.google.com/","name":"Someone","company_size":120}"#;
    let groups = r#"{"company":"acme"}"#;
    let group_properties = r#"{"company":{"plan":"enterprise","seats":120}}"#;
    let now = Utc::now();
    let mut group = c.benchmark_group("flags");
    group.throughput(Throughput::Elements(1));
    group.bench_function("evaluate_50_flags_one_user", |b| {
        let mut user = 0u64;
        b.iter(|| {
            user += 1;
            let distinct_id = format!("user-{user}");
            let request = Request {
                distinct_id: &distinct_id,
                person_properties: person,
                groups,
                group_properties,
                ..Request::default()
            };
            black_box(set.evaluate_json(&request, now))
        });
    });
    group.finish();
}

criterion_group!(benches, bench_flags);
criterion_main!(benches);
