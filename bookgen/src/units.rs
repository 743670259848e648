//! Byte units as the book's tables print them.

pub(crate) const GIB: u64 = 1 << 30;

pub(crate) fn gib(bytes: u64) -> f64 {
    bytes as f64 / GIB as f64
}

/// "64.00 GiB" or "16.00 MiB".
pub(crate) fn human_bytes(b: u64) -> String {
    if b >= GIB {
        format!("{:.2} GiB", gib(b))
    } else {
        format!("{:.2} MiB", b as f64 / (1 << 20) as f64)
    }
}

/// Thousands separators: 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
