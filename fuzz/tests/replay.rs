//! Every input the fuzzers ever crashed on (`regressions/<target>/`) stays fixed, and the seeds
//! the corpus starts from decode as the fixtures they come from say.

use std::path::PathBuf;

use hogflare_fuzz::{decode, flags, seeds, TARGETS};

/// Run one input on a thread with a large stack: an unoptimised build spends tens of kilobytes of
/// stack on each level of nested JSON, where the fuzzers' optimised build spends little.
fn run(target: &'static str, input: Vec<u8>) -> std::thread::Result<()> {
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || match target {
            "decode" => {
                let _ = decode::run(&input);
            }
            "flags" => {
                let _ = flags::run(&input);
            }
            _ => panic!("unknown fuzz target {target}"),
        })
        .expect("a thread")
        .join()
}

#[test]
fn regressions_stay_fixed() {
    for target in TARGETS {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("regressions")
            .join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.expect("a readable directory").path();
            let input = std::fs::read(&path).expect("a readable file");
            assert!(run(target, input).is_ok(), "{target}: {} fails again", path.display());
        }
    }
}

#[test]
fn sdk_requests_and_every_packing_decode() {
    let seeds = seeds::decode();
    assert!(seeds.len() > 30);
    for seed in seeds {
        assert_eq!(decode::run(&seed.input), Ok(seed.events.unwrap_or(0)), "{}", seed.name);
    }
}

#[test]
fn the_flag_table_compiles_and_evaluates() {
    let seeds = seeds::flags();
    assert!(seeds.len() > 200);
    for seed in seeds {
        let (compiled, _) = flags::run(&seed.input);
        assert!(compiled >= 1, "{}", seed.name);
    }
}

#[test]
fn every_byte_string_is_some_input() {
    for input in [
        &b""[..],
        b"\x00",
        b"\xff\xff\xff\xff\xff\xff",
        b"\x07\x0f\xff\xff\x03abc",
    ] {
        let _ = decode::run(input);
        let _ = flags::run(input);
    }
}
