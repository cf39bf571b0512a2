//! Memory the ONVIF SOAP parser spends on hostile 64 KiB bodies before anyone is authenticated
//! (issue #23): a counting allocator measures the peak heap during `soap::parse`. Run alone
//! (`cargo test --test soap_memory -- --nocapture`) to see the figures. Before the bounds
//! (path kept per attribute and per leaf, no attribute, name or kept-bytes cap) these bodies
//! cost 51 981 KiB (836× the body) and 25 654 KiB (413×).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use camstream::output::onvif::soap;

struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Tests in this file measure one at a time.
static ONE: Mutex<()> = Mutex::new(());

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let n = NOW.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(n, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        NOW.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Peak heap growth while parsing `body`.
fn peak_of(body: &[u8]) -> (usize, bool) {
    let base = NOW.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let ok = soap::parse(body).is_ok();
    (PEAK.load(Ordering::Relaxed) - base, ok)
}

/// Deeply nested long element names, then as many short attributes as fit in 64 KiB on the
/// innermost element: each attribute used to store the whole element path.
fn attribute_body(len: usize) -> Vec<u8> {
    let name = "n".repeat(len);
    let mut b = String::from("<Envelope><Body><Op>");
    for _ in 0..28 {
        b.push_str(&format!("<{name}>"));
    }
    b.push_str("<x");
    let mut i = 0;
    while b.len() < soap::MAX_MESSAGE - 30_000 {
        b.push_str(&format!(" a{i}=''"));
        i += 1;
    }
    b.push_str("/>");
    for _ in 0..28 {
        b.push_str(&format!("</{name}>"));
    }
    b.push_str("</Op></Body></Envelope>");
    b.into_bytes()
}

/// The same depth with many short leaf texts: each leaf stored the whole path too.
fn leaf_body(len: usize) -> Vec<u8> {
    let name = "n".repeat(len);
    let mut b = String::from("<Envelope><Body><Op>");
    for _ in 0..28 {
        b.push_str(&format!("<{name}>"));
    }
    while b.len() < soap::MAX_MESSAGE - 30_000 {
        b.push_str("<b>x</b>");
    }
    for _ in 0..28 {
        b.push_str(&format!("</{name}>"));
    }
    b.push_str("</Op></Body></Envelope>");
    b.into_bytes()
}

#[test]
fn hostile_bodies_cost_bounded_memory() {
    let _one = ONE.lock().unwrap();
    // 1000-byte names (refused by the name cap) and 120-byte ones (within it: the attribute
    // and kept-bytes caps bound them).
    for (what, body) in [
        ("attributes, 1000-byte names", attribute_body(1000)),
        ("leaf texts, 1000-byte names", leaf_body(1000)),
        ("attributes, 120-byte names", attribute_body(120)),
        ("leaf texts, 120-byte names", leaf_body(120)),
    ] {
        assert!(body.len() <= soap::MAX_MESSAGE);
        let (peak, ok) = peak_of(&body);
        eprintln!(
            "soap {what}: {} byte body, peak heap {} KiB ({:.0}× the body), parsed: {ok}",
            body.len(),
            peak / 1024,
            peak as f64 / body.len() as f64
        );
        assert!(
            peak <= 1024 * 1024,
            "{what}: parsing a {} byte body took {} KiB",
            body.len(),
            peak / 1024
        );
    }
}
