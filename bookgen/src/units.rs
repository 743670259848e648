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
