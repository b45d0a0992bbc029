#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = hogflare_fuzz::decode::run(data);
});
