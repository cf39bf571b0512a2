//! Stable-Rust smoke run of the fuzz target (fuzz/fuzz_targets/request.rs): the guard's request
//! checks over the seed corpus and a fixed set of deterministic mutations of it, so CI exercises
//! the target without a nightly toolchain. The real fuzzing: `cargo +nightly fuzz run request`
//! in fuzz/.

mod common;
mod reliability_util;

use std::path::Path;

use camstream::output::rtsp::guard::fuzz_request;
use reliability_util::noise;

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/request");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    seeds
}

#[test]
fn fuzz_target_survives_corpus_and_mutations() {
    let seeds = corpus();
    assert!(seeds.len() >= 30, "{} seeds", seeds.len());
    for s in &seeds {
        fuzz_request(s);
    }
    // Byte flips, insertions, truncations and splices, from a fixed seed so a failure repeats.
    let mut runs = 0;
    for round in 0..20_000u64 {
        let r = noise(round + 1, 16);
        let a = &seeds[r[0] as usize % seeds.len()];
        let b = &seeds[r[1] as usize % seeds.len()];
        let mut m = a.clone();
        match r[2] % 5 {
            0 if !m.is_empty() => {
                let i = (u16::from_le_bytes([r[3], r[4]]) as usize) % m.len();
                m[i] ^= 1 << (r[5] % 8);
            }
            1 => {
                let i = (u16::from_le_bytes([r[3], r[4]]) as usize) % (m.len() + 1);
                m.splice(i..i, noise(round, r[6] as usize % 64 + 1));
            }
            2 => m.truncate((u16::from_le_bytes([r[3], r[4]]) as usize) % (m.len() + 1)),
            3 => {
                let cut = (r[7] as usize) % (b.len() + 1);
                m.extend_from_slice(&b[cut..]);
            }
            _ => {
                let tokens: [&[u8]; 8] = [
                    b"%2e",
                    b"/..",
                    b"//",
                    b";interleaved=",
                    b";destination=",
                    b"\0",
                    b"%",
                    b",",
                ];
                let t = tokens[r[8] as usize % tokens.len()];
                let i = (u16::from_le_bytes([r[3], r[4]]) as usize) % (m.len() + 1);
                m.splice(i..i, t.iter().copied());
            }
        }
        fuzz_request(&m);
        runs += 1;
    }
    eprintln!(
        "fuzz smoke: {} seeds, {runs} mutations, no invariant violated",
        seeds.len()
    );
}
