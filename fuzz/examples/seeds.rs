//! Write the seed corpus of every target into `<dir>/<target>/`:
//! `cargo run --example seeds -- fuzz/corpus`.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    for (target, seeds) in [
        ("decode", hogflare_fuzz::seeds::decode()),
        ("flags", hogflare_fuzz::seeds::flags()),
    ] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for seed in &seeds {
            std::fs::write(dir.join(format!("seed-{}", seed.name)), &seed.input)?;
        }
        println!("{} seeds in {}", seeds.len(), dir.display());
    }
    Ok(())
}
