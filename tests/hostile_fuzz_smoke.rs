//! Stable-Rust smoke runs of the fuzz targets for the parsers a stranger reaches on the network
//! (fuzz/fuzz_targets/{whep_offer,soap,ice_tcp,range,recording_query}.rs): each target's function over its seed corpus
//! (fuzz/corpus/TARGET) and deterministic mutations of it, for at most 20 000 inputs or 8 s per
//! target, so CI exercises them without a nightly toolchain. The real fuzzing:
//! `cargo +nightly fuzz run TARGET` in fuzz/.

mod common;
mod reliability_util;

use std::path::Path;
use std::time::{Duration, Instant};

use reliability_util::noise;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    seeds
}

/// Runs `f` over the corpus of `target` and its mutations (bit flips, insertions of noise and of
/// `tokens`, truncations, splices); returns the number of inputs run.
fn smoke(target: &str, tokens: &[&[u8]], f: fn(&[u8])) -> usize {
    let seeds = corpus(target);
    assert!(seeds.len() >= 8, "{target}: {} seeds", seeds.len());
    for s in &seeds {
        f(s);
    }
    let t0 = Instant::now();
    let mut runs = seeds.len();
    for round in 0..20_000u64 {
        if t0.elapsed() > Duration::from_secs(8) {
            break;
        }
        let r = noise(round + 1, 16);
        let a = &seeds[r[0] as usize % seeds.len()];
        let b = &seeds[r[1] as usize % seeds.len()];
        let mut m = a.clone();
        let at = |len: usize| (u16::from_le_bytes([r[3], r[4]]) as usize) % (len + 1);
        match r[2] % 5 {
            0 if !m.is_empty() => {
                let i = at(m.len() - 1);
                m[i] ^= 1 << (r[5] % 8);
            }
            1 => {
                let i = at(m.len());
                m.splice(i..i, noise(round, r[6] as usize % 64 + 1));
            }
            2 => m.truncate(at(m.len())),
            3 => {
                let cut = (r[7] as usize) % (b.len() + 1);
                m.extend_from_slice(&b[cut..]);
            }
            _ => {
                let t = tokens[r[8] as usize % tokens.len()];
                let i = at(m.len());
                m.splice(i..i, t.iter().copied());
            }
        }
        f(&m);
        runs += 1;
    }
    eprintln!(
        "fuzz smoke {target}: {} seeds, {runs} inputs in {:.1} s",
        seeds.len(),
        t0.elapsed().as_secs_f64()
    );
    runs
}

#[test]
fn whep_offer_target_survives_corpus_and_mutations() {
    let tokens: &[&[u8]] = &[
        b"profile-level-id=",
        b"a=fmtp:126 ",
        b"m=video 9 UDP/TLS/RTP/SAVPF ",
        b"\r\n",
        b"a=rtpmap:",
        b";",
        b"\xff\xfe",
        b"a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n",
    ];
    smoke(
        "whep_offer",
        tokens,
        camstream::output::webrtc::whep::fuzz_offer,
    );
}

#[test]
fn soap_target_survives_corpus_and_mutations() {
    let tokens: &[&[u8]] = &[
        b"<a>",
        b"</a>",
        b" x=\"y\"",
        b"&amp;",
        b"<![CDATA[",
        b"<!DOCTYPE",
        b"<Body>",
        b"\xc3",
    ];
    smoke("soap", tokens, camstream::output::onvif::soap::fuzz_parse);
}

#[test]
fn ice_tcp_target_survives_corpus_and_mutations() {
    let tokens: &[&[u8]] = &[
        b"\x00\x00",
        b"\xff\xff",
        b"\x21\x12\xa4\x42",
        b"\x00\x06\x00\x08",
        b"\x00\x01",
        b"\x80\x28\x00\x04",
        b"\x16\xfe\xfd",
        b"\x00\x14",
    ];
    smoke(
        "ice_tcp",
        tokens,
        camstream::output::webrtc::tcp::fuzz_frames,
    );
}

#[test]
fn range_target_survives_corpus_and_mutations() {
    let tokens: &[&[u8]] = &[
        b"bytes=",
        b"-",
        b",",
        b"0",
        b"18446744073709551615",
        b" ",
        b"\t",
        b"9",
    ];
    smoke("range", tokens, camstream::fuzz::fuzz_range);
}

#[test]
fn recording_query_target_survives_corpus_and_mutations() {
    let tokens: &[&[u8]] = &[b"T", b"Z", b"+23:59", b"-00:01", b".", b"9999", b"60", b" "];
    smoke("recording_query", tokens, camstream::utc::fuzz_time);
}
