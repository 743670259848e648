//! What machine a measurement ran on, as the book's footers name it.

/// A short description of this machine: CPU model and core count, its NVIDIA GPUs (or no GPU),
/// and how busy it was (the 1-minute load average when the run started: on a shared machine,
/// other jobs count).
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next().map(str::to_string));
    let load = load.map_or(String::new(), |l| format!(", load average {l} at the start"));
    format!("{cpu}, {cores} cores, {}{load}", gpus().unwrap_or_else(|| "no GPU".into()))
}

/// The NVIDIA cards `nvidia-smi` lists, with their memory as the driver reports it (MiB), or
/// `None` when there is none (or no driver).
fn gpus() -> Option<String> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name,memory.total", "--format=csv,noheader"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let cards: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().replace(", ", " ")).filter(|l| !l.is_empty()).collect();
    (!cards.is_empty()).then(|| cards.join(" + "))
}

/// The command being run as a reader would type it (`kvserve …`), wherever the binary is, for the
/// footers that say how a table was made.
pub fn command_line() -> String {
    std::iter::once("kvserve".to_string()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ")
}
